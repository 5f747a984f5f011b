"""Inputs larger than a frame (docs/protocol.md, "Inputs larger than a frame"): INPUT_PUT stages them in the
arena, CLASSIFY and TRAIN without input bytes run on them; every rule of the staging, MODEL_INFO, the clients'
transparent chunking, and the monitor's pipelined TRAIN stream of such windows through a faulty line, losing and
repeating nothing. Fast tests use the host board; the QEMU one is marked slow."""
import struct
import time

import mlperf_tiny
import model_zoo
import numpy as np
import onnx
import pytest
import train_helpers as th
from compiler_helpers import compile_zoo, random_inputs
from fault_proxy import FaultProxy
from data_helpers import check_data_log

from codegen.reference import threshold_to_q16
from mcu_train.boards import get_board
from mcu_train.boards.build import build_firmware
from mcu_train.boards.runner import session, start_board
from mcu_train.link import BoardError, Link, connect_serial
from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire
from mcu_train.link.protocol import InputChunkCheck, Msg, Reason, encode_frame
from mcu_train.link.trainer_client import Outcome, Trainer, TrainStep
from mcu_train import data
from mcu_train.stream.monitor import run_monitor, source_stream, stream_config

HOST = get_board("host")
QEMU = get_board("mps2-an386")
STAGED = struct.pack("<bB", -1, 0)  # CLASSIFY's head without input bytes: run on the staged input


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    """ResNet-8 (3,072-byte input) for the host board: (compiled, meta, elf)."""
    tmp = tmp_path_factory.mktemp("resnet8")
    compiled, out = compile_zoo(mlperf_tiny.resnet8()[0], tmp, HOST, "resnet8")
    return compiled, load_model_meta(out), build_firmware(HOST, out, out / "fw").elf


def wide_har(tmp, board):
    """The HAR-like CNN on 9 channels x 128 samples (1,152 B: more than a frame) with its trainer."""
    onnx_path, calib = tmp / "wide_har.onnx", tmp / "wide_har_calib.npz"
    model = model_zoo.har_like(channels=9)
    onnx.save(model, onnx_path)
    np.savez(calib, x=model_zoo.calibration(model))
    return th.compile_trainer(tmp, board, "exits", model=(onnx_path, calib))


@pytest.fixture(scope="module")
def wide_host(tmp_path_factory):
    return wide_har(tmp_path_factory.mktemp("wide-host"), HOST)


def put(link, offset, data):
    """One INPUT_PUT; returns the bytes staged."""
    return struct.unpack("<I", link.request(Msg.INPUT_PUT, struct.pack("<I", offset) + data))[0]


def stage(link, data, chunk=1020):
    for at in range(0, len(data), chunk):
        put(link, at, data[at:at + chunk])


def refused(call, *args):
    """The (reason, detail) of the error a request is answered with."""
    with pytest.raises(BoardError) as e:
        call(*args)
    return e.value.info.reason, e.value.info.detail


def classify_reply(compiled, meta, row):
    """The CLASSIFY reply the reference predicts for `row` with the board's default thresholds (0.9)."""
    k, logits, conf = compiled.reference.run(row.reshape(meta["input_dims_nhwc"]), [threshold_to_q16(0.9)])
    return k, logits.tolist(), conf


def test_large_inputs_classify_transparently_and_equal_the_reference(resnet8):
    compiled, meta, elf = resnet8
    rows = to_wire(meta, random_inputs(meta, 3))
    with session(HOST, elf) as (running, link):
        client = ModelClient(link, meta)
        for row in rows:
            got = client.classify(row)
            assert (got.exit, got.logits_q.tolist(), got.confidence_q16) == classify_reply(compiled, meta, row)
        # Per input: 4 chunks of at most 1,020 bytes (1,024 - the offset), then a CLASSIFY without input bytes.
        assert link.link_stats()["frames_ok"] == 1 + 5 * len(rows) + 1  # with the HELLO and this LINK_STATS


def test_model_info_is_the_compiled_model(resnet8, wide_host):
    for compiled, elf, trainer in [(resnet8[0], resnet8[2], False), (wide_host[0], wide_host[2], True)]:
        meta = compiled.meta
        with session(HOST, elf) as (running, link):
            info = ModelClient(link, meta).info()
            with pytest.raises(BoardError, match="BAD_PAYLOAD"):
                link.request(Msg.MODEL_INFO, b"x")
        assert info.input_dims == tuple(meta["input_dims_nhwc"]) and info.input_size == np.prod(info.input_dims)
        assert (info.input_scale, info.input_zero_point) == (np.float32(meta["input_scale"]), meta["input_zero_point"])
        assert [(e.outputs, e.scale, e.zero_point) for e in info.exits] == [
            (e["classes"], np.float32(e["scale"]), e["zero_point"]) for e in meta["exits"]]
        assert info.trainer == trainer


def test_staging_rules(resnet8):
    """Every rule of docs/protocol.md's staging list, in order."""
    compiled, meta, elf = resnet8
    row = to_wire(meta, random_inputs(meta, 1))[0]
    data, want = row.tobytes(), classify_reply(compiled, meta, row)

    def classify_staged():
        reply = link.request(Msg.CLASSIFY, STAGED)
        exit_k, n, conf, _cost = struct.unpack_from("<BBII", reply)
        return exit_k, list(np.frombuffer(reply[10:], np.int8)), conf

    with session(HOST, elf) as (running, link):
        assert refused(classify_staged) == (Reason.NO_INPUT, Msg.CLASSIFY)  # nothing staged since reset
        assert put(link, 0, data[:1000]) == 1000 and put(link, 1000, data[1000:2000]) == 2000
        assert refused(classify_staged) == (Reason.NO_INPUT, Msg.CLASSIFY)  # a partial input: refused, discarded
        assert refused(put, link, 1000, data[1000:2000]) == (Reason.BAD_INPUT_CHUNK, InputChunkCheck.BAD_OFFSET)
        put(link, 0, data[:1020])
        assert refused(put, link, 2040, data[2040:3060]) == (Reason.BAD_INPUT_CHUNK, InputChunkCheck.BAD_OFFSET)
        assert refused(put, link, 1020, data[1020:2040]) == (Reason.BAD_INPUT_CHUNK, InputChunkCheck.BAD_OFFSET)
        stage(link, data[:3060])
        assert refused(put, link, 3060, data[3060:] + b"x") == (Reason.BAD_INPUT_CHUNK, InputChunkCheck.PAST_END)
        assert refused(classify_staged) == (Reason.NO_INPUT, Msg.CLASSIFY)  # the refused chunk discarded the rest
        with pytest.raises(BoardError, match="BAD_PAYLOAD"):
            link.request(Msg.INPUT_PUT, b"\x00\x00\x00")
        # Offset 0 starts a new input; requests that do not run the model keep the staged bytes.
        put(link, 0, bytes(1020))
        stage(link, data[:3060])
        link.ping(b"x")
        link.link_stats()
        link.request(Msg.PROFILE)
        link.request(Msg.MODEL_INFO)
        link.request(Msg.HELLO)
        # A repeated INPUT_PUT (same sequence number) is answered from the stored reply, not staged twice.
        seq = link.next_seq
        link.next_seq += 1
        frame = encode_frame(Msg.INPUT_PUT, seq, struct.pack("<I", 3060) + data[3060:])
        replies = []
        for _ in range(2):
            link.write(frame)
            replies.append(link.read_frame(time.monotonic() + 2))
        assert replies[0] == replies[1] and struct.unpack("<I", replies[0].payload)[0] == len(data)
        assert classify_staged() == want
        assert refused(classify_staged) == (Reason.NO_INPUT, Msg.CLASSIFY)  # CLASSIFY used up the staged input
        # Any CLASSIFY discards the staged input, even one refused for its own payload.
        stage(link, data)
        with pytest.raises(BoardError, match="BAD_PAYLOAD"):
            link.request(Msg.CLASSIFY, struct.pack("<bB", 5, 0))
        assert refused(classify_staged) == (Reason.NO_INPUT, Msg.CLASSIFY)
        stage(link, data[:1020])
    # A restarted board has nothing staged: the next chunk is refused, not appended to garbage.
    with session(HOST, elf) as (running, link):
        assert refused(put, link, 1020, data[1020:2040]) == (Reason.BAD_INPUT_CHUNK, InputChunkCheck.BAD_OFFSET)


def test_training_on_staged_windows_equals_the_reference(wide_host):
    compiled, out, elf = wide_host
    meta = compiled.meta
    rows = to_wire(meta, random_inputs(meta, 40, seed=3))
    labels = np.random.default_rng(4).integers(0, 6, len(rows))
    mask = np.arange(len(rows)) % 3 == 0
    ref = th.reference(compiled)
    with session(HOST, elf) as (running, link):
        trainer = Trainer(link, meta)
        assert [t for t, _ in trainer.train_requests(rows[0])] == [Msg.INPUT_PUT, Msg.INPUT_PUT, Msg.TRAIN]
        got, want = th.run_both(trainer, ref, rows, labels, mask)
        assert th.first_mismatch(got, want) is None and trainer.checkpoint_get() == ref.checkpoint()
        assert {s.outcome for s in got} >= {Outcome.TRAINED, Outcome.FILTERED}
        # CONFIG, STATS and CHECKPOINT_GET between the chunks leave the staged input alone.
        data = rows[1].tobytes()
        put(link, 0, data[:1020])
        trainer.config()
        trainer.stats()
        trainer.checkpoint_get()
        put(link, 1020, data[1020:])
        step = TrainStep.unpack(link.request(Msg.TRAIN, struct.pack("<BB", 1, labels[1])))
        assert step.decisions() == ref.train(rows[1], int(labels[1])).decisions()
        # TRAIN and CHECKPOINT_PUT share the arena with the staged input: each discards the other's staging.
        image = trainer.checkpoint_get()
        link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), 0) + image[:1016])
        stage(link, rows[0].tobytes())
        assert refused(link.request, Msg.CHECKPOINT_PUT,
                       struct.pack("<II", len(image), 1016) + image[1016:2032]) == (Reason.BAD_CHECKPOINT, 6)
        stage(link, rows[0].tobytes())
        trainer.checkpoint_put(image)
        assert refused(link.request, Msg.TRAIN, b"\x00\x00") == (Reason.NO_INPUT, Msg.TRAIN)


class SyntheticSource:
    """Random windows with random classes, as a data source the monitor streams (mcu_train.data.source)."""
    live, channels, notes = False, (), ()

    def __init__(self, x, y):
        self.x, self.y = x, y

    def record(self):
        return {"source": "synthetic", "format": "test", "sha256": "-", "files": []}

    def iter_windows(self, spec, classes, resample=False):
        n = len(self.y)
        yield data.WindowSet(self.x, self.y, np.zeros(n, np.int64), np.arange(n))


def synthetic_stream(meta, n, seed):
    """A monitor Stream of random windows with random classes, a third of them labelled, two flagged invalid
    (a reading that is not a number)."""
    rng = np.random.default_rng(seed)
    x = random_inputs(meta, n, seed)
    x[[5, 17], 0, 0] = np.nan
    return source_stream(meta, SyntheticSource(x, rng.integers(0, 6, n)), label_ratio=0.33, seed=seed)


def stream_large_windows_through_faults(tmp_path, board, model, n, flip_rate, drop_after, timeout):
    compiled, out, elf = model
    meta = compiled.meta
    stream = synthetic_stream(meta, n, seed=8)
    cfg = stream_config(len(meta["exits"]))
    log = tmp_path / "large.jsonl"
    with start_board(board, elf) as running:
        proxy = FaultProxy(running.port, seed=5, flip_rate=flip_rate, drop_after=drop_after)
        try:
            # A noisy line: one 1 KB reply (CHECKPOINT_GET) in four or five arrives damaged and is only noticed
            # by a timeout, so plain requests get more retries than the default 3.
            link = Link(connect_serial(proxy.url), timeout=timeout, retries=6)
            link.handshake()
            summary, plot, mon = run_monitor(link, proxy.url, meta, compiled, stream, cfg, log, live=False,
                                             checkpoint_every=25)
            link.close()
        finally:
            proxy.close()
    # Every window once, in order, and each of the board's decisions equal to the golden model's.
    check_data_log(log, compiled, stream, cfg, source_kind="test")
    assert proxy.flipped >= 5 and proxy.dropped == 1
    assert summary["link"]["retransmitted"] > 0 and summary["board_stats"]["windows"] == n
    return summary


def test_pipelined_stream_of_large_windows_through_faults_host(tmp_path, wide_host):
    stream_large_windows_through_faults(tmp_path, HOST, wide_host, 90, flip_rate=3e-4, drop_after=60_000,
                                        timeout=0.5)


@pytest.mark.slow
def test_pipelined_stream_of_large_windows_through_faults_qemu(tmp_path):
    model = wide_har(tmp_path, QEMU)
    stream_large_windows_through_faults(tmp_path, QEMU, model, 40, flip_rate=2e-4, drop_after=30_000, timeout=1.0)

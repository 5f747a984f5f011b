"""`mcu-train monitor` and `mcu-train demo`: the stream reaches the board in order and exactly once, the log
holds every acknowledged window once and lets anyone recompute the summary, the board's decisions equal the
numpy golden model's on the same stream, and the run survives damaged bytes, a dropped connection, a killed
emulator (--resume) and Ctrl-C. Fast tests use the host board; the QEMU ones are marked slow."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import train_helpers as th
from fault_proxy import FaultProxy
from repo import ROOT

from codegen.train_reference import TrainerReference
from mcu_train.boards import get_board
from mcu_train.boards.runner import session, start_board
from mcu_train.link import connect_serial
from mcu_train.link import Link
from mcu_train.link.trainer_client import TrainStep
from mcu_train.stream.monitor import (load_checkpoint, pack_report, person_stream, run_monitor, stream_config,
                                      unpack_report)
from mcu_train.stream.runlog import read_log, summarise

HOST = get_board("host")
QEMU = get_board("mps2-an386")
RUN_KEYS = {"type", "board", "firmware", "model_hash", "person", "label_ratio", "seed", "shift", "thresholds",
            "classes", "input_offset", "input_scale", "windows", "config"}
WINDOW_KEYS = {"type", "seq", "truth", "prediction", "exit", "labelled", "training", "outcome", "loss", "cost",
               "generic_prediction", "generic_exit"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def host_model(tmp_path_factory):
    """The default HAR model with its trainer, compiled for the host board: (compiled, out dir, elf)."""
    return th.compile_trainer(tmp_path_factory.mktemp("monitor-host"), HOST, "exits")


@pytest.fixture(scope="module")
def qemu_model(tmp_path_factory):
    return th.compile_trainer(tmp_path_factory.mktemp("monitor-qemu"), QEMU, "exits")


def reference_steps(compiled, stream, cfg):
    ref = TrainerReference(compiled, cfg)
    return [ref.train(r, int(y) if m else None, bool(inv))
            for r, y, m, inv in zip(stream.rows, stream.truth, stream.labelled, stream.invalid)]


def check_log(path, compiled, stream, cfg, complete=True):
    """The log's structure, the summary recomputed from the window lines, and every decision of the board
    equal to the reference's on the same stream. Returns (run, windows, summary)."""
    run, windows, summary, partial = read_log(path)
    assert not partial
    assert RUN_KEYS <= set(run) and run["type"] == "run"
    assert run["classes"] == list(compiled.meta["classes"]) and run["person"] == stream.person
    assert run["input_offset"] == 0.0 and run["input_scale"] == 1.0
    if stream.rotation is None:
        assert run["shift"] is None
    else:
        assert run["shift"]["kind"] == "rotate" and run["shift"]["rotation"] == stream.rotation.tolist()
    assert [w["seq"] for w in windows] == list(range(len(windows)))  # every window once, in order
    assert all(WINDOW_KEYS <= set(w) for w in windows)
    if complete:
        assert len(windows) == len(stream) and summary["complete"]
    # The summary is recomputable from the window lines (link and board counters are extra, the board's own).
    again = summarise(run, windows, summary["stopped"])
    assert {k: summary[k] for k in again} == again
    want = reference_steps(compiled, stream, cfg)
    for w, s in zip(windows, want):
        got = (w["prediction"], w["exit"], w["outcome"], w["target"], w["loss"])
        assert got == (s.prediction, s.exit, s.outcome_name, None if s.target == 255 else s.target, s.loss), w["seq"]
        assert w["truth"] == stream.truth[w["seq"]] and w["labelled"] == stream.labelled[w["seq"]]
    png = path.with_suffix(".png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    return run, windows, summary


def test_monitor_streams_logs_and_matches_reference_host(tmp_path, host_model):
    compiled, out, elf = host_model
    meta = compiled.meta
    stream = person_stream(meta, 27, 0.1, "rotate", seed=0, limit=120)
    cfg = stream_config(len(meta["exits"]))
    log = tmp_path / "run.jsonl"
    with session(HOST, elf) as (running, link):
        summary, plot, mon = run_monitor(link, running.url, meta, compiled, stream, cfg, log, live=False,
                                         checkpoint_every=40)
    run, windows, summary = check_log(log, compiled, stream, cfg)
    assert summary["stopped"] is None and summary["link"]["retransmitted"] == 0
    assert summary["board_stats"]["windows"] == 120
    assert summary["trained"] + summary["filtered"] + summary["skipped"] == 120
    done, image = load_checkpoint(log.with_name("run.jsonl.ckpt"))
    ref = TrainerReference(compiled, cfg)
    for r, y, m in zip(stream.rows, stream.truth, stream.labelled):
        ref.train(r, int(y) if m else None)
    assert done == 120 and image == ref.checkpoint()


def test_monitor_refuses_a_board_with_another_model(tmp_path, host_model, firmware, capsys):
    from mcu_train.cli import main
    compiled, out, elf = host_model
    with start_board(HOST, firmware("host").elf) as running:  # protocol firmware without a model
        with pytest.raises(SystemExit) as e:
            main(["monitor", "--port", running.url, "--model", str(out), "--log", str(tmp_path / "x.jsonl"),
                  "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "runs model (none), not the compiled model" in err and compiled.meta["model_hash"] in err
    assert not (tmp_path / "x.jsonl").exists()


def stream_through_faults(tmp_path, board, model, person, seed, limit, proxy_seed, flip_rate, drop_after,
                          timeout, checkpoint_every):
    """Stream a person through a proxy that flips bits and drops the connection once; check the log."""
    compiled, out, elf = model
    meta = compiled.meta
    stream = person_stream(meta, person, 0.1, "rotate", seed=seed, limit=limit)
    cfg = stream_config(len(meta["exits"]))
    log = tmp_path / "faults.jsonl"
    with start_board(board, elf) as running:
        proxy = FaultProxy(running.port, seed=proxy_seed, flip_rate=flip_rate, drop_after=drop_after)
        try:
            link = Link(connect_serial(proxy.url), timeout=timeout)
            link.handshake()
            summary, plot, mon = run_monitor(link, proxy.url, meta, compiled, stream, cfg, log, live=False,
                                             checkpoint_every=checkpoint_every)
            link.close()
        finally:
            proxy.close()
    check_log(log, compiled, stream, cfg)
    assert proxy.flipped >= 5 and proxy.dropped == 1
    return summary, proxy, stream


def test_damaged_bytes_and_a_dropped_connection_lose_nothing_host(tmp_path, host_model):
    summary, proxy, stream = stream_through_faults(tmp_path, HOST, host_model, 25, 1, 150, proxy_seed=3,
                                                   flip_rate=2e-4, drop_after=25_000, timeout=0.5,
                                                   checkpoint_every=60)
    assert proxy.connections == 2
    assert summary["link"]["reconnects"] == 1 and summary["link"]["retransmitted"] > 0
    # The board ran each window once: its own counter equals the stream length.
    assert summary["board_stats"]["windows"] == len(stream)


def _cli(*args):
    return [sys.executable, "-m", "mcu_train.cli", *map(str, args)]


def _wait_for_windows(path, n, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count('"type": "window"') >= n:
            return
        if process.poll() is not None:
            raise AssertionError(f"the monitor exited early: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} windows")


def test_ctrl_c_keeps_the_log_and_resume_continues_host(tmp_path, host_model):
    compiled, out, elf = host_model
    meta = compiled.meta
    log = tmp_path / "ctrlc.jsonl"
    args = ["monitor", "--model", out, "--person", 26, "--shift", "rotate", "--windows", 150, "--log", log,
            "--checkpoint-every", 25, "--quiet"]
    with start_board(HOST, elf) as running:
        proc = subprocess.Popen(_cli(*args, "--port", running.url, "--rate", 40), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_windows(log, 60, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "rerun with --resume" in stdout
        run, windows, summary, partial = read_log(log)
        assert summary["stopped"] == "interrupted" and not summary["complete"]
        assert 60 <= len(windows) < 150 and summary["windows"] == len(windows)
        assert log.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    with open(log, "a") as f:
        f.write('{"type": "window", "seq": 9')  # as if the monitor had died mid-line
    bad = subprocess.run(_cli(*args, "--port", "socket://127.0.0.1:1", "--resume", "--person", 25), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is a run with person 26, this one has 25" in bad.stderr
    # A new board (the host board takes one connection): --resume restores it from the checkpoint, replays the
    # windows logged since, and finishes the stream.
    with start_board(HOST, elf) as running:
        done = subprocess.run(_cli(*args, "--port", running.url, "--resume"), cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "resuming" in done.stdout
    stream = person_stream(meta, 26, 0.1, "rotate", seed=0, limit=150)
    run, windows, summary = check_log(log, compiled, stream, stream_config(len(meta["exits"])))
    assert len(run["resumes"]) == 1 and 60 <= run["resumes"][0]["at"] < 150


REPORT_FIRMWARE = r"""
#include "board.h"
#include "protocol.h"

static uint8_t frame[MT_HEADER_SIZE + 64 + MT_CRC_SIZE];

static void report(uint32_t i)
{
    uint8_t *p = frame + MT_HEADER_SIZE;
    static const uint8_t step[37] = {0};
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(i >> (8 * k));
    p[4] = (i % 3 == 0) ? 255 : (uint8_t)(i % 6);  /* truth, sometimes unknown */
    for (int k = 0; k < 37; k++) p[5 + k] = step[k];
    p[5 + 0] = (uint8_t)(i % 3);      /* outcome: TRAINED, FILTERED, NO_TARGET */
    p[5 + 1] = (uint8_t)(i % 4);      /* exit */
    p[5 + 2] = (uint8_t)(i % 6);      /* prediction */
    p[5 + 3] = 255;                   /* target */
    p[5 + 17] = (uint8_t)i;           /* cost_inference (low byte) */
    protocol_send_report(frame, 5 + 37);
}

int main(void)
{
    board_init();
    protocol_init(0, 0);
    protocol_send_hello();
    /* On the host board an idle protocol_poll() waits up to 1 ms: these loops are milliseconds. */
    for (uint32_t i = 0; i < 40; i++) {
        for (int k = 0; k < 5; k++)
            protocol_poll();
        report(1000 + i);
    }
    for (int k = 0; k < 200; k++)
        protocol_poll();
    board_exit(0);
}
"""


def test_listen_logs_what_the_board_reports(tmp_path, capsys):
    from mcu_train.boards.build import RUNTIME_SOURCES, build_elf
    from mcu_train.resources import FIRMWARE_DIR
    from mcu_train.stream.monitor import listen
    src = tmp_path / "report_main.c"
    src.write_text(REPORT_FIRMWARE)
    elf = build_elf(HOST, [src, *(FIRMWARE_DIR / s for s in RUNTIME_SOURCES)], tmp_path / "report.elf").elf
    log = tmp_path / "listen.jsonl"
    with start_board(HOST, elf) as running:
        link = Link(connect_serial(running.url))
        summary, plot = listen(link, log, live=False)
        link.close()
    run, windows, summary, partial = read_log(log)
    assert run["command"] == "listen" and run["board"] == "host"
    assert [w["board_window"] for w in windows] == list(range(1000, 1040))
    assert [w["prediction"] for w in windows] == [i % 6 for i in range(1000, 1040)]
    assert [w["truth"] for w in windows] == [None if i % 3 == 0 else i % 6 for i in range(1000, 1040)]
    assert [w["training"] for w in windows] == [("trained", "filtered", "skipped")[i % 3] for i in range(1000, 1040)]
    assert summary["stopped"] == "the board closed the connection" and summary["windows"] == 40
    assert summary["accuracy"] == 1.0 and summary["generic_accuracy"] is None
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_report_payload_round_trips():
    step = TrainStep(0, 1, 2, 255, 0x10, 60000, 0.5, 0.0, 1000, 2000, 3, 4, 5)
    assert unpack_report(pack_report(7, None, step)) == (7, None, step)
    assert unpack_report(pack_report(8, 3, step)) == (8, 3, step)


def test_read_log_drops_a_partial_last_line_and_checks_order(tmp_path):
    from mcu_train.errors import McuTrainError
    path = tmp_path / "log.jsonl"
    run = {"type": "run", "windows": 3}
    lines = [json.dumps(run), json.dumps({"type": "window", "seq": 0}), json.dumps({"type": "window", "seq": 1})]
    path.write_text("\n".join(lines) + "\n" + '{"type": "wind')
    r, windows, summary, partial = read_log(path)
    assert partial and len(windows) == 2 and summary is None
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(McuTrainError, match="window 1 where window 0"):
        read_log(path)


# ------------------------------------------------------------------------------------------ QEMU (slow)

@pytest.mark.slow
@pytest.mark.qemu
def test_e2e_stream_through_qemu_matches_reference(tmp_path, qemu_model):
    """A whole person through the emulated Cortex-M4F: every window logged once, in order, and the board's
    predictions (and exits, outcomes, losses) equal the numpy golden model's on the same stream."""
    compiled, out, elf = qemu_model
    meta = compiled.meta
    stream = person_stream(meta, 27, 0.1, "rotate", seed=0)
    cfg = stream_config(len(meta["exits"]))
    log = tmp_path / "e2e.jsonl"
    with session(QEMU, elf, timeout=2.0) as (running, link):
        summary, plot, mon = run_monitor(link, running.url, meta, compiled, stream, cfg, log, live=False)
    run, windows, summary = check_log(log, compiled, stream, cfg)
    assert run["board"] == "mps2-an386" and run["counter_unit"] == "instructions"
    assert summary["windows_per_s"] >= 20, summary["windows_per_s"]
    assert summary["second_half"]["accuracy"] > summary["second_half"]["generic_accuracy"]


@pytest.mark.slow
@pytest.mark.qemu
def test_damaged_bytes_and_a_dropped_connection_lose_nothing_qemu(tmp_path, qemu_model):
    summary, proxy, stream = stream_through_faults(tmp_path, QEMU, qemu_model, 30, 0, 160, proxy_seed=5,
                                                   flip_rate=1e-4, drop_after=30_000, timeout=1.0,
                                                   checkpoint_every=80)
    assert summary["link"]["reconnects"] == 1 and summary["board_stats"]["windows"] == len(stream)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("name", ["netduinoplus2", "lm3s6965evb"])
def test_stream_through_faults_on_the_real_boards_uarts(tmp_path, name):
    """The STM32 USART (Nucleo-F446RE's) and the PL011 (the Pico's) drivers, interrupt-driven, under the full
    stream: 4 TRAIN requests in flight, bits flipped both ways, the connection dropped once; every window is
    run once and the board's decisions equal the reference's; the receive ring never lost a byte."""
    board = get_board(name)
    model = th.compile_trainer(tmp_path, board, "exits")
    summary, proxy, stream = stream_through_faults(tmp_path, board, model, 28, 0, 40, proxy_seed=7,
                                                   flip_rate=1.5e-4, drop_after=15_000, timeout=1.0,
                                                   checkpoint_every=20)
    assert summary["link"]["reconnects"] == 1 and summary["link"]["retransmitted"] > 0
    assert summary["board_stats"]["windows"] == len(stream)


@pytest.mark.slow
@pytest.mark.qemu
def test_killed_emulator_then_resume_loses_and_repeats_nothing(tmp_path, qemu_model):
    compiled, out, elf = qemu_model
    meta = compiled.meta
    log = tmp_path / "kill.jsonl"
    args = ["monitor", "--model", out, "--person", 29, "--shift", "rotate", "--log", log, "--checkpoint-every", 50,
            "--quiet"]
    with start_board(QEMU, elf) as running:
        proc = subprocess.Popen(_cli(*args, "--port", running.url), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _wait_for_windows(log, 120, proc)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "connection to the board lost" in stderr and "--resume" in stderr
    run, windows, summary, partial = read_log(log)
    assert not partial and summary["stopped"].startswith("board lost") and not summary["complete"]
    assert f"complete up to window {len(windows) - 1}" in stderr
    with start_board(QEMU, elf) as running:  # a new emulator: the board starts from scratch
        done = subprocess.run(_cli(*args, "--port", running.url, "--resume"), cwd=ROOT, capture_output=True,
                              text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    stream = person_stream(meta, 29, 0.1, "rotate", seed=0)
    run, windows, summary = check_log(log, compiled, stream, stream_config(len(meta["exits"])))
    assert len(run["resumes"]) == 1


@pytest.mark.slow
@pytest.mark.qemu
def test_demo_writes_the_summary_log_and_plot(tmp_path):
    """`mcu-train demo` from the committed model: the personalised board beats the generic model on the
    second half of the stream, and the log and plot are written."""
    out = tmp_path / "demo"
    t0 = time.monotonic()
    proc = subprocess.run(_cli("demo", "-o", out, "--quiet"), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 300
    text = " ".join(proc.stdout.split())  # rich wraps lines to the terminal's width
    assert "placement shift" in text and "the case where personalisation matters" in text
    assert f"log: {out / 'run.jsonl'}" in text and f"plot: {out / 'run.png'}" in text
    assert "the personalised board" in text and "beats the generic model" in text
    lines = (out / "run.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert RUN_KEYS <= set(first) and first["person"] == 27 and first["label_ratio"] == 0.1
    assert first["shift"]["kind"] == "rotate" and len(first["shift"]["rotation"]) == 3
    records = [json.loads(line) for line in lines]
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) == first["windows"] == len(lines) - 2
    assert [w["seq"] for w in windows] == list(range(len(windows)))
    summary = records[-1]
    assert summary["type"] == "summary" and summary["complete"]
    assert summary["second_half"]["accuracy"] > summary["second_half"]["generic_accuracy"]
    assert (out / "run.png").read_bytes().startswith(PNG_MAGIC)

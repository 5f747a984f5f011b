"""Replay memory and active labels (issue 14): the board replays stored labelled examples, asks for the labels
it wants (TRAIN reply flag STEP_ASKED) and trains on a LABEL, exactly as the numpy golden model does, on the
host board and on one QEMU board; the memory's budget is in memory.json and refused when it holds no example;
a LABEL nobody asked for is refused with its reason; the memory survives a checkpoint."""
import json

import numpy as np
import pytest
import train_helpers as th

from codegen.ir import CompileError
from codegen.train_reference import LabelRefused, TrainerReference
from codegen.trainer import RECOMMENDED_REPLAY_BYTES
from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.link import BoardError
from mcu_train.link.protocol import LabelCheck, Reason
from mcu_train.link.trainer_client import STEP_ASKED, STEP_LABEL, TrainConfig, Trainer

HOST = get_board("host")
QEMU = get_board("mps2-an386")
BUDGET = 8 * 3072 + 64  # 7 examples and the pending slot of the default model's three units


def active_run(trainer, ref, rows, labels, mask):
    """A stream where the host sends a random `mask` of labels with TRAIN and answers every request with
    LABEL right away; returns the board's and the reference's replies (TRAIN and LABEL) and how many asked."""
    got, want, asked = [], [], 0
    for row, y, m in zip(rows, labels, mask):
        label = int(y) if m else None
        got.append(trainer.train(row, label))
        want.append(ref.train(row, label))
        if want[-1].flags & STEP_ASKED:
            asked += 1
            got.append(trainer.label(int(y)))
            want.append(ref.label(int(y), 0))
    return got, want, asked


def configured(trainer, compiled, **changes):
    cfg = TrainConfig.default(trainer.num_exits)
    cfg.lr, cfg.pseudo_threshold_q16 = 0.3, 65536
    for k, v in changes.items():
        setattr(cfg, k, v)
    trainer.config(cfg)
    ref = TrainerReference(compiled)
    ref.set_config(cfg)
    return ref


@pytest.fixture(scope="module")
def har(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    onnx_path, calib = th.default_model(tmp)
    out = tmp / "host"
    compiled = th.compile_model(onnx_path, HOST, out, calib=calib, quiet=True, train="exits", replay_bytes=BUDGET)
    elf = th.build_firmware(HOST, out, out / "fw").elf
    return compiled, out, elf, th.load_meta(out)


def test_memory_budget_in_memory_json(har):
    compiled, out, _, meta = har
    replay = json.loads((out / "memory.json").read_text())["train"]["replay"]
    assert replay == dict(budget_bytes=BUDGET, bytes=compiled.train.memory["bytes"], slots=7, example_bytes=3072)
    assert replay["bytes"] <= BUDGET
    assert meta["train"]["replay_slots"] == 7
    memory = next(t for t in json.loads((out / "memory.json").read_text())["tensors"] if t["name"] == "train.memory")
    assert memory["size"] == replay["bytes"]


def test_budget_that_holds_no_example_is_refused(tmp_path):
    onnx_path, calib = th.default_model(tmp_path)
    with pytest.raises(CompileError, match=r"--replay-bytes 5000: the replay memory needs at least 6,164 B"):
        th.compile_model(onnx_path, HOST, tmp_path / "o", calib=calib, quiet=True, train="exits", replay_bytes=5000)
    assert not (tmp_path / "o" / "model.c").exists()
    off = th.compile_model(onnx_path, HOST, tmp_path / "off", calib=calib, quiet=True, train="exits")
    assert off.memory["train"]["replay"] == dict(budget_bytes=0, bytes=0, slots=0, example_bytes=3072)
    assert "train.memory" not in off.train.offsets  # the default: none, issue 13's peak SRAM stays


def test_host_board_equals_reference_with_replay_and_label_requests(har):
    """Labels sent with TRAIN (random, 10%) and asked for (answered by LABEL): every reply, the STATS and the
    checkpoint (weights, state and the memory itself) equal the golden model's, bit for bit."""
    compiled, _, elf, meta = har
    rows, labels, mask = th.hapt_stream(meta, 160, person=26, shift=True, label_fraction=0.1)
    with session(HOST, elf) as (_, link):
        trainer = Trainer(link, meta)
        ref = configured(trainer, compiled, label_budget=0.1, replays=2)
        got, want, asked = active_run(trainer, ref, rows, labels, mask)
        assert asked >= 8 and sum(s.flags & STEP_LABEL != 0 for s in want) >= 8 + mask.sum()
        assert sum(s.macs_forward for s in want if s.flags & STEP_LABEL) > 0
        bad = th.first_mismatch(got, want)
        assert bad is None, f"reply {bad[0]}: board {bad[1]} != reference {bad[2]}"
        assert trainer.stats() == ref.stats()
        image = trainer.checkpoint_get()
        assert image == ref.checkpoint()
        assert sum(v != 0xFF for v in ref.memory.labels[:-1]) == ref.memory.slots  # the memory is full

        # A restored board keeps its memory: the next windows replay the same examples.
        trainer.checkpoint_put(image)
        fresh = TrainerReference(compiled)
        fresh.set_config(ref.cfg)
        assert fresh.load_checkpoint(image) is None and fresh.checkpoint() == image
        more = th.hapt_stream(meta, 200, person=26, shift=True, label_fraction=0.3, seed=1)
        got, want, _ = active_run(trainer, fresh, *(a[160:] for a in more))
        assert th.first_mismatch(got, want) is None


def test_label_nobody_asked_for_is_refused(har):
    compiled, _, elf, meta = har
    rows, labels, _ = th.hapt_stream(meta, 40, person=25, shift=True)
    with session(HOST, elf) as (_, link):
        trainer = Trainer(link, meta)
        ref = configured(trainer, compiled, label_budget=0.0)
        with pytest.raises(BoardError, match="NOT_ASKED") as e:
            trainer.label(1)
        assert e.value.info.detail == LabelCheck.NOT_PENDING and e.value.info.reason == Reason.NOT_ASKED
        with pytest.raises(LabelRefused, match="no label request"):
            ref.label(1, 0)
        ref = configured(trainer, compiled, label_budget=1.0)  # asks at the first uncertain window
        for i, row in enumerate(rows):
            if trainer.train(row).flags & STEP_ASKED:
                break
        assert ref.memory.slots and i < len(rows) - 1
        trainer.train(rows[i + 1])
        with pytest.raises(BoardError, match="NOT_ASKED") as e:  # one TRAIN since: age 1, not 0
            trainer.label(int(labels[i]), 0)
        assert e.value.info.detail == LabelCheck.OTHER_WINDOW
        with pytest.raises(BoardError, match="BAD_PAYLOAD"):
            trainer.label(200, 1)
        assert trainer.label(int(labels[i]), 1).flags == STEP_LABEL
        with pytest.raises(BoardError, match="NOT_ASKED"):  # answered: nothing pending any more
            trainer.label(int(labels[i]), 1)


@pytest.mark.slow
def test_qemu_board_equals_reference_with_replay_and_label_requests(tmp_path):
    onnx_path, calib = th.default_model(tmp_path)
    out = tmp_path / "qemu"
    compiled = th.compile_model(onnx_path, QEMU, out, calib=calib, quiet=True, train="exits",
                                replay_bytes=RECOMMENDED_REPLAY_BYTES)
    elf = th.build_firmware(QEMU, out, out / "fw").elf
    meta = th.load_meta(out)
    assert compiled.memory["train"]["replay"]["slots"] == 11
    rows, labels, mask = th.hapt_stream(meta, 120, person=27, shift=True, label_fraction=0.1)
    with session(QEMU, elf) as (_, link):
        trainer = Trainer(link, meta)
        ref = configured(trainer, compiled, label_budget=0.15, replays=3)
        got, want, asked = active_run(trainer, ref, rows, labels, mask)
        assert asked >= 5
        bad = th.first_mismatch(got, want)
        assert bad is None, f"reply {bad[0]}: board {bad[1]} != reference {bad[2]}"
        assert trainer.checkpoint_get() == ref.checkpoint()
        assert np.array_equal(np.array(ref.memory.labels[:-1]) != 0xFF, np.ones(ref.memory.slots, bool))


def test_monitor_active_labels_host(tmp_path, har):
    """`mcu-train monitor --label-policy active`: labels go only to windows the board asked about, within the
    budget, with up to 4 requests in flight; the log says which windows asked and were labelled (and when the
    LABEL went), and replaying that order on the golden model gives every decision and the final checkpoint."""
    from mcu_train.stream.monitor import load_checkpoint, person_stream, run_monitor, stream_config
    from mcu_train.stream.runlog import read_log
    compiled, _, elf, meta = har
    stream = person_stream(meta, 28, 0.1, "rotate", seed=0, limit=150)
    stream.label_policy = "active"
    cfg = stream_config(len(meta["exits"]), label_budget=0.1)
    log = tmp_path / "active.jsonl"
    with session(HOST, elf) as (running, link):
        run_monitor(link, running.url, meta, compiled, stream, cfg, log, live=False, checkpoint_every=50)
    run, windows, summary, _ = read_log(log)
    assert run["label_policy"] == "active" and run["config"]["label_budget"] == pytest.approx(0.1)
    labelled = [w["seq"] for w in windows if w["labelled"]]
    assert labelled and all(windows[i]["asked"] for i in labelled)
    assert all(sum(w["labelled"] for w in windows[:i + 1]) <= 0.1 * (i + 1) for i in range(len(windows)))
    assert all(0 <= windows[i]["label_age"] < 4 for i in labelled) and summary["labelled"] == len(labelled)
    ref = TrainerReference(compiled, cfg)
    after = {}
    for i in labelled:
        after.setdefault(i + windows[i]["label_age"], []).append(i)
    for w, row, invalid in zip(windows, stream.rows, stream.invalid):
        step = ref.train(row, None, invalid)
        assert (w["prediction"], w["exit"], w["outcome"], w["asked"]) == (
            step.prediction, step.exit, step.outcome_name, bool(step.flags & STEP_ASKED)), w["seq"]
        for i in after.get(w["seq"], []):
            ref.label(int(stream.truth[i]), w["seq"] - i)
    assert load_checkpoint(log.with_name("active.jsonl.ckpt"))[1] == ref.checkpoint()


def test_monitor_active_labels_resume_host(tmp_path, har, monkeypatch):
    """--resume with active labels: the restored board (its memory and pending request in the checkpoint) gets
    the logged windows since the checkpoint and their LABELs in the logged order, decides as the log says, and
    ends where an uninterrupted run ends."""
    from mcu_train.stream import monitor as mon
    compiled, _, elf, meta = har
    stream = mon.person_stream(meta, 29, 0.1, "rotate", seed=1, limit=100)
    stream.label_policy = "active"
    cfg = mon.stream_config(len(meta["exits"]), label_budget=0.1)
    log = tmp_path / "resume.jsonl"
    with session(HOST, elf) as (running, link):
        mon.run_monitor(link, running.url, meta, compiled, stream, cfg, log, live=False, checkpoint_every=45)
    final = mon.load_checkpoint(log.with_name("resume.jsonl.ckpt"))
    assert final[0] == 100
    save = mon.save_checkpoint
    monkeypatch.setattr(mon, "save_checkpoint", lambda path, n, image: save(path, n, image) if n < 100 else None)
    with session(HOST, elf) as (running, link):  # the checkpoint after window 90, the log up to 100
        mon.run_monitor(link, running.url, meta, compiled, stream, cfg, tmp_path / "first.jsonl", live=False,
                        checkpoint_every=45)
    ckpt = mon.load_checkpoint(tmp_path / "first.jsonl.ckpt")
    assert ckpt[0] == 90 and ckpt[1] != final[1]
    monkeypatch.setattr(mon, "save_checkpoint", save)
    with session(HOST, elf) as (running, link):
        summary, _, m = mon.run_monitor(link, running.url, meta, compiled, stream, cfg, tmp_path / "first.jsonl",
                                        resume=True, live=False, checkpoint_every=45)
    assert summary["complete"] and mon.load_checkpoint(tmp_path / "first.jsonl.ckpt") == final

"""`mcu-train monitor --data` and `personalise --data`: a CSV recording, an Edge Impulse folder and a live stdin
stream reach the board with the log contract of HAPT runs (every window once and in order, the board's
decisions equal to the numpy golden model's, --resume losing and repeating nothing for files), and bad data
is refused before anything is written. Fast tests use the host board; the QEMU ones are marked slow."""
import json
import signal
import subprocess
import time

import numpy as np
import pytest
from data_helpers import check_data_log, csv_text, write_csv, write_edge_impulse
from repo import ROOT
from test_monitor import HOST, QEMU, _cli, _wait_for_windows
from train_helpers import compile_trainer

from mcu_train.boards.runner import session, start_board
from mcu_train.cli import main
from mcu_train.stream.monitor import LIVE_RESUME, data_stream, run_monitor, stream_config
from mcu_train.stream.runlog import read_log


@pytest.fixture(scope="module")
def host_model(tmp_path_factory):
    return compile_trainer(tmp_path_factory.mktemp("data-host"), HOST, "exits")


@pytest.fixture(scope="module")
def qemu_model(tmp_path_factory):
    return compile_trainer(tmp_path_factory.mktemp("data-qemu"), QEMU, "exits")


def stop_midway(board, elf, args, log, after, rate, kill_board):
    """Run `mcu-train monitor ARGS` on a fresh board and stop it after `after` windows: Ctrl-C, or the board
    killed. Returns (status, stdout, stderr)."""
    with start_board(board, elf) as running:
        proc = subprocess.Popen(_cli(*args, "--port", running.url, "--rate", rate), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_windows(log, after, proc)
        if kill_board:
            running.process.send_signal(signal.SIGKILL)
            running.process.wait()
        else:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


def with_gap(text, line):
    """The CSV with one reading of `line` (1-based) missing: its windows go out flagged invalid."""
    lines = text.splitlines()
    cells = lines[line - 1].split(",")
    lines[line - 1] = ",".join([cells[0], "", *cells[2:]])
    return "\n".join(lines) + "\n"


def stream_file(board, model, source, tmp_path, labels=0.3, limit=None):
    compiled, out, elf = model
    stream = data_stream(compiled.meta, source, labels, seed=0, limit=limit)
    cfg = stream_config(len(compiled.meta["exits"]))
    log = tmp_path / "run.jsonl"
    with session(board, elf, timeout=2.0) as (running, link):
        summary, plot, mon = run_monitor(link, running.url, compiled.meta, compiled, stream, cfg, log, live=False,
                                         checkpoint_every=50)
    return stream, cfg, log, summary


def test_monitor_streams_a_csv_recording_host(tmp_path, host_model):
    path = tmp_path / "p27.csv"
    path.write_text(with_gap(csv_text(27, 0, rows=8000), 1000))
    stream, cfg, log, summary = stream_file(HOST, host_model, path, tmp_path)
    run, windows = check_data_log(log, host_model[0], stream, cfg, "csv")
    assert run["source"] == str(path) and run["files"] == ["p27.csv"] and len(run["sha256"]) == 64
    assert run["windows"] == len(stream) == 107 and summary["board_stats"]["windows"] == 107
    invalid = [w for w, bad in zip(windows, stream.invalid) if bad]
    assert len(invalid) == 2 and all(w["outcome"] == "INVALID" for w in invalid)
    assert any(w["truth"] is None for w in windows) and sum(w["labelled"] for w in windows) == 28  # 30% of 95
    assert stream.notes and "p27.csv line 1000" in stream.notes[0]


def test_bad_data_is_refused_before_anything_is_written(tmp_path, host_model, capsys):
    compiled, out, elf = host_model
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text(27, 0, rows=600).replace("STANDING", "STANDNG", 1))  # line 464
    log = tmp_path / "logs" / "run.jsonl"
    for args in (["monitor", "--port", "socket://127.0.0.1:1", "--model", out, "--data", bad, "--log", log],
                 ["personalise", "--board", "host", "--data", bad, "-o", tmp_path / "p", "--reference"]):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert f"{bad} line 464: " in err and "unknown class 'STANDNG'" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "p").exists()
    for args, message in ((["--data", "-", "--resume"], LIVE_RESUME),
                          (["--data", bad, "--person", "3"], "not with --data")):
        with pytest.raises(SystemExit):
            main([str(a) for a in ["monitor", "--port", "socket://127.0.0.1:1", "--model", out, "--log", log, *args]])
        assert message in capsys.readouterr().err


def stopped_then_resumed(board, model, tmp_path, person, kill_board, between=None):
    """A CSV recording streamed by `mcu-train monitor`, stopped after 45 windows (Ctrl-C, or the board
    killed), then resumed on a fresh board: the log must hold every window once, the board's decisions equal
    to an uninterrupted run's. `between(path, args)` runs before the resume. Returns (run, windows)."""
    compiled, out, elf = model
    path = write_csv(tmp_path / f"p{person}.csv", person, 0, rows=8000)
    log = tmp_path / "stopped.jsonl"
    args = ["monitor", "--model", out, "--data", path, "--log", log, "--checkpoint-every", 30, "--quiet"]
    status, stdout, stderr = stop_midway(board, elf, args, log, 45, rate=30, kill_board=kill_board)
    assert status == (2 if kill_board else 130) and ("--resume" in stderr if kill_board else "--resume" in stdout)
    run, windows, summary, _ = read_log(log)
    assert 45 <= len(windows) < run["windows"] and not summary["complete"]
    if between:
        between(path, args)
    with start_board(board, elf) as running:
        done = subprocess.run(_cli(*args, "--port", running.url, "--resume"), cwd=ROOT, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    stream = data_stream(compiled.meta, path, 0.1, seed=0)
    run, windows = check_data_log(log, compiled, stream, stream_config(len(compiled.meta["exits"])), "csv")
    assert len(run["resumes"]) == 1 and 45 <= run["resumes"][0]["at"] < len(stream)
    return run, windows


def test_resume_of_a_csv_run_loses_and_repeats_nothing_host(tmp_path, host_model):
    def change_then_restore(path, args):
        original = path.read_text()
        path.write_text(original.replace("0.02,", "0.02,1", 1))  # the recording changed: its sha256 differs
        changed = subprocess.run(_cli(*args, "--port", "socket://127.0.0.1:1", "--resume"), cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert changed.returncode == 2 and "is a run with sha256" in changed.stderr
        path.write_text(original)
    stopped_then_resumed(HOST, host_model, tmp_path, 26, kill_board=False, between=change_then_restore)


def stream_stdin(board, model, tmp_path, rows=6000, chunk=400, pause=0.2):
    """A sensor logger piping CSV rows into `monitor --data -`, a chunk at a time. Returns (the log, when the
    last row was written)."""
    compiled, out, elf = model
    log = tmp_path / "live.jsonl"
    lines = csv_text(28, 0, rows=rows).splitlines(keepends=True)
    with start_board(board, elf) as running:
        proc = subprocess.Popen(_cli("monitor", "--port", running.url, "--model", out, "--data", "-", "--log", log,
                                     "--labels", 0.5, "--quiet"), cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(0, len(lines), chunk):
            proc.stdin.write("".join(lines[i:i + chunk]))
            proc.stdin.flush()
            time.sleep(pause)
        last_row = time.time()
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    return log, last_row


def check_live_log(log, last_row, compiled, tmp_path, rows=6000):
    """The live log against the same rows read as a file: the same windows, each logged once, in order, the
    board's decisions equal to the reference's with the labels the log says were sent."""
    run, windows, summary, _ = read_log(log)
    assert run["source"] == "-" and run["windows"] is None and summary["windows_total"] == len(windows)
    assert windows[0]["time"] < last_row  # the first window went out while rows were still coming
    (tmp_path / "same.csv").write_text(csv_text(28, 0, rows=rows))
    stream = data_stream(compiled.meta, tmp_path / "same.csv", 0.0, seed=0)
    stream.labelled = [w["labelled"] for w in windows]
    assert all(not w["labelled"] or w["truth"] is not None for w in windows)
    assert 0.3 < np.mean([w["labelled"] for w in windows if w["truth"] is not None]) < 0.7
    check_data_log(log, compiled, stream, stream_config(len(compiled.meta["exits"])), "csv")


def test_live_stdin_stream_host(tmp_path, host_model):
    log, last_row = stream_stdin(HOST, host_model, tmp_path)
    check_live_log(log, last_row, host_model[0], tmp_path)


def test_personalise_data_on_the_reference(tmp_path, host_model, capsys):
    path = write_csv(tmp_path / "p25.csv", 25, 0, rows=6000)
    stream = data_stream(host_model[0].meta, path, 0.5, seed=0, limit=300)  # the same windows and labels
    main(["personalise", "--board", "host", "--data", str(path), "--reference", "--labels", "0.5", "-o",
          str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "personalise.json").read_text())
    assert report["source"] == str(path) and "person" not in report
    s = report["summary"]
    known = np.array(stream.truth) >= 0
    assert s["windows"] == len(stream) and s["labelled"] == sum(stream.labelled) == round(0.5 * known.sum())
    assert 0.5 < s["accuracy"] <= 1.0 and 0 < known.sum() < len(stream)
    assert f"{len(stream)} windows of {path}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ QEMU (slow)

@pytest.mark.slow
@pytest.mark.qemu
def test_csv_through_qemu_killed_and_resumed(tmp_path, qemu_model):
    run, windows = stopped_then_resumed(QEMU, qemu_model, tmp_path, 29, kill_board=True)
    assert run["board"] == "mps2-an386"


@pytest.mark.slow
@pytest.mark.qemu
def test_edge_impulse_folder_through_qemu(tmp_path, qemu_model):
    files = write_edge_impulse(tmp_path / "ei", 30, 0, runs=14)
    stream, cfg, log, summary = stream_file(QEMU, qemu_model, tmp_path / "ei", tmp_path, labels=0.2)
    run, windows = check_data_log(log, qemu_model[0], stream, cfg, "edge-impulse")
    assert run["files"] == [f.name for f in files] and run["counter_unit"] == "instructions"
    assert {w["recording"] for w in windows} == set(range(len(files))) and all(w["truth"] is not None
                                                                                for w in windows)


@pytest.mark.slow
@pytest.mark.qemu
def test_live_stdin_stream_through_qemu(tmp_path, qemu_model):
    log, last_row = stream_stdin(QEMU, qemu_model, tmp_path, rows=5000, chunk=300, pause=0.3)
    check_live_log(log, last_row, qemu_model[0], tmp_path, rows=5000)

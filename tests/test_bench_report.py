"""`mcu-train bench --quick --out FILE`: the report is complete (every table, no NaN, results.json keys, plots),
the hand-written text around its block is kept, the sweep's task function gives the board's decisions on the
reference, and a sweep on a local Dask cluster gives the same figures as the process pool."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from repo import ROOT

from mcu_train.bench import analysis, report
from mcu_train.bench.streams import StreamTask, run_stream, task_stream
from mcu_train.bench.sweep import run_tasks

SECTIONS = ("### Personalisation", "### Inference cost with exits", "### Training cost",
            "### Memory and size per board", "### Kernels and whole models", "Whole models on Cortex-M4",
            "### Link")
JSON_KEYS = ("inference_speedup", "inference_accuracy_drop_pt", "training_saving", "training_accuracy_drop_pt",
             "personalisation", "sram_training_peak_bytes", "flash_bytes", "conv_instructions_per_mac", "models",
             "windows_per_second", "command", "date", "commit")


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, float):
        yield value


@pytest.mark.slow
@pytest.mark.qemu
def test_quick_report_is_complete(tmp_path):
    out = tmp_path / "docs" / "RESULTS.md"
    out.parent.mkdir()
    out.write_text("# Results\n\nHand-written notes.\n\n"
                   f"{report.BEGIN}\nold generated text\n{report.END}\n\n## Later section\n")
    summary = report.bench_report(out=out, quick=True, log=lambda line: None)
    text = out.read_text()
    assert text.startswith("# Results\n\nHand-written notes.") and text.rstrip().endswith("## Later section")
    assert "old generated text" not in text
    for section in SECTIONS:
        assert section in text, section
    assert "nan" not in text.lower().replace("nano", "")
    assert text.count("*Command `") >= 7  # every table states its command, board, date, commit and source
    saved = json.loads((out.parent / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    for key in JSON_KEYS:
        assert saved.get(key) not in (None, {}, []), key
    assert all(math.isfinite(v) for v in _numbers(saved))
    assert set(saved["inference_speedup"]) >= {"generic", "personalised"}
    assert {"person", "seed", "labels", "label_policy", "shift", "generic_acc", "personalised_acc"} <= \
        set(saved["personalisation"][0])
    assert saved["board_reference_mismatches"] == 0  # the board streams made the reference's decisions
    # The cost model sums per-stage costs measured on a few inputs; the DSP kernels' requantisation and
    # activation paths make a stage's instruction count depend a little on the data.
    assert saved["cost_model_max_error"] < 0.03
    assert saved["sram_training_peak_bytes"]["mps2-an386"]["exits"] > 0
    for png in ("bench_inference.png", "bench_personalisation.png"):
        assert (out.parent / png).read_bytes()[:4] == b"\x89PNG"


def test_stream_task_on_the_host_board_equals_the_reference():
    """The sweep's own task function, run on a board and on the numpy reference, decides alike window by window
    (run_stream runs both and counts the windows that differ)."""
    for setting in ("stream", "dense"):
        r = run_stream(StreamTask(25, shift="rotate", windows=40, setting=setting, board="host"))
        assert r["mismatches"] == 0, setting
        assert len(r["outcome"]) == 40 and r["cost_inference"].min() > 0


def test_dask_cluster_gives_the_process_pool_figures():
    distributed = pytest.importorskip("distributed")
    tasks = [(run_stream, StreamTask(p, shift="rotate", windows=30)) for p in (25, 26)]
    pooled = run_tasks(tasks, workers=2, log=lambda line: None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
            as cluster:
        dasked = run_tasks(tasks, scheduler=cluster.scheduler_address, log=lambda line: None)
    for a, b in zip(pooled, dasked):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]) if isinstance(a[key], np.ndarray) else a[key] == b[key], key
    assert [analysis.stream_accuracies(r) for r in pooled] == [analysis.stream_accuracies(r) for r in dasked]


def test_exit_choice_and_best_point():
    conf = np.array([[70000, 0, 0], [10, 66000, 0], [10, 10, 0]])
    assert analysis.exits_at(conf, np.array([65536, 65536, 65536])).tolist() == [0, 1, 2]
    full = dict(accuracy=90.0, cost=100.0)
    points = [dict(threshold=0.5, accuracy=80.0, cost=10.0), dict(threshold=0.9, accuracy=89.6, cost=40.0),
              dict(threshold=0.99, accuracy=91.0, cost=60.0)]
    best = analysis.best_point(points, full)
    assert best["threshold"] == 0.9 and best["speedup"] == 2.5
    assert analysis.best_point(points[:1], full)["speedup"] == 1.0  # none within half a point: the full network


@pytest.mark.parametrize("args, message", [
    (["--quick", "-o", "x.json"], "--output belongs to the per-board tables"),
    (["--scheduler", "tcp://127.0.0.1:1"], "add --out FILE or --quick"),
    (["--quick", "--board", "host"], "host process"),
    (["--quick", "--board", "nosuch"], "unknown board"),
])
def test_bench_cli_refuses_bad_options(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mcu_train.cli", "bench", *args, "--out", str(tmp_path / "R.md")]
                          if "--quick" in args else [sys.executable, "-m", "mcu_train.cli", "bench", *args],
                          cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "R.md").exists() and not (tmp_path / "results.json").exists()


def _env():
    import os
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_defaults_sweep_scores_a_candidate_on_the_reference():
    """The defaults sweep (mcu_train.bench.defaults): a candidate's overrides reach the trainer (lr 0 trains
    nothing useful: the board answers as the generic model), and its score ranks by the shifted streams."""
    from mcu_train.bench import defaults
    task = StreamTask(21, 0, 0.1, "rotate", windows=60)
    from codegen import train_reference
    frozen = defaults.evaluate((task, (("lr", 0.0), ("dnh_wins", 3))))
    assert frozen["board"] == frozen["generic"] and frozen["trained"] > 0
    # the guard's margin was set for that task only (later tests' references must equal the firmware)
    assert (train_reference.DNH_WINS, train_reference.DNH_WINS_REPLAY) == (defaults.DNH_WINS, defaults.DNH_WINS_REPLAY)
    assert defaults.config(4, [("threshold_min", 0.75), ("pseudo_threshold", 1.0)]).threshold_min == [0.75] * 4
    summary = defaults.summarise([dict(frozen, shift=s, labels=l) for s, l in defaults.STREAMS])
    assert defaults.score(summary) == (True, frozen["board"], frozen["board"])
    assert 0 < defaults.cost(summary) <= max(task_stream(task)[0].meta["macs_per_exit"])
    # A cost parameter takes the cheapest candidate among those as accurate as the best; others the best.
    scored = [((True, 90.0, 99.0), 500.0), ((True, 89.9, 99.0), 400.0), ((True, 88.0, 99.0), 100.0),
              ((False, 95.0, 99.0), 50.0)]
    assert defaults.choose(scored, ("threshold_max",)) == 1
    assert defaults.choose(scored, ("lr",)) == 0
    with pytest.raises(SystemExit):  # a parameter the sweep has no step for is refused before any run
        defaults.main(["--params", "no_such_parameter"])

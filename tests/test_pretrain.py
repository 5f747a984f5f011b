"""The committed pretrained model, its calibration set and report; retraining reproduces them."""
import json
from pathlib import Path

import numpy as np
import pytest

from codegen.files import write_atomically
from mcu_train import data
from mcu_train.cli import main
from mcu_train.learn.onnx_export import read_model_info
from mcu_train.learn.pretrain import Recipe, train

MODELS = Path(__file__).resolve().parents[1] / "models"


def load_report(path):
    return json.loads(Path(path).read_text())


def test_committed_artifacts_are_small():
    for name in ("har.onnx", "har_calib.npz", "har_report.json"):
        assert (MODELS / name).stat().st_size < 500_000, name


def test_committed_model_meets_the_accuracy_target():
    report = load_report(MODELS / "har_report.json")
    validation = report["accuracy_pct"]["validation"]
    assert validation["final"] >= 95.0
    assert set(validation["per_person"]) == {"21", "22", "23", "24"}
    assert set(report["accuracy_pct"]["personalise"]["per_person"]) == {str(p) for p in range(25, 31)}
    assert [e["name"] for e in report["exits"]] == list(read_model_info(MODELS / "har.onnx").exits)


def test_calibration_set_is_real_pretraining_windows_in_model_input_units():
    calib = np.load(MODELS / "har_calib.npz")
    x, y, person = calib["x"], calib["y"], calib["person"]
    assert x.dtype == np.float32 and x.shape == (300, 3, 128)
    assert np.bincount(y).tolist() == [50] * 6
    assert set(person) <= set(data.SPLITS["pretrain"])
    first = data.person_windows(int(person[0]))
    matches = np.flatnonzero((data.to_model_input(first.x) == x[0]).all(axis=(1, 2)))
    assert len(matches) == 1 and first.y[matches[0]] == y[0]


def test_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        write_atomically(tmp_path / "model.onnx", "not bytes")
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--dataset", "mnist"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_training_is_reproducible_with_the_same_seed():
    windows = data.split_windows("validation").select(slice(0, 256))
    recipe = Recipe(epochs=1, batch_size=64)
    weights = [[t.numpy() for t in train(windows, recipe, seed).parameters()] for seed in (5, 5, 6)]
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], weights[2]))


@pytest.mark.slow
def test_retraining_from_scratch_reproduces_the_committed_model(tmp_path):
    committed = load_report(MODELS / "har_report.json")
    output = tmp_path / "har.onnx"
    main(["pretrain", "--dataset", "hapt", "-o", str(output), "--seed", str(committed["seed"]),
          "--epochs", str(committed["recipe"]["epochs"])])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["har.onnx", "har_calib.npz", "har_report.json"]
    report = load_report(tmp_path / "har_report.json")
    for split in ("validation", "personalise"):
        for name in ("exit0", "exit1", "exit2", "final"):
            assert report["accuracy_pct"][split][name] == pytest.approx(committed["accuracy_pct"][split][name],
                                                                        abs=1.0), (split, name)
    np.testing.assert_array_equal(np.load(tmp_path / "har_calib.npz")["x"], np.load(MODELS / "har_calib.npz")["x"])

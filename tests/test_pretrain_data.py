"""`mcu-train pretrain --data`: the HAPT recipe on a user's labelled recordings. HAPT itself, exported to CSV
files, must give a model as good as the committed one; bad or unusable data is refused before training."""
import json

import numpy as np
import pytest
from data_helpers import write_csv

from mcu_train import data
from mcu_train.cli import main
from mcu_train.learn.onnx_export import read_model_info
from mcu_train.learn.pretrain_data import DataPretraining, validation_split
from test_pretrain import MODELS, load_report


def test_the_default_validation_split_holds_out_the_last_fifth_without_overlap():
    starts = np.r_[np.arange(0, 64 * 20, 64), np.arange(5000, 5000 + 64 * 9, 64), np.arange(0, 64 * 12, 64)]
    w = data.WindowSet(np.zeros((len(starts), 3, 128), np.float32), np.r_[[0] * 20, [1] * 9, [0] * 12],
                       np.r_[[0] * 29, [1] * 12], starts)
    val, train = validation_split(w, 128)
    assert np.flatnonzero(val).tolist() == [16, 17, 18, 19, 28, 39, 40]  # 4 of 20, 1 of 9, 2 of 12
    assert not (val & train).any() and not train[15] and train[14] and not train[27] and train[26]
    assert not train[38] and train[37]
    for i in np.flatnonzero(train):  # no training window shares a sample with a validation window
        same = val & (w.recording == w.recording[i])
        assert np.all(np.abs(w.start[same] - w.start[i]) >= 128)


def test_unusable_data_is_refused_before_training(tmp_path, capsys):
    one_class = tmp_path / "sitting.csv"
    one_class.write_text("t,a,b,c,label\n" + "".join(f"{i / 50},1,2,3,SITTING\n" for i in range(400)))
    no_time = tmp_path / "no_time.csv"
    no_time.write_text("a,b,c,label\n" + "".join(f"1,2,3,{'AB'[i // 200]}\n" for i in range(400)))
    for args, message in ((["--data", one_class, "-o", tmp_path / "m.onnx"], "name 1 class(es) (SITTING)"),
                          (["--data", no_time, "-o", tmp_path / "m.onnx"], "pass --sample-rate"),
                          (["--data", one_class, "--classes", "STANDING,LAYING", "-o", tmp_path / "m.onnx"],
                           "line 2: unknown class 'SITTING'"),
                          (["--data", "-", "-o", tmp_path / "m.onnx"], "not a live stream"),
                          (["--data", one_class], "needs -o")):
        with pytest.raises(SystemExit) as e:
            main(["pretrain", *map(str, args)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_time.csv", "sitting.csv"]
    two = DataPretraining(no_time, tmp_path / "m.onnx", sample_rate=25, window=64)
    assert two.classes == ("A", "B") and two.spec.hop == 32 and len(two.validation_set) == 2 * (5 // 5)


@pytest.mark.slow
def test_hapt_exported_to_csv_trains_as_well_as_the_committed_model(tmp_path):
    """People 1-20 as CSV files (one per recording), validated on people 21-24 as CSV: the same windows as the
    HAPT pretraining, so the same recipe must reach the committed model's validation accuracy (within 1
    point on every exit)."""
    for folder, people in (("train", data.SPLITS["pretrain"]), ("validation", data.SPLITS["validation"])):
        (tmp_path / folder).mkdir()
        for p in people:
            for r in range(len(data.load_recordings()[p])):
                write_csv(tmp_path / folder / f"p{p:02d}r{r}.csv", p, r)
    output = tmp_path / "mine.onnx"
    main(["pretrain", "--data", str(tmp_path / "train"), "--validation", str(tmp_path / "validation"),
          "--classes", ",".join(data.CLASS_NAMES), "-o", str(output), "--seed", "0"])
    report = json.loads((tmp_path / "mine_report.json").read_text())
    committed = load_report(MODELS / "har_report.json")
    assert report["windows"] == {"train": committed["windows"]["pretrain"],
                                 "validation": committed["accuracy_pct"]["validation"]["windows"]}
    for name in ("exit0", "exit1", "exit2", "final"):
        assert report["accuracy_pct"]["validation"][name] == pytest.approx(
            committed["accuracy_pct"]["validation"][name], abs=1.0), name
    info = read_model_info(output)
    assert (info.sample_rate_hz, info.window, info.hop, info.classes) == (50.0, 128, 64, data.CLASS_NAMES)
    assert info.channels == ("acc_x", "acc_y", "acc_z")
    calib = np.load(tmp_path / "mine_calib.npz")
    assert calib["x"].shape == (300, 3, 128) and np.bincount(calib["y"]).tolist() == [50] * 6

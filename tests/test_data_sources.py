"""A user's recordings (docs/data.md): CSV, Edge Impulse JSON and NPZ files and folders, a live CSV stream,
windowing and scaling from the model's metadata, window labels, resampling, label fractions, and a clear
error naming the file and line for bad data."""
import io
import json

import numpy as np
import pytest
from data_helpers import csv_text, label_names, write_csv, write_edge_impulse

from mcu_train import data
from mcu_train.data.source import FileSource, StdinSource
from mcu_train.data.windows import Resampler, Windower, run_windows
from mcu_train.errors import DataError

# The committed model's metadata, as a compiled model.json carries it (no hop: half a window).
HAR_META = {"input_shape": [1, 3, 128], "classes": list(data.CLASS_NAMES),
            "metadata": {"mcu_train.sample_rate_hz": "50", "mcu_train.window": "128", "mcu_train.input_offset": "0",
                         "mcu_train.input_scale": "1", "mcu_train.channels": "acc-x,acc-y,acc-z"}}
SPEC = data.WindowSpec.from_model(HAR_META)
CLASSES = data.ClassMap(data.CLASS_NAMES)


def windows_of(path, spec=SPEC, resample=False):
    return FileSource(path, spec.channels, spec.num_channels).windows(spec, CLASSES, resample)


def hapt_recording(person, recording):
    w = data.person_windows(person)
    return w.select(w.recording == recording)


def test_the_committed_models_metadata_gives_the_hapt_windowing():
    assert (SPEC.num_channels, SPEC.window, SPEC.hop, SPEC.sample_rate_hz) == (3, 128, 64, 50.0)
    assert SPEC.channels == ("acc-x", "acc-y", "acc-z")
    x = np.random.default_rng(0).normal(size=(2, 3, 128)).astype(np.float32)
    assert np.array_equal(SPEC.to_model_input(x), x)  # offset 0, scale 1: the reading in g, bit for bit
    spec = data.WindowSpec.from_model({**HAR_META, "metadata": {"mcu_train.hop": "32", "mcu_train.input_offset":
                                                                 "1,2,3", "mcu_train.input_scale": "2"}})
    assert spec.hop == 32 and spec.sample_rate_hz is None and spec.channels == ()
    np.testing.assert_array_equal(spec.to_model_input(np.ones((1, 3, 128)))[0, :, 0], [0, -2, -4])


def test_a_csv_of_a_hapt_recording_gives_the_hapt_windows(tmp_path):
    """Windows lie inside runs of one label, from the run's first sample, every hop samples: so a HAPT
    recording written as CSV gives exactly the HAPT windows (and windows without a label where HAPT has none)."""
    w = windows_of(write_csv(tmp_path / "p21.csv", 21, 1))
    labelled = w.select(w.y >= 0)
    want = hapt_recording(21, 1)
    assert np.array_equal(labelled.x, want.x) and np.array_equal(labelled.y, want.y)
    assert np.array_equal(labelled.start, want.start)
    assert (w.y == -1).sum() > 0 and np.all(np.diff(w.start) > 0)
    acc, labels = data.load_recordings()[21][1]
    for start, y in zip(w.start, w.y):  # every sample of a window has the window's label
        names = set(labels[start:start + 128])
        assert names == {y + 1} if y >= 0 else not names & set(range(1, 7)) or len(names) == 1


def test_windows_are_the_same_whole_or_in_pieces():
    labels = np.repeat([0, 1, -1, 1, 2], [300, 100, 200, 129, 64])
    values = np.random.default_rng(1).normal(size=(len(labels), 3))
    starts, y = run_windows(labels, 128, 64)
    assert starts.tolist() == [0, 64, 128, 400, 464, 600] and y.tolist() == [0, 0, 0, -1, -1, 1]
    rng = np.random.default_rng(2)
    windower, got, i = Windower(128, 64), [], 0
    while i < len(labels):
        n = int(rng.integers(1, 90))
        got.append(windower.push(values[i:i + n], labels[i:i + n]))
        i += n
    assert np.concatenate([g[2] for g in got]).tolist() == starts.tolist()
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]),
                                  values[starts[:, None] + np.arange(128)].transpose(0, 2, 1).astype(np.float32))


def test_stdin_gives_the_same_windows_as_the_file(tmp_path):
    text = csv_text(22, 0, rows=3000)
    (tmp_path / "p22.csv").write_text(text)
    whole = windows_of(tmp_path / "p22.csv")
    live = list(StdinSource(io.StringIO(text), SPEC.channels, 3).iter_windows(SPEC, CLASSES))
    assert len(live) == len(whole)  # one window at a time, as it fills
    joined = data.WindowSet.concat(live, 3, 128)
    assert all(np.array_equal(getattr(joined, f), getattr(whole, f)) for f in ("x", "y", "start"))


def test_columns_by_name_in_any_order_or_else_the_first_numeric_ones(tmp_path):
    rows = csv_text(23, 0, rows=600).splitlines()
    swapped = ["label;Acc Z;accX;ACC-Y;t_ms"] + [";".join([r.split(",")[4], r.split(",")[3], r.split(",")[1],
                                                             r.split(",")[2], str(20 * i)])
                                                   for i, r in enumerate(rows[1:])]
    (tmp_path / "named.csv").write_text("\n".join(swapped))
    unnamed = ["t,a,b,c,label,note"] + [r + ",x" for r in rows[1:]]
    (tmp_path / "unnamed.csv").write_text("\n".join(unnamed))
    (tmp_path / "plain.csv").write_text("\n".join(rows))
    want = windows_of(tmp_path / "plain.csv")
    for name in ("named.csv", "unnamed.csv"):
        got = windows_of(tmp_path / name)
        assert np.array_equal(got.x, want.x) and np.array_equal(got.y, want.y), name


def test_edge_impulse_folder_labels_from_file_names_or_the_label_field(tmp_path):
    files = write_edge_impulse(tmp_path / "ei", 24, 0, runs=12)
    w = windows_of(tmp_path / "ei")
    hapt = hapt_recording(24, 0)
    for k, f in enumerate(files):
        begin = int(f.stem.split("s")[-1])  # the run's first sample: the file's windows are the run's HAPT windows
        mine = w.select(w.recording == k)
        theirs = hapt.select((hapt.start >= begin) & (hapt.y == mine.y[0]))
        assert np.array_equal(mine.x, theirs.x[:len(mine)]) and f.name.startswith(data.CLASS_NAMES[mine.y[0]])
        assert np.array_equal(mine.start + begin, theirs.start[:len(mine)])
    assert set(w.recording) == set(range(len(files)))
    doc = json.loads(files[0].read_text())
    doc["label"] = "laying"  # a label field wins over the name (and class names match without case)
    files[0].write_text(json.dumps(doc))
    assert set(windows_of(files[0]).y) == {data.CLASS_NAMES.index("LAYING")}
    doc["label"] = None
    files[0].write_text(json.dumps(doc))
    assert set(windows_of(files[0]).y) == {-1}


def test_npz_windows_or_samples_with_labels_and_labelled(tmp_path):
    hapt = hapt_recording(25, 0).select(slice(0, 40))
    labelled = np.arange(40) % 3 != 0
    np.savez(tmp_path / "w.npz", x=hapt.x, y=hapt.y, labelled=labelled)
    w = windows_of(tmp_path / "w.npz")
    assert np.array_equal(w.x, hapt.x) and w.y.tolist() == np.where(labelled, hapt.y, -1).tolist()
    acc, labels = data.load_recordings()[25][0]
    names = np.array([n or "WALKING" for n in label_names(labels)])  # class names, and where there is none...
    np.savez(tmp_path / "s.npz", x=acc, y=names, labelled=(labels >= 1) & (labels <= 6), sample_rate_hz=50.0)
    s = windows_of(tmp_path / "s.npz")
    assert np.array_equal(s.select(s.y >= 0).x, hapt_recording(25, 0).x)


def test_another_sample_rate_is_refused_or_resampled(tmp_path):
    t = np.arange(0, 20, 0.01)  # 100 Hz, 20 s of three sines
    signal = np.stack([np.sin(2 * np.pi * f * t) for f in (0.5, 1.0, 1.5)], axis=1)
    lines = ["time_ms,acc_x,acc_y,acc_z,label"] + [f"{1000 * ti:.0f},{a:.9g},{b:.9g},{c:.9g},WALKING"
                                                   for ti, (a, b, c) in zip(t, signal)]
    path = tmp_path / "fast.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"fast.csv is sampled at 100 Hz, the model at 50 Hz.*--resample"):
        windows_of(path)
    w = windows_of(path, resample=True)
    assert len(w) == (1000 - 128) // 64 + 1 and set(w.y) == {0}
    t50 = np.arange(128) / 50
    np.testing.assert_allclose(w.x[1, 1], np.sin(2 * np.pi * 1.0 * (t50 + 64 / 50)), atol=1e-3)
    # A live stream: its rate is measured over the first window's rows, and it is resampled the same way.
    with pytest.raises(DataError, match=r"stdin is sampled at 100 Hz, the model at 50 Hz"):
        list(StdinSource(io.StringIO("\n".join(lines)), SPEC.channels, 3).iter_windows(SPEC, CLASSES))
    live = list(StdinSource(io.StringIO("\n".join(lines)), SPEC.channels, 3).iter_windows(SPEC, CLASSES, True))
    np.testing.assert_array_equal(data.WindowSet.concat(live, 3, 128).x, w.x)
    r, out = Resampler(50.0), []
    for i in range(0, len(t), 37):
        out.append(r.push(t[i:i + 37], signal[i:i + 37], np.zeros(len(t[i:i + 37]), np.int64))[0])
    np.testing.assert_allclose(np.concatenate(out)[:128], w.x[0].T, atol=1e-6)


def test_label_fraction_is_of_the_labels_the_data_has():
    y = np.array([0, -1, 2, -1, 1] * 40)
    mask = data.keep_labels(y, 0.25, seed=3)
    assert mask.sum() == round(0.25 * 120) and not mask[y < 0].any()
    np.testing.assert_array_equal(mask, data.keep_labels(y, 0.25, seed=3))
    np.testing.assert_array_equal(data.keep_labels(np.arange(50) % 6, 0.1, 7), data.label_mask(50, 0.1, 7))


def test_class_names_and_indices():
    assert [CLASSES.index(t) for t in ("WALKING", "laying", "3", " 5 ", "")] == [0, 5, 3, 5, -1]
    assert CLASSES.index("6") is None and CLASSES.index("RUNNING") is None
    assert data.classes_in(["b", "a", "", "b"]) == ("a", "b")
    assert data.classes_in(["10", "2", "0"]) == ("0", "2", "10")


def test_missing_readings_flag_their_windows_invalid(tmp_path):
    lines = csv_text(26, 0, rows=700).splitlines()
    cells = lines[301].split(",")
    lines[301] = ",".join([cells[0], "", *cells[2:]])  # an empty reading
    lines[500] = lines[500].replace(lines[500].split(",")[2], "nan", 1)
    (tmp_path / "gaps.csv").write_text("\n".join(lines))
    source = FileSource(tmp_path / "gaps.csv", SPEC.channels, 3)
    w = source.windows(SPEC, CLASSES)
    bad = ~np.isfinite(w.x).all(axis=(1, 2))
    assert bad.sum() == sum(1 for s in w.start if s <= 300 < s + 128 or s <= 499 < s + 128)
    assert source.notes and "gaps.csv line 302" in source.notes[0] and "flagged invalid" in source.notes[0]


BAD_CSV = {
    "missing column": ("time,acc_x,acc_y,label\n0,1,2,WALKING\n", "line 1: no column for channel acc-z"),
    "too few numbers": ("time,a,b,label\n0,1,2,WALKING\n", "line 1: 2 numeric columns"),
    "no header": ("0,1,2,3\n0.02,1,2,3\n", "line 1: the first line holds numbers"),
    "not a number": ("acc_x,acc_y,acc_z\n1,2,3\n# a comment\n\n1,2,3\n1,two,3\n",
                     "line 6: acc_y is 'two', not a number"),
    "wrong width": ("acc_x,acc_y,acc_z\n1,2,3\n1,2\n", "line 3: 2 fields, the header has 3"),
    "unknown class": ("acc_x,acc_y,acc_z,label\n1,2,3,WALKING\n1,2,3,RUNNING\n",
                      "line 3: unknown class 'RUNNING'"),
    "time going back": ("time,acc_x,acc_y,acc_z\n0.00,1,2,3\n0.02,1,2,3\n0.01,1,2,3\n", "line 4: time 0.01 does not "
                                                                                       "come after"),
    "too short": ("acc_x,acc_y,acc_z\n" + "1,2,3\n" * 127, "127 samples, shorter than one window"),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_bad_csv_is_a_clear_error_naming_the_file_and_line(tmp_path, case):
    text, message = BAD_CSV[case]
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError) as e:
        windows_of(tmp_path / "bad.csv")
    assert f"{tmp_path / 'bad.csv'}" in str(e.value) and message in str(e.value)
    if case != "too short":  # a live stream says the same
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            list(StdinSource(io.StringIO(text), SPEC.channels, 3).iter_windows(SPEC, CLASSES))


def test_bad_edge_impulse_and_npz_files_are_clear_errors(tmp_path):
    good = {"payload": {"interval_ms": 20, "sensors": [{"name": "accX"}, {"name": "accY"}, {"name": "accZ"}],
                        "values": [[1, 2, 3]] * 200}}
    cases = {
        "walking.1.json": ("{\n \"payload\": [1,", "walking.1.json line 2: not valid JSON"),
        "walking.2.json": ({"payload": {"values": []}}, "not an Edge Impulse data-acquisition file"),
        "walking.3.json": ({**good, "payload": {**good["payload"], "values": [[1, 2, 3], [1, "x", 3]]}},
                           "payload.values[1]: [1, \"x\", 3] is not 3 numbers"),
        "running.4.json": (good, "payload.values[0]: unknown class 'running'"),
        "walking.5.json": ({**good, "payload": {**good["payload"], "sensors": [{"name": "gyrX"}, {"name": "accY"},
                                                                              {"name": "accZ"}]}},
                           "no column for channel acc-x"),
        "walking.6.json": ({**good, "payload": {**good["payload"], "interval_ms": 10}},
                           "sampled at 100 Hz, the model at 50 Hz"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
            windows_of(tmp_path / name)
    np.savez(tmp_path / "two.npz", x=np.zeros((300, 2)))
    np.savez(tmp_path / "y.npz", x=np.zeros((300, 3)), y=np.zeros(299))
    np.savez(tmp_path / "w.npz", x=np.zeros((3, 3, 64)))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, message in (("two.npz", "x has 2 channels"), ("y.npz", "y has shape"),
                          ("w.npz", r"windows of shape \(3, 64\)"), ("junk.npz", "not a readable .npz")):
        with pytest.raises(DataError, match=message):
            windows_of(tmp_path / name)
    with pytest.raises(DataError, match="no such file or folder"):
        windows_of(tmp_path / "nowhere.csv")

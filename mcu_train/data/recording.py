"""A user's recording as read from any format (CSV, Edge Impulse JSON, NPZ; docs/data.md), and the rules the
formats share: which columns are the model's channels, and how label text becomes a class index."""
import re
from dataclasses import dataclass

import numpy as np

from mcu_train.errors import DataError


@dataclass
class Recording:
    """One recording's samples, channels in the model's order. `at` names where sample i is in its file, for
    error messages: "line 12" (CSV), "payload.values[11]" (JSON) or "sample[11]" (NPZ)."""
    name: str                    # the file
    values: np.ndarray           # float64 (T, C) readings; NaN: a missing reading
    labels: np.ndarray           # str (T,) label text, "" = no label
    positions: np.ndarray        # int64 (T,) line (CSV) or value index (JSON, NPZ) of each sample
    position_kind: str           # "line", "payload.values[]" or "sample[]": how a position reads in a message
    channels: tuple[str, ...]    # the columns (sensors) read
    times: np.ndarray | None = None  # float64 (T,) seconds, increasing; None: the file has no time column
    rate_hz: float | None = None     # the rate the file states (Edge Impulse interval_ms, NPZ sample_rate_hz)

    def at(self, i: int) -> str:
        """Where sample i is: '<file> line 12' or '<file> payload.values[11]'."""
        p = int(self.positions[i])
        return f"{self.name} line {p}" if self.position_kind == "line" else \
            f"{self.name} {self.position_kind[:-1]}{p}]"

    def sample_rate(self) -> float | None:
        """The stated rate, else one over the median time between samples, else None (unknown)."""
        return self.rate_hz if self.rate_hz is not None else rate_of(self.times)


def rate_of(times) -> float | None:
    """One over the median time between samples (robust to a late sample); None without two timestamps."""
    return float(1.0 / np.median(np.diff(times))) if times is not None and len(times) > 1 else None


def normalise(name: str) -> str:
    """Column names compare without case, spaces, '-' or '_': acc-x, acc_x, accX and AccX are one name."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def pick_channels(names, numeric, wanted, count, where) -> list[int]:
    """Indices of the channel columns among `names`: the model's channel names `wanted` when any of them is
    there (then all must be), else the first `count` columns flagged `numeric` (all of them when count is None)."""
    keys = [normalise(n) for n in names]
    if wanted and any(normalise(w) in keys for w in wanted):
        missing = [w for w in wanted if normalise(w) not in keys]
        if missing:
            raise DataError(f"{where}: no column for channel {missing[0]} (the model reads {', '.join(wanted)}; "
                            f"the file has {', '.join(names)})")
        return [keys.index(normalise(w)) for w in wanted]
    candidates = [i for i, ok in enumerate(numeric) if ok]
    if count is None:
        count = len(candidates)
    if len(candidates) < max(count, 1):
        reads = f" ({', '.join(wanted)})" if wanted else ""
        raise DataError(f"{where}: {len(candidates)} numeric columns ({', '.join(names)}); the model reads "
                        f"{count} channels{reads}")
    return candidates[:count]


class ClassMap:
    """Label text -> class index in the model's logit order: a class name (exactly, else ignoring case), or an
    index 0..K-1 written as a whole number; "" is no label (-1). Anything else is an unknown class."""

    def __init__(self, classes):
        self.classes = tuple(classes)
        self.exact = {c: k for k, c in enumerate(self.classes)}
        self.folded = {}
        for k, c in enumerate(self.classes):
            self.folded.setdefault(c.lower(), k)

    def index(self, text: str) -> int | None:
        text = str(text).strip()
        if text == "":
            return -1
        if text in self.exact:
            return self.exact[text]
        if text.lower() in self.folded:
            return self.folded[text.lower()]
        if re.fullmatch(r"\d+", text) and int(text) < len(self.classes):
            return int(text)
        return None

    def indices(self, rec: Recording) -> np.ndarray:
        """Every sample's class index (-1: no label); an unknown label is a DataError naming where it first is."""
        names, inverse = np.unique(rec.labels, return_inverse=True)
        mapped = np.array([self.index(n) for n in names], dtype=object)
        unknown = [k for k, m in enumerate(mapped) if m is None]
        if unknown:
            first = int(np.flatnonzero(np.isin(inverse, unknown))[0])
            raise DataError(f"{rec.at(first)}: unknown class {str(rec.labels[first]).strip()!r} "
                            f"(classes: {', '.join(self.classes)}, or their index 0-{len(self.classes) - 1})")
        return mapped[inverse].astype(np.int64) if len(names) else np.zeros(0, np.int64)


def classes_in(labels) -> tuple[str, ...]:
    """The classes a set of labels names, for training without --classes: every distinct label, in numeric
    order when all are whole numbers, else in alphabetical order."""
    names = sorted({str(t).strip() for t in labels} - {""})
    if names and all(re.fullmatch(r"\d+", n) for n in names):
        names.sort(key=int)
    return tuple(names)

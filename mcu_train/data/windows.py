"""Windows of readings, whatever their source (docs/data.md): cutting a recording into windows as a model's
metadata says (WindowSpec, run_windows, Windower, Resampler), and what is done to windows on their way to a
board: rotations (the placement shift) and which windows carry their label."""
from dataclasses import dataclass

import numpy as np

from mcu_train.errors import DatasetError


def rotation_matrices(axes: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) about unit axes (n, 3) by angles in degrees (n,) (Rodrigues' formula)."""
    axes, angle = np.asarray(axes, np.float64), np.deg2rad(np.asarray(angles_deg, np.float64))[:, None, None]
    k = np.zeros((len(axes), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    k -= k.transpose(0, 2, 1)  # the cross-product matrix of each axis
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)



def random_rotations(rng: np.random.Generator, n: int, min_deg: float, max_deg: float) -> np.ndarray:
    """n rotations (n, 3, 3): axis uniform on the sphere, angle uniform in [min_deg, max_deg]."""
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return rotation_matrices(axes, rng.uniform(min_deg, max_deg, size=n))



def rotate(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate windows (N, 3, L): each sample vector v becomes rotation @ v."""
    return np.einsum("ij,njl->nil", rotation, x).astype(x.dtype)



def label_mask(n_windows: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Which windows have their label available: exactly round(fraction * n) of them, chosen by the seed."""
    if not 0.0 <= fraction <= 1.0:
        raise DatasetError(f"label fraction {fraction} must be between 0 and 1")
    mask = np.zeros(n_windows, bool)
    mask[np.random.default_rng(seed).permutation(n_windows)[:round(fraction * n_windows)]] = True
    return mask


def keep_labels(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Which windows are sent with their label: label_mask over the windows that have one (y >= 0), so
    round(fraction * labelled windows) of them. With every window labelled it is label_mask(len(y), ...)."""
    has_label = np.asarray(y) >= 0
    mask = np.zeros(len(has_label), bool)
    mask[has_label] = label_mask(int(has_label.sum()), fraction, seed)
    return mask


# ---------------------------------------------------------------- windows of any recording (docs/data.md)

@dataclass(frozen=True)
class WindowSpec:
    """How a model takes readings, from its metadata: model input = (reading - input_offset) * input_scale,
    `window` samples of `num_channels` channels at `sample_rate_hz` (None: not stated, not checked), one
    window every `hop` samples. `channels` names the channels (empty: the first numeric columns)."""
    num_channels: int
    window: int
    hop: int
    sample_rate_hz: float | None = None
    channels: tuple[str, ...] = ()
    input_offset: tuple[float, ...] = (0.0,)
    input_scale: tuple[float, ...] = (1.0,)

    @staticmethod
    def from_model(meta) -> "WindowSpec":
        """From a compiled model's model.json: its input shape and the ONNX metadata it carries. Missing keys
        take defaults: hop half a window, offset 0, scale 1, no rate check, channels by position."""
        shape = tuple(meta["input_shape"][1:])
        if len(shape) != 2:
            raise DatasetError(f"recordings feed 1-D models (input N, channels, samples); this model takes "
                               f"{tuple(meta['input_shape'])}")
        md = meta.get("metadata", {})
        channels, window = shape
        try:
            numbers = lambda key: tuple(float(v) for v in md.get(key, "").split(",") if v.strip())  # noqa: E731
            spec = WindowSpec(num_channels=channels, window=int(md.get("mcu_train.window", window)),
                              hop=int(md.get("mcu_train.hop", window // 2)),
                              sample_rate_hz=float(md["mcu_train.sample_rate_hz"])
                              if "mcu_train.sample_rate_hz" in md else None,
                              channels=tuple(c.strip() for c in md.get("mcu_train.channels", "").split(",") if c),
                              input_offset=numbers("mcu_train.input_offset") or (0.0,),
                              input_scale=numbers("mcu_train.input_scale") or (1.0,))
        except ValueError as e:
            raise DatasetError(f"the model's metadata is malformed: {e}") from None
        if spec.window != window or not 0 < spec.hop:
            raise DatasetError(f"the model's metadata says window {spec.window}, hop {spec.hop}; its input has "
                               f"{window} samples")
        for name, values in (("channels", spec.channels), ("input_offset", spec.input_offset),
                             ("input_scale", spec.input_scale)):
            if len(values) not in ((0, channels) if name == "channels" else (1, channels)):
                raise DatasetError(f"the model's metadata names {len(values)} {name} for {channels} channels")
        return spec

    def to_model_input(self, x: np.ndarray) -> np.ndarray:
        """Readings (N, C, L) -> model input (float32)."""
        offset = np.asarray(self.input_offset, np.float32).reshape(-1, 1)
        scale = np.asarray(self.input_scale, np.float32).reshape(-1, 1)
        return ((np.asarray(x, np.float32) - offset) * scale).astype(np.float32)


@dataclass(frozen=True)
class WindowSet:
    """Windows of readings in time order. y: class index in the model's logit order, -1 when the window has
    no label; recording: which recording (file) it comes from; start: its first sample there."""
    x: np.ndarray          # float32 (N, C, L)
    y: np.ndarray          # int64 (N,)
    recording: np.ndarray  # int64 (N,)
    start: np.ndarray      # int64 (N,)

    def __len__(self):
        return len(self.y)

    def select(self, keep) -> "WindowSet":
        return WindowSet(self.x[keep], self.y[keep], self.recording[keep], self.start[keep])

    @staticmethod
    def concat(parts, channels: int, window: int) -> "WindowSet":
        if not parts:
            return WindowSet(np.zeros((0, channels, window), np.float32), *(np.zeros(0, np.int64),) * 3)
        return WindowSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "recording", "start")))


def run_windows(labels: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and labels inside runs of one label (samples without a label form runs too): from each
    run's first sample, one every `hop` samples while a whole window fits in the run. So every sample of a
    window has the window's label, and a run shorter than a window gives none."""
    labels = np.asarray(labels)
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    begins, ends = np.r_[0, change], np.r_[change, len(labels)]
    counts = np.maximum(0, (ends - begins - window) // hop + 1)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # index of each run's first window
    starts = np.repeat(begins, counts) + hop * (np.arange(counts.sum()) - first)
    return starts.astype(np.int64), labels[starts]


class Windower:
    """run_windows over a recording that may arrive in pieces (a live stream): push samples, get the windows
    that filled. Pushing a whole recording at once, or sample by sample, gives the same windows."""

    def __init__(self, window: int, hop: int):
        self.window, self.hop = window, hop
        self.values = self.labels = None  # samples kept: the start of the next window of the last run
        self.offset = 0  # where the first sample kept is in the recording

    def push(self, values: np.ndarray, labels: np.ndarray):
        """values (n, C) readings, labels (n,) -> (x (k, C, window) float32, y (k,), start (k,))."""
        if self.values is not None:
            values, labels = np.concatenate([self.values, values]), np.concatenate([self.labels, labels])
        starts, y = run_windows(labels, self.window, self.hop)
        x = values[starts[:, None] + np.arange(self.window)].transpose(0, 2, 1).astype(np.float32)
        changes = np.flatnonzero(labels[1:] != labels[:-1])
        last_run = int(changes[-1]) + 1 if len(changes) else 0
        keep = int(starts[-1]) + self.hop if len(starts) and starts[-1] >= last_run else last_run
        self.values, self.labels = values[keep:], labels[keep:]
        out = (x, y, starts + self.offset)
        self.offset += keep
        return out


class Resampler:
    """Readings at any times -> readings every 1/rate s from the first sample's time: linear interpolation
    between the two samples around each new time; `tags` (labels, line numbers) of the nearer sample.
    Works on a recording that arrives in pieces, like Windower."""

    def __init__(self, rate_hz: float):
        self.rate = float(rate_hz)
        self.next = 0  # index of the next output time
        self.t0 = None
        self.last = None  # (t, values, tags) of the last sample pushed: the left end of the next interval

    def push(self, t: np.ndarray, values: np.ndarray, tags: np.ndarray):
        """t (n,) seconds, increasing; values (n, C); tags (n, ...) -> (values (m, C), tags (m, ...))."""
        if self.last is not None:
            t, values, tags = (np.concatenate([a[None], b]) for a, b in zip(self.last, (t, values, tags)))
        if len(t) == 0:
            return values, tags
        if self.t0 is None:
            self.t0 = float(t[0])
        self.last = (t[-1], values[-1], tags[-1])
        end = int(np.floor((t[-1] - self.t0) * self.rate + 1e-9)) + 1  # output times up to the last sample
        if len(t) < 2 or end <= self.next:
            return values[:0], tags[:0]
        times = self.t0 + np.arange(self.next, end) / self.rate
        self.next = end
        i = np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 2)
        frac = np.clip((times - t[i]) / (t[i + 1] - t[i]), 0.0, 1.0)[:, None]
        mixed = values[i] + frac * (values[i + 1] - values[i])
        on_sample = np.where(frac == 0, values[i], np.where(frac == 1, values[i + 1], mixed))
        return on_sample, tags[np.where(frac[:, 0] <= 0.5, i, i + 1)]


def rates_match(a: float, b: float) -> bool:
    """Two sample rates are the same within 1% (timestamps jitter)."""
    return abs(a / b - 1.0) <= 0.01

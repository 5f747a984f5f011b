"""Where windows come from (docs/data.md): one small interface over the UCI HAPT data set, a user's recordings
(CSV, Edge Impulse JSON, NPZ; one file or a folder of them) and a live CSV stream on standard input (`-`).

A source has
  live                                   windows arrive while streaming (stdin): their number is not known
                                         ahead and the stream cannot be replayed (no --resume)
  record()                               what a run record says about the data (docs/monitor.md)
  notes                                  what the user should know before streaming (missing readings)
  iter_windows(spec, classes, resample)  WindowSets in stream order: all at once for files, one per filled
                                         window for a live stream
`spec` (windows.WindowSpec) says how the model takes readings; `classes` (recording.ClassMap) turns label
text into class indices; `resample` allows recordings at another sample rate (linear interpolation)."""
import hashlib
import itertools
import queue
import sys
import threading
from pathlib import Path

import numpy as np

from mcu_train.data.csvfile import CsvLayout, data_lines, delimiter_of, read_csv, split_rows
from mcu_train.data.edge_impulse import read_edge_impulse
from mcu_train.data.hapt import person_windows, placement_rotation
from mcu_train.data.npzfile import NpzWindows, read_npz
from mcu_train.data.recording import Recording, rate_of
from mcu_train.data.windows import Resampler, Windower, WindowSet, rates_match
from mcu_train.errors import DataError, McuTrainError

FORMATS = {".csv": "csv", ".json": "edge-impulse", ".npz": "npz"}
STDIN = "-"


class Cutter:
    """One recording's readings -> windows as the model takes them: its sample rate checked against the
    model's (or resampled to it with --resample), then windows inside runs of one label (run_windows).
    Readings may come all at once or in pieces."""

    def __init__(self, spec, name, rate_hz, resample):
        self.resampler = None
        model_rate = spec.sample_rate_hz
        if model_rate and rate_hz and not rates_match(rate_hz, model_rate):
            if not resample:
                raise DataError(f"{name} is sampled at {rate_hz:.4g} Hz, the model at {model_rate:.4g} Hz: "
                                "record at the model's rate, or pass --resample")
            self.resampler = Resampler(model_rate)
        self.windower = Windower(spec.window, spec.hop)

        self.samples = 0  # at the model's rate

    def push(self, times, values, y):
        if self.resampler is not None:
            values, y = self.resampler.push(times, values, y)
        self.samples += len(values)
        return self.windower.push(values, y)


def _missing_note(rec: Recording, invalid_windows: int) -> list[str]:
    bad = np.flatnonzero(~np.isfinite(rec.values).all(axis=1))
    if not len(bad):
        return []
    return [f"{rec.at(bad[0])}: a reading is missing or not a number ({len(bad)} samples in this file): "
            f"{invalid_windows} windows holding one are sent flagged invalid"]


class FileSource:
    """Recordings in a file, or in a folder (its .csv, .json and .npz files in name order, one recording
    each). Read when opened, so a bad file is refused before anything starts."""
    live = False

    def __init__(self, path, wanted=(), count=None):
        self.path = Path(path)
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FORMATS)
            if not files:
                raise DataError(f"{self.path}: no .csv, .json or .npz files in this folder")
        elif self.path.is_file():
            if self.path.suffix.lower() not in FORMATS:
                raise DataError(f"{self.path}: unknown format: .csv, .json (Edge Impulse) or .npz")
            files = [self.path]
        else:
            raise DataError(f"{self.path}: no such file or folder")
        self.files = files
        self.formats = sorted({FORMATS[f.suffix.lower()] for f in files})
        self.recordings, hashes = [], []
        for f in files:
            raw = f.read_bytes()
            hashes.append(hashlib.sha256(raw).hexdigest())
            rec = self._read(f, raw, wanted, count)
            if not wanted and count is None:  # no model yet (pretrain): the first file names the channels
                wanted, count = rec.channels, len(rec.channels)
            self.recordings.append(rec)
        self.sha256 = hashes[0] if not self.path.is_dir() else \
            hashlib.sha256("".join(f"{h}  {f.name}\n" for f, h in zip(files, hashes)).encode()).hexdigest()
        self.notes = []

    @staticmethod
    def _read(path, raw, wanted, count):
        kind = FORMATS[path.suffix.lower()]
        if kind == "npz":
            return read_npz(str(path), raw, count)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        read = read_csv if kind == "csv" else read_edge_impulse
        return read(str(path), text, wanted, count)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.recordings[0].channels

    def label_texts(self) -> set[str]:
        return {str(t) for rec in self.recordings for t in np.unique(rec.labels)}

    def record(self) -> dict:
        return {"source": str(self.path), "format": "+".join(self.formats), "sha256": self.sha256,
                "files": [f.name for f in self.files]}

    def windows(self, spec, classes, resample=False) -> WindowSet:
        """Every window of every recording, in file order then time order."""
        parts, self.notes = [], []
        for k, rec in enumerate(self.recordings):
            y = classes.indices(rec)
            if isinstance(rec, NpzWindows):
                parts.append(self._cut_already(k, rec, y, spec))
                continue
            rate = rec.sample_rate()
            cutter = Cutter(spec, rec.name, rate, resample)
            times = rec.times if rec.times is not None or rate is None else np.arange(len(y)) / rate
            x, yw, start = cutter.push(times, rec.values, y)
            if cutter.samples < spec.window:
                raise DataError(f"{rec.name}: {cutter.samples} samples, shorter than one window ({spec.window} "
                                "samples)")
            parts.append(WindowSet(x, yw, np.full(len(yw), k, np.int64), start))
            self.notes += _missing_note(rec, int((~np.isfinite(x).all(axis=(1, 2))).sum()))
        windows = WindowSet.concat(parts, spec.num_channels, spec.window)
        if not len(windows):
            raise DataError(f"{self.path}: no window: no run of samples with one label is as long as a window "
                            f"({spec.window} samples)")
        return windows

    @staticmethod
    def _cut_already(k, rec: NpzWindows, y, spec) -> WindowSet:
        if rec.x.shape[1:] != (spec.num_channels, spec.window):
            raise DataError(f"{rec.name}: windows of shape {rec.x.shape[1:]}; the model takes "
                            f"({spec.num_channels}, {spec.window})")
        if rec.rate_hz and spec.sample_rate_hz and not rates_match(rec.rate_hz, spec.sample_rate_hz):
            raise DataError(f"{rec.name} is sampled at {rec.rate_hz:.4g} Hz, the model at "
                            f"{spec.sample_rate_hz:.4g} Hz, and its windows are already cut: they cannot be resampled")
        return WindowSet(rec.x, y, np.full(len(y), k, np.int64), np.zeros(len(y), np.int64))

    def iter_windows(self, spec, classes, resample=False):
        yield self.windows(spec, classes, resample)


class StdinSource:
    """CSV rows from standard input, as a sensor logger prints them: the header and the first row are read
    when opened; then each window is yielded as soon as it fills. The sample rate (when there is a time
    column) is measured over the first window's rows."""
    live = True
    name = "stdin"

    def __init__(self, stream=None, wanted=(), count=None):
        stream = stream or sys.stdin
        self.lines = data_lines(iter(stream.readline, ""))
        header, first = next(self.lines, None), next(self.lines, None)
        if first is None:
            raise DataError("stdin: ended before a header line and one row")
        self.delimiter = delimiter_of(header[1])
        self.first = first
        self.layout = CsvLayout(self.name, self._cells(header[1]), header[0], self._cells(first[1]), first[0],
                                wanted, count)
        self.notes = []

    def _cells(self, text):
        return split_rows([text], self.delimiter)[0]

    @property
    def channels(self) -> tuple[str, ...]:
        return self.layout.channel_names

    def record(self) -> dict:
        return {"source": STDIN, "format": "csv", "sha256": None, "files": []}

    def iter_windows(self, spec, classes, resample=False):
        pending, cutter, windows = [], None, 0
        for number, text in itertools.chain([self.first], self.lines):
            times, values, labels = self.layout.parse([self._cells(text)], [number])
            rec = Recording(self.name, values, labels, np.array([number]), "line", self.layout.channel_names, times)
            pending.append((times, values, classes.indices(rec)))
            if cutter is None and len(pending) < spec.window:
                continue  # the sample rate is measured over the first window's rows
            cutter = cutter or Cutter(spec, self.name, rate_of(_joined(pending)[0]), resample)
            x, y, start = cutter.push(*_joined(pending))
            pending, windows = [], windows + len(y)
            if len(y):
                yield WindowSet(x, y, np.zeros(len(y), np.int64), start)
        if pending:  # it ended before a window's worth of rows
            x, y, start = Cutter(spec, self.name, rate_of(_joined(pending)[0]), resample).push(*_joined(pending))
            windows += len(y)
            if len(y):
                yield WindowSet(x, y, np.zeros(len(y), np.int64), start)
        if not windows:
            raise DataError(f"stdin ended before a window filled (a window is {spec.window} samples of one label)")


def _joined(samples):
    """(times or None, values, class indices) of several parsed rows."""
    times = None if samples[0][0] is None else np.concatenate([s[0] for s in samples])
    return times, np.concatenate([s[1] for s in samples]), np.concatenate([s[2] for s in samples])


class HaptSource:
    """One HAPT person's windows (docs/data.md), optionally under the placement shift: as `--dataset hapt`
    always streamed them."""
    live = False

    def __init__(self, person, shift="none", seed=0):
        if shift not in ("none", "rotate"):
            raise McuTrainError(f"unknown shift {shift!r}: none or rotate")
        self.person, self.shift, self.seed = person, shift, seed
        self.rotation = placement_rotation(person, seed) if shift == "rotate" else None
        self.notes = []

    def record(self) -> dict:
        shift = None if self.rotation is None else {"kind": "rotate", "rotation": self.rotation.tolist()}
        return {"dataset": "hapt", "person": self.person, "shift": shift}

    def iter_windows(self, spec=None, classes=None, resample=False):
        w = person_windows(self.person, shift=self.rotation is not None, seed=self.seed)
        yield WindowSet(w.x, w.y, w.recording, w.start)


def open_source(source, wanted=(), count=None):
    """A FileSource, or a StdinSource for "-". `wanted`, `count`: the model's channel names and number."""
    return StdinSource(None, wanted, count) if str(source) == STDIN else FileSource(source, wanted, count)


class LiveFeed:
    """A live source's windows gathered by a thread, so the monitor can collect replies while it waits for
    the next window. get(timeout) returns a WindowSet or None (nothing yet, or the source ended: `done`),
    and raises what the source raised (a DataError naming the line)."""

    def __init__(self, chunks):
        self.queue = queue.Queue()
        self.done = False
        threading.Thread(target=self._run, args=(chunks,), daemon=True).start()

    def _run(self, chunks):
        try:
            for chunk in chunks:
                self.queue.put(chunk)
        except Exception as e:  # handed to the monitor's thread, which reports it
            self.queue.put(e)
        else:
            self.queue.put(None)

    def get(self, timeout=0.0):
        if self.done:
            return None
        try:
            item = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None
        if item is None or isinstance(item, Exception):
            self.done = True
            if item is not None:
                raise item
        return item

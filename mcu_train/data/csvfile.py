"""CSV recordings (docs/data.md): a header, then one row per sample. Channel columns (named as the model names
its channels, else the first numeric columns), an optional time column, an optional `label` column. Blank
lines and lines starting with '#' are skipped. A file is read at once; a live stream (`-`) row by row with
the same rules (CsvLayout.parse)."""
import csv

import numpy as np

from mcu_train.data.recording import Recording, pick_channels
from mcu_train.errors import DataError

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
TIME_NAMES = ("time", "t", "timestamp")
LABEL_COLUMN = "label"


def time_unit(name: str) -> float | None:
    """Seconds per unit of a time column, None when the column is not one: `time` or `t` are in seconds,
    `timestamp` in milliseconds (as in Edge Impulse's CSV files); a suffix _s, _ms or _us says the unit."""
    key = name.strip().lower()
    if key in ("time", "t"):
        return 1.0
    if key == "timestamp":
        return 1e-3
    base, _, unit = key.rpartition("_")
    return TIME_UNITS[unit] if base in TIME_NAMES and unit in TIME_UNITS else None


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def delimiter_of(header: str) -> str:
    """Comma, else semicolon, else tab: whichever the header line uses first in that order."""
    return next((d for d in ",;\t" if d in header), ",")


def data_lines(lines, first_number=1):
    """(line number, text) of the lines that hold data: not blank, not a '#' comment."""
    for number, text in enumerate(lines, first_number):
        text = text.rstrip("\r\n")
        if text.strip() and not text.lstrip().startswith("#"):
            yield number, text


def split_rows(texts, delimiter):
    return [[cell.strip() for cell in row] for row in csv.reader(texts, delimiter=delimiter)]


def numbers(cells, lines, name, column) -> np.ndarray:
    """Cell text -> float64; an empty cell is a missing reading (NaN). Anything else is a DataError naming
    the line."""
    try:
        return np.array([c if c else "nan" for c in cells], np.float64)
    except ValueError:
        bad = next(k for k, c in enumerate(cells) if c and not is_number(c))
        raise DataError(f"{name} line {lines[bad]}: {column} is {cells[bad]!r}, not a number") from None


class CsvLayout:
    """Which column holds what, from the header and the first data row (a channel column must be numeric
    there, unless the model names it)."""

    def __init__(self, name, header, header_line, first_row, first_line, wanted=(), count=None):
        self.name, self.header = name, header
        if header and all(is_number(h) for h in header if h):
            raise DataError(f"{name} line {header_line}: the first line holds numbers, not column names: add a "
                            f"header line, e.g. time,{','.join(wanted or ('acc_x', 'acc_y', 'acc_z'))},label")
        units = [time_unit(h) for h in header]
        self.time = next((i for i, u in enumerate(units) if u), None)
        self.seconds_per_unit = units[self.time] if self.time is not None else None
        self.label = next((i for i, h in enumerate(header) if h.lower() == LABEL_COLUMN), None)
        self._check_width([first_row], [first_line])
        numeric = [i not in (self.time, self.label) and (is_number(c) or not c) for i, c in enumerate(first_row)]
        self.channels = pick_channels(header, numeric, wanted, count, f"{name} line {header_line}")
        self.last_time = None

    @property
    def channel_names(self):
        return tuple(self.header[i] for i in self.channels)

    def _check_width(self, rows, lines):
        for row, line in zip(rows, lines):
            if len(row) != len(self.header):
                raise DataError(f"{self.name} line {line}: {len(row)} fields, the header has {len(self.header)} "
                                f"({','.join(self.header)})")

    def parse(self, rows, lines):
        """Rows of cell text -> (times in seconds or None, values (n, C) float64, labels (n,) text)."""
        self._check_width(rows, lines)
        values = np.stack([numbers([r[i] for r in rows], lines, self.name, self.header[i])
                           for i in self.channels], axis=1).reshape(len(rows), len(self.channels))
        times = None
        if self.time is not None:
            column = self.header[self.time]
            cells = [r[self.time] for r in rows]
            times = numbers(cells, lines, self.name, column) * self.seconds_per_unit
            previous = np.r_[self.last_time if self.last_time is not None else -np.inf, times[:-1]]
            bad = np.flatnonzero(~(times > previous))  # also catches a missing (NaN) time
            if len(bad):
                k = bad[0]
                raise DataError(f"{self.name} line {lines[k]}: {column} {cells[k] or '(empty)'} does not come after "
                                "the previous row's: rows must be in time order")
            if len(times):
                self.last_time = times[-1]
        labels = np.array([r[self.label] for r in rows] if self.label is not None else [""] * len(rows), str)
        return times, values, labels


def read_csv(name: str, text: str, wanted=(), count=None) -> Recording:
    """A whole CSV file (its text) as one recording."""
    lines = list(data_lines(text.splitlines()))
    if len(lines) < 2:
        raise DataError(f"{name}: {'no header' if not lines else 'a header but no rows'}: nothing to read")
    delimiter = delimiter_of(lines[0][1])
    numbers_, rows = [n for n, _ in lines], split_rows([t for _, t in lines], delimiter)
    layout = CsvLayout(name, rows[0], numbers_[0], rows[1], numbers_[1], wanted, count)
    times, values, labels = layout.parse(rows[1:], numbers_[1:])
    return Recording(name, values, labels, np.array(numbers_[1:], np.int64), "line", layout.channel_names, times)

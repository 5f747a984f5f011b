"""Edge Impulse data-acquisition JSON (docs/data.md): `payload.interval_ms`, `payload.sensors` (names),
`payload.values` (one row per sample, or one number per sample for a single sensor). The label is the file's
`label` field when it has one (empty or null: no label), else the file name up to its first dot
(`walking.3f2a.json` is `walking`), as Edge Impulse's uploader does. The signature is not checked."""
import json
from pathlib import Path

import numpy as np

from mcu_train.data.recording import Recording, pick_channels
from mcu_train.errors import DataError


def label_of(name: str, document: dict) -> str:
    if "label" in document:
        return "" if document["label"] is None else str(document["label"])
    return Path(name).name.split(".")[0]


def read_edge_impulse(name: str, text: str, wanted=(), count=None) -> Recording:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{name} line {e.lineno}: not valid JSON ({e.msg})") from None
    payload = document.get("payload") if isinstance(document, dict) else None
    if not isinstance(payload, dict) or not all(k in payload for k in ("interval_ms", "sensors", "values")):
        raise DataError(f"{name}: not an Edge Impulse data-acquisition file (it needs payload.interval_ms, "
                        "payload.sensors and payload.values)")
    interval, sensors, values = payload["interval_ms"], payload["sensors"], payload["values"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise DataError(f"{name}: payload.interval_ms is {interval!r}, not a positive number")
    if not isinstance(sensors, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                                for s in sensors):
        raise DataError(f"{name}: payload.sensors must be a list of {{\"name\": ..., \"units\": ...}}")
    names = [s["name"] for s in sensors]
    if not isinstance(values, list):
        raise DataError(f"{name}: payload.values must be a list of samples")
    rows = [v if isinstance(v, list) else [v] for v in values]
    for i, row in enumerate(rows):
        if len(row) != len(names) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                             for v in row):
            raise DataError(f"{name} payload.values[{i}]: {json.dumps(values[i])} is not {len(names)} numbers "
                            f"(one per sensor: {', '.join(names)})")
    columns = pick_channels(names, [True] * len(names), wanted, count, name)
    readings = np.array(rows, np.float64).reshape(len(rows), len(names))[:, columns]  # null: a missing reading
    labels = np.full(len(rows), label_of(name, document))
    return Recording(name, readings, labels, np.arange(len(rows), dtype=np.int64), "payload.values[]",
                     tuple(names[c] for c in columns), rate_hz=1000.0 / float(interval))

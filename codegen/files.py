"""Writing files so that a reader never sees half of one."""
import os
from pathlib import Path


def write_atomically(path, data: bytes) -> Path:
    """Write to a temporary file next to `path`, then rename it over `path`; on error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_npz_atomically(path, **arrays) -> Path:
    import io

    import numpy as np
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_atomically(path, buf.getvalue())


def load_npz_array(path, what="inputs"):
    """The array named 'x' in an .npz, or its only array; McuTrainError otherwise."""
    import numpy as np

    from codegen.errors import McuTrainError
    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        raise McuTrainError(f"cannot read {what} {path}: {e}") from None
    keys = list(data.keys())
    if "x" in keys:
        return data["x"]
    if len(keys) == 1:
        return data[keys[0]]
    raise McuTrainError(f"{path} holds arrays {keys}: name the {what} 'x'")


def check_real_array(x, what):
    """x as float32 when it holds real numbers, all finite; McuTrainError naming the problem otherwise (the
    first non-finite value by its index)."""
    import numpy as np

    from codegen.errors import McuTrainError
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise McuTrainError(f"{what} has dtype {x.dtype}: it must hold real numbers (float or int)")
    if x.size == 0:
        raise McuTrainError(f"{what} is empty (shape {tuple(x.shape)})")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise McuTrainError(f"{what} holds {x[index]} at index {list(index)} ({int(bad.sum())} non-finite values "
                            "in all): every value must be finite")
    return x

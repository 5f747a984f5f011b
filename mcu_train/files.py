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

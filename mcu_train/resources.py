"""Where the parts that are not Python live, and where commands write.

Firmware sources, board folders, the default model with its calibration windows, and the QEMU plugin source
ship inside the wheel, under mcu_train/assets/ (pyproject.toml maps the repository's top-level folders there);
a source checkout uses those top-level folders themselves. Commands never write here: their outputs go to
the current folder (OUTPUT_DIR, ./build) or where -o says."""
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _shipped(name):
    for base in (_PACKAGE / "assets", _CHECKOUT):
        if (base / name).is_dir():
            return base / name
    raise FileNotFoundError(f"mcu-train is installed without its {name}/ folder: reinstall the package")


FIRMWARE_DIR = _shipped("firmware")
BOARDS_DIR = _shipped("boards")
MODELS_DIR = _shipped("models")
TOOLS_DIR = _shipped("tools")
DEFAULT_MODEL = MODELS_DIR / "har.onnx"
DEFAULT_CALIB = MODELS_DIR / "har_calib.npz"

OUTPUT_DIR = Path("build")  # relative: the current folder's build/


def shipped_path(path):
    """`path` as given, or, when it names one of the shipped models (models/har.onnx) and does not exist
    here, the shipped file."""
    path = Path(path)
    if not path.exists() and path.parts[:1] == ("models",) and (MODELS_DIR / Path(*path.parts[1:])).exists():
        return MODELS_DIR / Path(*path.parts[1:])
    return path

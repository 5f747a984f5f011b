"""Where the project's non-Python parts live (the repository checkout next to this package)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARDS_DIR = ROOT / "boards"
FIRMWARE_DIR = ROOT / "firmware"
BUILD_DIR = ROOT / "build"

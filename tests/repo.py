"""The checkout the tests run in (docs, the committed model), as opposed to what the package ships."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

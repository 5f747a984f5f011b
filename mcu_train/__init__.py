"""mcu-train: compile an early-exit CNN to int8 C and keep training it on a Cortex-M microcontroller.

The `mcu-train` command is a thin layer over mcu_train.api, which scripts can use directly."""
from codegen import __version__  # noqa: F401

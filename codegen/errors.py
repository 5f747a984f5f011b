"""Errors a user can cause and fix: the CLI turns each into one clear line and exit code 2. The compiler sits
at the bottom, so the project's base class lives here; the host package adds its own kinds (mcu_train.errors)."""


class McuTrainError(Exception):
    """Base class: anything a user can cause and fix (bad input, missing tool, board gone)."""


class CompileError(McuTrainError):
    """The model cannot be compiled: the message names the node, tensor or number at fault."""

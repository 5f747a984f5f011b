"""Exceptions the CLI turns into one clear line and a non-zero exit code. The base class is shared with the
compiler (codegen.errors)."""
from codegen.errors import CompileError, McuTrainError  # noqa: F401


class BoardTimeout(McuTrainError):
    """The board did not answer within the stated time."""


class BoardGone(McuTrainError):
    """The serial connection closed (the emulator exited, the cable was pulled)."""


class ProtocolError(McuTrainError):
    """The board answered with something the protocol does not allow, or gave up after retries."""


class BuildError(McuTrainError):
    """The cross-compiler or linker failed, or the image does not fit the board."""


class ToolMissing(BuildError):
    """A program the command needs (cross-compiler, QEMU) is not on PATH."""


class DatasetError(McuTrainError):
    """The HAPT data package is missing or corrupt, or a split or person id is invalid."""


class DataError(DatasetError):
    """A user's recording cannot be used as it is: the message names the file and the line (or value)."""

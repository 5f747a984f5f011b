"""Exceptions the CLI turns into one clear line and a non-zero exit code."""


class McuTrainError(Exception):
    """Base class: anything a user can cause and fix (bad input, missing tool, board gone)."""


class BoardTimeout(McuTrainError):
    """The board did not answer within the stated time."""


class ProtocolError(McuTrainError):
    """The board answered with something the protocol does not allow, or gave up after retries."""


class BuildError(McuTrainError):
    """The cross-compiler or linker failed, or the image does not fit the board."""


class DatasetError(McuTrainError):
    """The HAPT data package is missing or corrupt, or a split or person id is invalid."""

"""Real boards: the firmware is flashed through pyOCD's Python API (the target named in the manifest), verified
by reading the flash back, and the board reset; its serial line is the USB serial port found by the manifest's
VID/PID (mcu_train.boards.ports). Nothing here is specific to one board."""
from mcu_train.boards.ports import find_port, link_timeout
from mcu_train.boards.runner import BoardRunner
from mcu_train.errors import McuTrainError
from mcu_train.link import connect_serial


class FlashError(McuTrainError):
    """Flashing a real board failed; the message says what to check."""


def pyocd_knows(target):
    """Is `target` one of pyOCD's built-in targets or in a CMSIS pack it has installed?"""
    from pyocd.target import TARGET
    from pyocd.target.pack.pack_target import ManagedPacks
    return target in TARGET or any(d.part_number.lower() == target for d in ManagedPacks.get_installed_targets())


def find_probe(board, probe_id=None):
    """The one debug probe to use: `probe_id` (a unique ID, or part of one) among those connected, or the only
    one connected."""
    from pyocd.core.helpers import ConnectHelper
    probes = ConnectHelper.get_all_connected_probes(blocking=False, unique_id=probe_id, print_wait_message=False)
    if not probes:
        which = f"with an ID containing {probe_id!r} " if probe_id else ""
        raise FlashError(f"no debug probe {which}found for {board.name}: check that the board is plugged in by "
                         f"{board.usb.get('connect', 'its debug USB port')}, that the cable carries data, that no other "
                         "program (a debugger, STM32CubeProgrammer, OpenOCD) holds the probe, and that your user "
                         "may open USB devices (udev rules for ST-LINK/J-Link/CMSIS-DAP); `pyocd list` shows what "
                         "pyOCD sees")
    if len(probes) > 1:
        listed = "; ".join(f"{p.unique_id} ({p.description})" for p in probes)
        raise FlashError(f"several debug probes are connected: {listed}; pick one with --probe ID")
    check_probe_board(board, probes[0])
    return probes[0]


def check_probe_board(board, probe):
    """On-board probes (ST-LINK, DAPLink, J-Link OB) tell which board they sit on: refuse another board's target
    before anything is written."""
    info = probe.associated_board_info
    if info is not None and info.target and info.target != board.pyocd_target:
        raise FlashError(f"the probe {probe.unique_id} sits on a {info.name} (pyOCD target {info.target}), not on "
                         f"a {board.name} ({board.pyocd_target}): build and flash for that board's --board, or "
                         "connect the right board")


def _explain(board, error):
    """A pyOCD failure, as what to check."""
    text = str(error)
    if "lock" in text.lower() or "protect" in text.lower():
        return (f"the {board.pyocd_target} chip looks locked (read-out protection): {text}. Unlocking erases it: "
                f"`pyocd erase --chip -t {board.pyocd_target}` (STM32: or reset the RDP level with "
                "STM32CubeProgrammer), then flash again")
    return (f"pyOCD could not program {board.name} as {board.pyocd_target}: {text}. Check that the board is "
            f"a {board.description.split(',')[0]} (the target must match the chip), that it is powered, and "
            "that the chip is not read-protected")


def flash(board, elf, probe_id=None, progress=None):
    """Program `elf` into `board` through pyOCD, read it back, reset the board. `progress(fraction)`."""
    from pyocd.core.session import Session
    from pyocd.flash.file_programmer import FileProgrammer

    from mcu_train.boards.uf2 import flash_image
    target = board.pyocd_target
    if not pyocd_knows(target):
        raise FlashError(f"pyOCD does not know the target {target!r} of {board.name}: install its CMSIS pack "
                         f"once (needs internet): `pyocd pack install {target}`")
    probe = find_probe(board, probe_id)
    try:
        with Session(probe, target_override=target, auto_unlock=False, hide_programming_progress=True) as session:
            FileProgrammer(session, progress=progress).program(str(elf), file_format="elf")
            for address, data in flash_image(elf).items():
                if bytes(session.target.read_memory_block8(address, len(data))) != data:
                    raise FlashError(f"verifying {board.name} failed: the flash at {address:#010x} differs "
                                     "from the image; flash again, and check the board's power")
            session.target.reset()
    except FlashError:
        raise
    except Exception as e:  # pyOCD's own exceptions: no probe access, wrong target, locked chip, transfer faults
        raise FlashError(_explain(board, e)) from e


class PyocdRunner(BoardRunner):
    """A development board on the desk: flashed through pyOCD, talked to over its USB serial port."""
    how = "pyOCD"
    counter_unit = "cycles"

    def start(self, elf, probe=None, port=None, progress=None, **options):
        """Flash `elf` (then verify and reset); `probe`: the probe's unique ID; `port`: the serial port (default:
        found by the manifest's USB VID/PID)."""
        from pathlib import Path
        if not Path(elf).is_file():
            raise McuTrainError(f"firmware {elf} not found")
        flash(self.board, elf, probe, progress)
        self.port = port
        return self

    @property
    def url(self):
        if not getattr(self, "port", None):
            self.port = find_port(self.board)
        return self.port

    @property
    def link_timeout(self):
        return link_timeout(self.board)

    def open_transport(self, timeout=5.0):
        return connect_serial(self.url, timeout, baudrate=self.board.baud)

"""Board manifests (boards/<name>/board.toml): CPU and FPU, memory map, UART, clock, where the trained state is
persisted, how to run it (QEMU, a Linux process, or flashed through pyOCD) and how its serial port is found."""
import tomllib
from dataclasses import dataclass, field
from functools import cache

from mcu_train.errors import McuTrainError
from mcu_train.resources import BOARDS_DIR


@dataclass(frozen=True)
class Region:
    origin: int
    size: int

    def contains(self, address):
        return self.origin <= address < self.origin + self.size


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    cpu: str
    fpu: str
    float_abi: str
    dsp: bool
    clock_hz: int
    emulated: bool
    flash: Region
    ram: Region
    stack_bytes: int
    uart: dict
    run: dict = field(default_factory=dict)
    persist: dict = field(default_factory=dict)  # [persist]: where the trained state lives (docs/boards.md)
    usb: dict = field(default_factory=dict)  # [usb]: vid, pids of the serial port's USB bridge (real boards)
    sources: tuple = ()  # shared board files it needs besides the UART driver (boards/common/)
    boot2: bool = False  # RP2040: a second-stage boot with its CRC-32 in the first 256 bytes of flash
    uf2_family: int = 0  # a UF2 file (for a USB drive bootloader) is written with this family ID
    mve: bool = False  # Helium: convolutions run on int8 vectors, not the DSP path's widened weights

    @property
    def is_host(self):
        return self.cpu == "host"

    @property
    def qemu_machine(self):
        return self.run.get("qemu_machine")

    @property
    def pyocd_target(self):
        return self.run.get("pyocd_target")

    @property
    def baud(self):
        return self.uart.get("baud", 115_200)

    @property
    def rx_buffer_bytes(self):
        """The firmware's receive ring (a power of two; under QEMU a full ring holds the line back, so a small
        one only costs speed; real boards lose what does not fit)."""
        return self.uart.get("rx_buffer", 1024)

    @property
    def has_dwt(self):
        """Cortex-M3 and above count cycles in the DWT; M0/M0+ have no cycle counter (SysTick instead)."""
        return self.cpu not in ("cortex-m0", "cortex-m0plus", "host")

    @property
    def storage(self):
        """Where the trained state is persisted: the manifest's [persist], or on QEMU boards a file on the host
        reached through semihosting (`kind`, `slot_bytes`, and for flash `slots`, `sectors`, `write_seconds`)."""
        if self.qemu_machine and not self.persist:
            return {"kind": "semihost", "slot_bytes": 0x100000}  # a sparse file: only what is written exists
        if self.is_host:
            return {"kind": "file", "slot_bytes": 0x100000}
        return self.persist

    @property
    def storage_sources(self):
        """The storage drivers (boards/common/storage_<kind>.c) the firmware links."""
        kind = self.storage.get("kind")
        return {"semihost": ["semihost", "file"], None: []}.get(kind, [kind])

    @property
    def ram_size(self):
        return self.ram.size

    @property
    def flash_size(self):
        return self.flash.size

    @property
    def folder(self):
        return BOARDS_DIR / self.name

    def cflags(self):
        """Code generation flags for the cross-compiler (empty for the host board)."""
        if self.is_host:
            return []
        flags = ["-mthumb", f"-mcpu={self.cpu}", f"-mfloat-abi={self.float_abi}"]
        if self.fpu:
            flags.append(f"-mfpu={self.fpu}")
        return flags


def _load(path):
    m = tomllib.loads(path.read_text())
    mem = m["memory"]
    return Board(
        name=m["name"], description=m["description"], cpu=m["cpu"], fpu=m.get("fpu", ""),
        float_abi=m.get("float_abi", ""), dsp=m.get("dsp", False), clock_hz=m["clock_hz"],
        emulated=m["emulated"], flash=Region(**mem["flash"]), ram=Region(**mem["ram"]),
        stack_bytes=mem.get("stack_bytes", 8192), uart=m["uart"], run=m.get("run", {}),
        persist=m.get("persist", {}), usb=m.get("usb", {}), sources=tuple(m.get("sources", ())),
        boot2=m.get("boot2", False), uf2_family=m.get("uf2_family", 0), mve=m.get("mve", False))


@cache
def _all_boards():
    boards = {}
    for path in sorted(BOARDS_DIR.glob("*/board.toml")):
        board = _load(path)
        if board.name != path.parent.name:
            raise McuTrainError(f"{path}: name {board.name!r} differs from its folder")
        boards[board.name] = board
    return boards


def list_boards():
    return list(_all_boards().values())


def get_board(name):
    boards = _all_boards()
    if name not in boards:
        raise McuTrainError(f"unknown board {name!r}; known boards: {', '.join(boards)}")
    return boards[name]


def emulated_boards():
    """The QEMU boards (not the host process)."""
    return [b for b in list_boards() if b.qemu_machine]


def real_boards():
    """The boards flashed through pyOCD."""
    return [b for b in list_boards() if not b.emulated]

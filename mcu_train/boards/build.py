"""Cross-compile firmware for a board from its manifest: arm-none-eabi-gcc for Cortex-M, gcc for `host`."""
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from mcu_train import __version__
from mcu_train.boards.toolchain import require
from mcu_train.boards.uf2 import patch_boot2, write_uf2
from mcu_train.errors import BuildError
from mcu_train.resources import BOARDS_DIR, FIRMWARE_DIR, OUTPUT_DIR

# The portable runtime; main.c is the protocol server.
RUNTIME_SOURCES = ["protocol.c", "crc16.c", "cobs.c"]
# The on-device trainer, built when the model was compiled with --train (model_train.c present).
TRAINER_SOURCES = ["trainer.c", "train_layers.c", "instance_filter.c", "fmath.c", "checkpoint.c", "crc32.c",
                   "train_service.c", "persist.c"]
# A persistence slot holds a page of header, the CONFIG payload and the checkpoint image (firmware/persist.c).
SLOT_HEADER_BYTES = 256
# The trainer's float arithmetic must match the numpy reference bit for bit: no fused multiply-add.
TRAINER_CFLAGS = ["-ffp-contract=off"]
COMMON_CFLAGS = ["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
                 "-fdata-sections", "-fno-math-errno"]


@dataclass
class BuildResult:
    board: object
    elf: Path
    flash_bytes: int
    ram_bytes: int

    def size_line(self):
        b = self.board
        if b.is_host:
            return f"{self.elf.name}: {self.flash_bytes:,} B image (host process, no flash/RAM limits)"
        return (f"{self.elf.name}: flash {self.flash_bytes:,} / {b.flash.size:,} B "
                f"({100 * self.flash_bytes / b.flash.size:.1f}%), RAM {self.ram_bytes:,} / {b.ram.size:,} B "
                f"({100 * self.ram_bytes / b.ram.size:.1f}%, incl. {b.stack_bytes:,} B stack)")


def board_support_sources(board):
    common = BOARDS_DIR / "common"
    if board.is_host:
        return [BOARDS_DIR / "host" / "board_host.c", common / "storage_file.c"]
    storage = [common / f"storage_{kind}.c" for kind in board.storage_sources]
    return [common / f for f in ("startup.c", "board.c", "counter.c", "semihost.c", "uart_rx.c",
                                 *board.sources)] + \
        [common / f"uart_{board.uart['kind']}.c"] + storage + sorted(board.folder.glob("*.c"))  # clocks, pins


def board_defines(board):
    defines = [f'MT_BOARD_NAME="{board.name}"', f"MT_CLOCK_HZ={board.clock_hz}u",
               f"MT_EMULATED={int(board.emulated)}", f'MT_FIRMWARE_VERSION="{__version__}"']
    if not board.is_host:
        uart = board.uart
        defines += [f"MT_UART_BASE={uart['base']:#x}u", f"MT_UART_IRQ={uart['irq']}",
                    f"MT_UART_CLOCK_HZ={uart.get('clock_hz', board.clock_hz)}u", f"MT_UART_BAUD={board.baud}u",
                    f"MT_UART_RX_BUFFER={board.rx_buffer_bytes}u", f"MT_HAVE_DWT={int(board.has_dwt)}"]
    storage = board.storage
    if storage:
        defines.append(f"MT_SLOT_BYTES={storage['slot_bytes']:#x}u")
        for i, address in enumerate(storage.get("slots", ())):
            defines.append(f"MT_SLOT{i}_ADDR={address:#x}u")
        for i, sector in enumerate(storage.get("sectors", ())):
            defines.append(f"MT_SLOT{i}_SECTOR={sector}u")
    if "rcc_enable_reg" in board.uart:
        defines += [f"MT_UART_RCC_ENABLE_REG={board.uart['rcc_enable_reg']:#x}u",
                    f"MT_UART_RCC_ENABLE_BIT={board.uart['rcc_enable_bit']:#x}u"]
    return defines


def _memory_script(board):
    return (f"MEMORY\n{{\n  FLASH (rx) : ORIGIN = {board.flash.origin:#x}, LENGTH = {board.flash.size:#x}\n"
            f"  RAM (rwx) : ORIGIN = {board.ram.origin:#x}, LENGTH = {board.ram.size:#x}\n}}\n"
            f"_stack_size = {board.stack_bytes:#x};\nINCLUDE sections.ld\n")


def _compiler(board):
    return require("gcc" if board.is_host else "arm-none-eabi-gcc", f"to build firmware for {board.name}")


def image_sizes(board, elf_path):
    """(flash bytes, RAM bytes) from the ELF's loadable segments: flash holds what is stored, RAM what
    lives in RAM at run time (data, bss and the stack reserve)."""
    if board.is_host:
        return elf_path.stat().st_size, 0
    flash = ram = 0
    with open(elf_path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            if board.flash.contains(seg["p_paddr"]):
                flash += seg["p_filesz"]
            if board.ram.contains(seg["p_vaddr"]):
                ram += seg["p_memsz"]
    return flash, ram


def build_elf(board, sources, out_elf, include_dirs=(), defines=(), extra_cflags=()):
    """Compile `sources` with the board's support code into `out_elf` (plus a link map next to it, and for a
    board with a USB drive bootloader a .uf2 image). The sources provide main(). Nothing is left at `out_elf`
    if the build fails."""
    out_elf = Path(out_elf)
    out_elf.parent.mkdir(parents=True, exist_ok=True)
    cc = _compiler(board)
    includes = [FIRMWARE_DIR, BOARDS_DIR / "common", *map(Path, include_dirs)]
    cmd = [cc, *board.cflags(), *COMMON_CFLAGS, *extra_cflags,
           *(f"-I{d}" for d in includes), *(f"-D{d}" for d in [*board_defines(board), *defines])]
    all_sources = [*board_support_sources(board), *map(Path, sources)]
    with tempfile.TemporaryDirectory(dir=out_elf.parent) as tmp:
        tmp_elf = Path(tmp) / out_elf.name
        tmp_map = Path(tmp) / "firmware.map"
        if board.is_host:
            cmd += [*map(str, all_sources), "-o", str(tmp_elf), f"-Wl,-Map={tmp_map}", "-lm"]
        else:
            (Path(tmp) / "memory.ld").write_text(_memory_script(board))
            cmd += [*map(str, all_sources), "-o", str(tmp_elf), "-nostartfiles", "-Wl,--gc-sections",
                    f"-L{tmp}", f"-L{BOARDS_DIR / 'common'}", "-T", "memory.ld",
                    "--specs=nano.specs", "--specs=nosys.specs", f"-Wl,-Map={tmp_map}", "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"building for {board.name} failed:\n{proc.stderr.strip()}")
        if board.boot2:
            patch_boot2(tmp_elf)
        if board.uf2_family:
            os.replace(write_uf2(tmp_elf, board.uf2_family), out_elf.with_suffix(".uf2"))
        os.replace(tmp_map, out_elf.with_suffix(".map"))
        os.replace(tmp_elf, out_elf)
    flash, ram = image_sizes(board, out_elf)
    return BuildResult(board, out_elf, flash, ram)


def check_slot_fits(board, meta):
    """A trainer's state must fit one of the board's persistence slots (refused at build time)."""
    if not board.storage:
        return
    config_bytes = 80 + 12 * len(meta["exits"])  # the CONFIG payload (docs/protocol.md)
    payload = config_bytes + meta["train"]["checkpoint_bytes"]
    needed = SLOT_HEADER_BYTES + -(-payload // SLOT_HEADER_BYTES) * SLOT_HEADER_BYTES  # whole pages
    if needed > board.storage["slot_bytes"]:
        raise BuildError(f"the trained state ({needed:,} B with its header and CONFIG) does not fit "
                         f"{board.name}'s persistence slot of {board.storage['slot_bytes']:,} B")


def build_firmware(board, model_dir=None, out_dir=None):
    """The protocol server firmware for `board`, with the compiled model in `model_dir` when given."""
    sources = [FIRMWARE_DIR / "main.c", *(FIRMWARE_DIR / s for s in RUNTIME_SOURCES)]
    includes, defines, extra = [], [], []
    if model_dir is not None:
        model_dir = Path(model_dir)
        meta_path = model_dir / "model.json"
        if not meta_path.is_file():
            raise BuildError(f"{model_dir} is not an output folder of `mcu-train compile` (no model.json)")
        compiled_for = json.loads(meta_path.read_text())["board"]
        if compiled_for != board.name and not board.is_host:
            raise BuildError(f"{model_dir} was compiled for {compiled_for}: run "
                             f"`mcu-train compile ... --board {board.name}` for {board.name}")
        sources += [model_dir / "model.c", FIRMWARE_DIR / "model_service.c",
                    *sorted((FIRMWARE_DIR / "kernels").glob("*.c"))]
        includes += [model_dir, FIRMWARE_DIR / "kernels"]
        defines.append("MT_HAVE_MODEL=1")
        if (model_dir / "model_train.c").is_file():
            check_slot_fits(board, json.loads(meta_path.read_text()))
            sources += [model_dir / "model_train.c", *(FIRMWARE_DIR / s for s in TRAINER_SOURCES)]
            defines.append("MT_HAVE_TRAINER=1")
            extra += TRAINER_CFLAGS
        out_dir = Path(out_dir) if out_dir else model_dir / f"build-{board.name}"
    out_dir = Path(out_dir) if out_dir else OUTPUT_DIR / board.name
    return build_elf(board, sources, out_dir / "firmware.elf", include_dirs=includes, defines=defines,
                     extra_cflags=extra)

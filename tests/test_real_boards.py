"""The real boards (nucleo-f446re, stm32f746g-disco, nrf52840dk, rpi-pico): the default model builds for each,
inference-only and with its trainer, and fits; pyOCD knows their targets by the names the manifests give; the
Pico's boot2 CRC and UF2 file are what its boot ROM and USB drive take; flashing and finding the serial port
fail clearly when there is no probe or no board (there is none on this machine: those paths run for real)."""
import struct
import subprocess
import sys

import pytest
import serial.tools.list_ports
from elftools.elf.elffile import ELFFile
from repo import ROOT
from serial.tools.list_ports_common import ListPortInfo
from test_build import HEAP_SYMBOLS, elf_symbols

from codegen.compile import compile_model
from mcu_train.boards import get_board
from mcu_train.boards.build import build_firmware
from mcu_train.boards.manifest import real_boards
from mcu_train.boards.ports import find_port, link_timeout, wire_seconds
from mcu_train.boards.uf2 import boot2_crc, flash_image, read_uf2
from mcu_train.errors import McuTrainError

REAL = [b.name for b in real_boards()]
MODEL, CALIB = ROOT / "models" / "har.onnx", ROOT / "models" / "har_calib.npz"


def test_the_four_real_boards_are_known():
    assert set(REAL) == {"nucleo-f446re", "stm32f746g-disco", "nrf52840dk", "rpi-pico"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default model compiled and built for a real board: built(name, train) -> (board, BuildResult)."""
    cache = {}

    def get(name, train):
        if (name, train) not in cache:
            board = get_board(name)
            out = tmp_path_factory.mktemp(f"{name}-{train or 'infer'}")
            compile_model(MODEL, board, out, calib=CALIB, quiet=True, train=train)
            cache[name, train] = board, build_firmware(board, out)
        return cache[name, train]
    return get


@pytest.mark.parametrize("train", [None, "exits"])
@pytest.mark.parametrize("name", REAL)
def test_default_model_builds_and_fits(built, name, train):
    board, result = built(name, train)
    assert 0 < result.flash_bytes <= board.flash.size and board.stack_bytes < result.ram_bytes <= board.ram.size
    symbols = elf_symbols(result.elf)
    assert not symbols & HEAP_SYMBOLS
    assert {"uart_irq_handler", "soc_init", "board_uart_overruns"} <= symbols
    assert ("persist_restore" in symbols) == (train is not None)
    with open(result.elf, "rb") as f:
        elf = ELFFile(f)
        vectors = elf.get_section_by_name(".isr_vector")
        assert vectors["sh_addr"] == board.flash.origin + (256 if board.boot2 else 0)
        # The vector table reaches the UART's interrupt; the persistence slots lie outside the image.
        assert vectors["sh_size"] == 4 * (16 + board.uart["irq"] + 1)
        end = max(a + len(d) for a, d in flash_image(result.elf).items())
        assert end <= min(board.storage["slots"])


def test_pico_boot2_crc_and_uf2(built):
    board, result = built("rpi-pico", None)
    assert boot2_crc(b"123456789") == 0x0376E6E7  # the catalogue's check value of CRC-32/MPEG-2
    with open(result.elf, "rb") as f:
        boot2 = ELFFile(f).get_section_by_name(".boot2").data()
    assert len(boot2) == 256 and struct.unpack("<I", boot2[252:])[0] == boot2_crc(boot2[:252])
    uf2 = result.elf.with_suffix(".uf2").read_bytes()
    family, payloads = read_uf2(uf2)
    assert family == 0xE48BFF56  # RP2040
    assert all(a % 256 == 0 and len(p) == 256 for a, p in payloads.items())
    assert min(payloads) == 0x10000000 and payloads[0x10000000] == boot2
    # Every byte of the ELF's flash image is in the UF2 file at its address.
    for address, data in flash_image(result.elf).items():
        for i in range(0, len(data), 97):
            page = (address + i) & ~255
            assert payloads[page][(address + i) - page] == data[i]


def test_pyocd_targets_are_pyocds_own():
    """Each manifest names the target pyOCD itself uses: a built-in target, or the one pyOCD's board list
    gives the board (a pack target)."""
    from pyocd.board.board_ids import BOARD_ID_TO_INFO
    from pyocd.target import TARGET
    for board in real_boards():
        target = board.pyocd_target
        board_id = board.run.get("pyocd_board_id")
        assert target in TARGET or BOARD_ID_TO_INFO[board_id].target == target, board.name
        if board_id:
            assert BOARD_ID_TO_INFO[board_id].target == target


def no_probes():
    from pyocd.core.helpers import ConnectHelper
    return not ConnectHelper.get_all_connected_probes(blocking=False, print_wait_message=False)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mcu_train.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_flash_without_a_probe_says_what_to_check(built):
    if not no_probes():
        pytest.skip("a debug probe is connected to this machine")
    board, result = built("nrf52840dk", None)
    out = cli("flash", "--board", "nrf52840dk", result.elf)
    assert out.returncode == 2 and out.stdout == ""
    assert "no debug probe found for nrf52840dk: check that the board is plugged in by the J-Link" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("flash", "--board", "rpi-pico", result.elf, "--probe", "E6614C311B")
    assert out.returncode == 2 and "no debug probe with an ID containing 'E6614C311B'" in out.stderr


def test_a_probe_on_another_board_is_refused():
    """An on-board probe names its board (pyOCD's board ID): flashing another board's firmware is refused."""
    from pyocd.board.board_ids import BOARD_ID_TO_INFO

    from mcu_train.boards.pyocd import FlashError, check_probe_board

    class OnBoardProbe:  # what pyOCD reports for an ST-LINK on a 32F746GDISCOVERY
        unique_id = "066DFF535155878281151932"
        associated_board_info = BOARD_ID_TO_INFO["0815"]
    with pytest.raises(FlashError, match="sits on a DISCO-F746NG .*stm32f746nghx.*not on a nucleo-f446re"):
        check_probe_board(get_board("nucleo-f446re"), OnBoardProbe)
    check_probe_board(get_board("stm32f746g-disco"), OnBoardProbe)  # the right board passes


def test_flash_a_pack_target_pyocd_lacks_names_the_pack(built):
    from mcu_train.boards.pyocd import pyocd_knows
    if pyocd_knows("stm32f446retx"):
        pytest.skip("the STM32F4 pack is installed here")
    board, result = built("nucleo-f446re", None)
    out = cli("flash", "--board", "nucleo-f446re", result.elf)
    assert out.returncode == 2
    assert "pyocd pack install stm32f446retx" in out.stderr


def port(device, vid, pid, serial_number="0671FF485350"):
    info = ListPortInfo(device)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial_number, "STM32 STLink"
    return info


def test_serial_port_found_by_usb_ids():
    nucleo = get_board("nucleo-f446re")
    if not any(p.vid == 0x0483 for p in serial.tools.list_ports.comports()):
        with pytest.raises(McuTrainError, match=r"no serial port of nucleo-f446re found \(USB 0483:374b"):
            find_port(nucleo)  # this machine's real ports
    ports = [port("/dev/ttyUSB0", 0x0403, 0x6001), port("/dev/ttyACM0", 0x0483, 0x374B)]
    assert find_port(nucleo, ports) == "/dev/ttyACM0"
    ports.append(port("/dev/ttyACM1", 0x0483, 0x374E, "0003002C"))
    with pytest.raises(McuTrainError, match=r"several serial ports could be nucleo-f446re: /dev/ttyACM0 .*"
                                            r"/dev/ttyACM1 .*serial 0003002C.*--port"):
        find_port(nucleo, ports)
    assert find_port(get_board("rpi-pico"), [port("/dev/ttyACM3", 0x2E8A, 0x000C)]) == "/dev/ttyACM3"


def test_monitor_without_port_needs_a_real_board():
    out = cli("monitor", "--board", "mps2-an386")
    assert out.returncode == 2 and "mps2-an386 is emulated: start it with `mcu-train flash" in out.stderr
    if not any(p.vid == 0x0483 for p in serial.tools.list_ports.comports()):
        out = cli("monitor", "--board", "stm32f746g-disco")
        assert out.returncode == 2 and "no serial port of stm32f746g-disco found" in out.stderr


def test_timeouts_follow_the_link_speed():
    assert wire_seconds(770, 115_200) == pytest.approx(0.0668, abs=1e-4)  # one window on the wire
    nucleo = get_board("nucleo-f446re")
    # 4 frames of 1038 bytes each way, twice, plus the longest sector erase: never declared gone while busy.
    assert link_timeout(nucleo) == pytest.approx(2 * wire_seconds(8 * 1038, 115_200) + 2.5)
    slow = type(nucleo)(**{**nucleo.__dict__, "uart": {**nucleo.uart, "baud": 9600}})
    assert link_timeout(slow) > 17 + 2.5

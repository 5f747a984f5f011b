"""A real board's serial port and the link's speed: the port is found by the USB VID/PID of the board's serial
bridge (ST-LINK, J-Link, Debug Probe) from its manifest; host timeouts follow from the baud rate."""
import serial.tools.list_ports

from mcu_train.errors import McuTrainError
from mcu_train.link.connection import DEFAULT_TIMEOUT
from mcu_train.link.protocol import MAX_ENCODED, REPLAY_DEPTH


def candidate_ports(board, ports=None):
    """The serial ports whose USB VID/PID is one of the board's (`ports`: pyserial ListPortInfo, default all)."""
    usb = board.usb
    ports = serial.tools.list_ports.comports() if ports is None else ports
    return sorted((p for p in ports if p.vid == usb.get("vid") and p.pid in usb.get("pids", ())),
                  key=lambda p: p.device)


def find_port(board, ports=None):
    """The one serial port that is `board`'s; a clear error when there is none or several (pass --port)."""
    if not board.usb:
        raise McuTrainError(f"{board.name} has no USB serial port to look for: pass --port")
    found = candidate_ports(board, ports)
    ids = ", ".join(f"{board.usb['vid']:04x}:{pid:04x}" for pid in board.usb["pids"])
    if not found:
        raise McuTrainError(f"no serial port of {board.name} found (USB {ids}): check the USB cable and that the "
                            "board is powered, or pass --port /dev/ttyACM0")
    if len(found) > 1:
        listed = "; ".join(f"{p.device} ({p.description}, serial {p.serial_number})" for p in found)
        raise McuTrainError(f"several serial ports could be {board.name}: {listed}; pick one with --port")
    return found[0].device


def wire_seconds(n_bytes, baud):
    """Time `n_bytes` take on a UART line at `baud` (8N1: 10 bits per byte)."""
    return n_bytes * 10 / baud


def link_timeout(board, in_flight=REPLAY_DEPTH):
    """Seconds to wait for a reply from a real board: twice the time `in_flight` of the largest frames take each
    way on its line (at 115,200 baud a 770-byte window takes ~67 ms), plus the longest flash write (a
    persist_every write happens before a TRAIN reply), and never below the default."""
    frames = 2 * in_flight * (MAX_ENCODED + 2)
    persist = board.storage.get("write_seconds", 0.0) if board.storage else 0.0
    return max(DEFAULT_TIMEOUT, 2 * wire_seconds(frames, board.baud) + persist)

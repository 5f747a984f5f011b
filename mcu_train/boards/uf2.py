"""RP2040 images: the boot2 stage's CRC-32 (patched into the linked ELF) and the UF2 file the Pico's USB drive
bootloader takes (https://github.com/microsoft/uf2: 512-byte blocks of 256 payload bytes)."""
import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

from codegen.files import write_atomically
from mcu_train.errors import BuildError

BOOT2_BYTES = 256
UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
UF2_FLAG_FAMILY_ID = 0x00002000
UF2_PAYLOAD = 256
UF2_BLOCK = struct.Struct("<8I476sI")  # 6 header words, family, ... then data and the end magic


def boot2_crc(data: bytes) -> int:
    """The CRC-32 the RP2040 boot ROM checks: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection, no
    final XOR (CRC-32/MPEG-2)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def patch_boot2(elf_path):
    """Write the CRC of the .boot2 section's first 252 bytes into its last 4 (in the ELF file, in place)."""
    with open(elf_path, "r+b") as f:
        section = ELFFile(f).get_section_by_name(".boot2")
        if section is None or section["sh_size"] != BOOT2_BYTES:
            raise BuildError(f"{elf_path}: .boot2 must be exactly {BOOT2_BYTES} bytes "
                             f"(is {section['sh_size'] if section else 'missing'})")
        f.seek(section["sh_offset"])
        code = f.read(BOOT2_BYTES - 4)
        f.write(struct.pack("<I", boot2_crc(code)))


def flash_image(elf_path):
    """{address: bytes} of everything the ELF stores in flash (loadable segments at their load addresses)."""
    with open(elf_path, "rb") as f:
        return {seg["p_paddr"]: seg.data()[:seg["p_filesz"]] for seg in ELFFile(f).iter_segments()
                if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]}


def uf2_blocks(image: dict, family: int):
    """The image as UF2 blocks: 256-byte payloads at 256-byte aligned addresses (gaps filled with 0xFF)."""
    pages = {}
    for address, data in image.items():
        for i, byte in enumerate(data):
            page = (address + i) & ~(UF2_PAYLOAD - 1)
            pages.setdefault(page, bytearray(b"\xff" * UF2_PAYLOAD))[(address + i) - page] = byte
    ordered = sorted(pages)
    return [UF2_BLOCK.pack(UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_FLAG_FAMILY_ID, page, UF2_PAYLOAD, n,
                           len(ordered), family, bytes(pages[page]).ljust(476, b"\0"), UF2_MAGIC_END)
            for n, page in enumerate(ordered)]


def write_uf2(elf_path, family, out_path=None) -> Path:
    """firmware.uf2 beside the ELF (copy it to the board's USB drive)."""
    out_path = Path(out_path) if out_path else Path(elf_path).with_suffix(".uf2")
    write_atomically(out_path, b"".join(uf2_blocks(flash_image(elf_path), family)))
    return out_path


def read_uf2(data: bytes):
    """(family, {address: payload}) of a UF2 file; raises ValueError on a malformed block."""
    if len(data) % 512:
        raise ValueError(f"UF2 size {len(data)} is not a multiple of 512")
    families, payloads = set(), {}
    for n in range(len(data) // 512):
        m0, m1, flags, address, size, number, total, family, block, end = UF2_BLOCK.unpack_from(data, 512 * n)
        if (m0, m1, end) != (UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END):
            raise ValueError(f"UF2 block {n}: bad magic")
        if number != n or total != len(data) // 512 or not flags & UF2_FLAG_FAMILY_ID or size > 476:
            raise ValueError(f"UF2 block {n}: numbered {number} of {total}, flags {flags:#x}, size {size}")
        families.add(family)
        payloads[address] = block[:size]
    if len(families) != 1:
        raise ValueError(f"UF2 blocks name {len(families)} families")
    return families.pop(), payloads

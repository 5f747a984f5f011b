"""Exact instruction counts and estimated Cortex-M4 cycles under QEMU, with a small TCG plugin
(tools/qemu_insn_count/insn_count.c).

The plugin is compiled with the host gcc on first use into build/qemu_insn_count/ (never committed). It counts
the instructions executed inside a set of address ranges (functions, from the ELF's symbol table), estimates
their cycles with a Cortex-M4 timing model (CYCLE_MODEL; the rules are listed in the plugin's header), and
snapshots both each time a marker function starts, so a program can bracket the code it wants measured:

    costs = measure_calls(board, elf, functions=r"^mt_", mark="hx_mark")
    costs[i].instructions, costs[i].cycles   # the i-th bracketed call (between marks 2i and 2i + 1)
    costs[i].per_mac(macs)                   # (instructions / MAC, estimated cycles / MAC)

or, for every mark and the whole run: res = run_counting(board, elf, ranges=..., mark=...); res.marks,
res.cycle_marks, res.total, res.total_cycles, res.spans(). A board that is driven over its serial line instead
of running to an exit takes plugin_argument() as an emulator option and read_counts() afterwards (as
mcu_train/bench/cycles.py does for whole inferences of the protocol firmware).

Cycles are an estimate (QEMU runs no pipeline, and DWT CYCCNT reads 0 under emulation): report them as such,
next to the exact instruction counts. The model is the Cortex-M4's; on other cores it is only a yardstick.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from mcu_train.errors import BuildError, McuTrainError
from mcu_train.resources import OUTPUT_DIR, TOOLS_DIR

PLUGIN_SOURCE = TOOLS_DIR / "qemu_insn_count" / "insn_count.c"


def build_plugin(out_dir: Path | None = None) -> Path:
    """Compile the plugin (if its source is newer than the .so) and return the .so path."""
    out_dir = Path(out_dir) if out_dir else OUTPUT_DIR / "qemu_insn_count"
    so = out_dir / "insn_count.so"
    if so.is_file() and so.stat().st_mtime >= PLUGIN_SOURCE.stat().st_mtime:
        return so
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_so = Path(tmp) / so.name
        proc = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", str(PLUGIN_SOURCE),
                               "-o", str(tmp_so)], capture_output=True, text=True)
        if proc.returncode:
            raise BuildError(f"building the QEMU plugin failed:\n{proc.stderr.strip()}")
        tmp_so.replace(so)
    return so


def _functions(elf) -> list[tuple[int, int, str]]:
    """(start, end, name) of every sized function symbol, Thumb bit cleared, sorted by address."""
    out = set()
    with open(elf, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                    start = sym["st_value"] & ~1
                    out.add((start, start + sym["st_size"], sym.name))
    return sorted(out)


def function_ranges(elf, pattern: str) -> list[tuple[int, int]]:
    """Address ranges [lo, hi) of the functions whose names match the regex `pattern`; neighbouring
    matches (no other function between them) are merged."""
    rx = re.compile(pattern)
    ranges: list[list[int]] = []
    prev_selected = False
    for start, end, name in _functions(elf):
        selected = bool(rx.search(name))
        if selected and prev_selected and ranges:
            ranges[-1][1] = max(ranges[-1][1], end)
        elif selected:
            ranges.append([start, end])
        prev_selected = selected
    if not ranges:
        raise McuTrainError(f"{Path(elf).name}: no function matches {pattern!r}")
    return [(lo, hi) for lo, hi in ranges]


def symbol_address(elf, name: str) -> int:
    for start, _, sym in _functions(elf):
        if sym == name:
            return start
    raise McuTrainError(f"{Path(elf).name}: no function {name!r}")


CYCLE_MODEL = "estimated Cortex-M4 cycles (TRM timing model, zero wait states)"


@dataclass(frozen=True)
class Cost:
    """Instructions executed (exact) and their estimated Cortex-M4 cycles (CYCLE_MODEL)."""
    instructions: int
    cycles: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.instructions + other.instructions, self.cycles + other.cycles)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.instructions - other.instructions, self.cycles - other.cycles)

    def per_mac(self, macs: int) -> tuple[float, float]:
        """(instructions per MAC, estimated cycles per MAC)."""
        return self.instructions / macs, self.cycles / macs


@dataclass
class CountResult:
    exit_code: int
    output: bytes       # what the program wrote to the UART
    marks: list[int]    # in-range instruction count at each execution of the marker
    total: int          # in-range instructions over the whole run
    cycle_marks: list[int] = field(default_factory=list)  # estimated in-range cycles at each mark
    total_cycles: int = 0                                   # estimated in-range cycles over the whole run
    profile: dict[int, Cost] = field(default_factory=dict)  # address -> its executions and their estimated cycles
                                                            # (run_counting(profile=True); taken-branch refills
                                                            # are in the totals only)

    def spans(self) -> list[Cost]:
        """The cost between marks 0 and 1, 2 and 3, ...: one entry per call bracketed by two marks."""
        if len(self.marks) % 2:
            raise McuTrainError(f"an odd number of marks ({len(self.marks)}): calls are bracketed by two")
        return [Cost(self.marks[i + 1] - self.marks[i], self.cycle_marks[i + 1] - self.cycle_marks[i])
                for i in range(0, len(self.marks), 2)]


def plugin_argument(elf, out_file, ranges=None, marks=(), profile: bool = False) -> str:
    """The QEMU `-plugin` option value: the plugin built, counting in `ranges` (all code if None), a snapshot at
    each of `marks` (function names or addresses, up to 8), written to `out_file`."""
    args = [f"out={out_file}"] + [f"range={lo:#x}:{hi:#x}" for lo, hi in (ranges or [])]
    args += [f"mark={m if isinstance(m, int) else symbol_address(elf, m):#x}" for m in marks]
    if profile:
        args.append("profile=1")
    return ",".join([str(build_plugin()), *args])


def read_counts(out_file, exit_code: int = 0, output: bytes = b"", finished: bool = True) -> CountResult:
    """Parse what the plugin wrote; finished=False accepts a run stopped before the plugin's exit line."""
    marks, cycle_marks, total, total_cycles, prof = [], [], None, 0, {}
    for line in Path(out_file).read_text().splitlines() if Path(out_file).is_file() else []:
        key, insns, cycles, *rest = line.split(" ")
        if key == "insn":
            prof[int(insns, 16)] = Cost(int(cycles), int(rest[0]))
        elif key == "mark":
            marks.append(int(insns))
            cycle_marks.append(int(cycles))
        elif key == "total":
            total, total_cycles = int(insns), int(cycles)
    if total is None and finished:
        raise McuTrainError(f"the counting plugin did not finish (QEMU killed? exit code {exit_code})")
    return CountResult(exit_code, bytes(output), marks, total or 0, cycle_marks, total_cycles, prof)


def run_counting(board, elf, ranges=None, mark: str | None = None, timeout: float = 120,
                 stdin: bytes = b"", profile: bool = False) -> CountResult:
    """Run `elf` on an emulated `board` to its exit with the counting plugin loaded; profile=True (with ranges)
    also returns how often each counted instruction ran (CountResult.profile)."""
    from mcu_train.boards.runner import run_to_exit
    if not board.qemu_machine:
        raise McuTrainError(f"{board.name}: instruction counting needs a QEMU board")
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "counts.txt"
        plugin = plugin_argument(elf, out_file, ranges, [mark] if mark else [], profile)
        code, output = run_to_exit(board, elf, timeout=timeout, stdin=stdin, extra_args=["-plugin", plugin])
        return read_counts(out_file, code, output)


def call_return_sites(elf, name: str) -> list[int]:
    """Addresses of the instructions after every BL to the function `name` (where its calls return)."""
    import numpy as np
    target = symbol_address(elf, name)
    sites = []
    with open(elf, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if not sec["sh_flags"] & 0x4 or sec["sh_type"] != "SHT_PROGBITS":  # SHF_EXECINSTR
                continue
            data = sec.data()
            hw = np.frombuffer(data[:len(data) // 2 * 2], "<u2").astype(np.int64)
            first, second = hw[:-1], hw[1:]
            at = np.nonzero(((first & 0xF800) == 0xF000) & ((second & 0xD000) == 0xD000))[0]
            s, j1, j2 = (first[at] >> 10) & 1, (second[at] >> 13) & 1, (second[at] >> 11) & 1
            i1, i2 = 1 - (j1 ^ s), 1 - (j2 ^ s)
            offset = (s << 24 | i1 << 23 | i2 << 22 | (first[at] & 0x3FF) << 12 | (second[at] & 0x7FF) << 1)
            offset -= (s << 25)
            pc = sec["sh_addr"] + 2 * at + 4
            sites += [int(a) for a in pc[pc + offset == target]]
    return sorted(sites)


def measure_calls(board, elf, functions: str = r"^mt_", mark: str = "hx_mark", timeout: float = 120) -> list[Cost]:
    """Run `elf` on the emulated `board` to its exit (status 0) and return the cost of each call bracketed by
    two calls of the function `mark`: instructions executed inside the functions whose names match the regex
    `functions` (plus everything they call that also matches), and their estimated Cortex-M4 cycles."""
    res = run_counting(board, elf, ranges=function_ranges(elf, functions), mark=mark, timeout=timeout)
    if res.exit_code != 0:
        raise McuTrainError(f"{Path(elf).name} exited with {res.exit_code}")
    return res.spans()

"""Estimated Cortex-M4 cycles of whole inferences on the protocol firmware (the hook `mcu-train bench` calls).

    estimate_model_cycles(board, elf, meta, rows) -> float   # mean estimated cycles of one inference
    classify_costs(board, elf, meta, rows) -> [Cost]          # instructions and estimated cycles per input

The firmware `elf` (built for a compiled model) boots on the emulated `board` with the counting plugin
(mcu_train/bench/insn_count.py); each input row (int8 NHWC, as model_client.to_wire makes them) is classified to
the final exit (CLASSIFY with force_exit -1), and everything executed from the entry of the model's run function
to the return from it is counted: the span the firmware's own cost counter brackets. Instructions are exact;
cycles are an estimate (insn_count.CYCLE_MODEL).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from mcu_train.bench.insn_count import Cost, call_return_sites, plugin_argument, read_counts, symbol_address
from mcu_train.errors import McuTrainError

RUN_FUNCTIONS = ("trainer_classify", "model_run")  # what CLASSIFY runs (firmware/model_service.c's RUN_MODEL)


def classify_costs(board, elf, meta, rows, timeout: float = 60) -> list[Cost]:
    """Instructions and estimated Cortex-M4 cycles of CLASSIFY's inference to the final exit, one per row."""
    from mcu_train.boards.runner import start_board
    from mcu_train.link import Link
    from mcu_train.link.model_client import ModelClient
    if not board.qemu_machine:
        raise McuTrainError(f"{board.name}: estimated cycles need a QEMU board")
    run = next((f for f in RUN_FUNCTIONS if _has(elf, f)), None)
    if run is None:
        raise McuTrainError(f"{Path(elf).name}: no {' or '.join(RUN_FUNCTIONS)}")
    returns = call_return_sites(elf, run)
    if not 1 <= len(returns) <= 7:
        raise McuTrainError(f"{Path(elf).name}: {len(returns)} calls of {run}")
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "counts.txt"
        plugin = plugin_argument(elf, out_file, marks=[run, *returns])
        with start_board(board, elf, extra_args=["-plugin", plugin]) as running:
            link = Link(running.open_transport(), timeout=timeout)
            try:
                link.handshake(10.0)
                client = ModelClient(link, meta)
                for row in rows:
                    client.classify(row, force_exit=-1)
            finally:
                link.close()
        spans = read_counts(out_file, finished=False)
    spans.marks, spans.cycle_marks = spans.marks[-2 * len(rows):], spans.cycle_marks[-2 * len(rows):]
    if len(spans.marks) != 2 * len(rows):
        raise McuTrainError(f"expected {2 * len(rows)} marks around {run}, got {len(spans.marks)}")
    return spans.spans()


def estimate_model_cycles(board, elf, meta, rows) -> float:
    """Mean estimated Cortex-M4 cycles of one inference to the final exit over `rows` (an estimate: CYCLE_MODEL)."""
    costs = classify_costs(board, elf, meta, rows)
    return sum(c.cycles for c in costs) / len(costs)


def _has(elf, name):
    try:
        symbol_address(elf, name)
        return True
    except McuTrainError:
        return False

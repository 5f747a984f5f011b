"""The instruction-counting plugin's Cortex-M4 timing model (tools/qemu_insn_count/insn_count.c) on sequences of
known cost: each expected figure is worked out by hand from the Cortex-M4 TRM's instruction timings (ARM DDI
0439, table 3-1) and its load/store pairing rules (section 3.3.2), as the comments show."""
import numpy as np
import pytest

from mcu_train.bench.insn_count import (Cost, call_return_sites, function_ranges, measure_calls, run_counting,
                                        symbol_address)
from mcu_train.boards import get_board
from mcu_train.boards.build import build_elf
from repo import ROOT

pytestmark = pytest.mark.qemu

KNOWN = [  # (sequence, instructions, cycles)
    ("alu", 10, 10),                 # 10 x ADDS: 1 each
    ("ldr_chain", 3, 4),             # 3 independent LDRs pipeline: N + 1 ("normally four cycles total")
    ("ldr_dependent", 2, 4),         # the second LDR's base is the first's destination: 2 + 2
    ("agu_stall", 2, 4),             # ADDS then LDR from its result: 1 + 2 + 1 (no forwarding to the AGU)
    ("str_imm", 3, 3),               # STR with an immediate offset: always 1
    ("ldr_str", 5, 7),               # LDR 2, STR imm 1, MOVS 1, LDR 2, STR reg after the LDR 1
    ("ldrd_ldm", 3, 9),              # LDRD 3 (1 + N), LDM of 3: 4 (1 + N), LDR after LDM: 2 (no pipelining)
    ("push_pop", 2, 10),             # PUSH / POP of 4 registers: 1 + N each
    ("dsp", 9, 20),                  # SMLAD, SMULL, MLA, SXTB16, SSAT, SEL, QADD, MOVS: 1 each; SDIV: 12 (2-12)
    ("loop", 9, 12),                 # MOVS, 4 x (SUBS, BNE), 3 taken to a 16-bit target: + P = 1 each
    ("loop_wide_target", 9, 15),     # the same to a 32-bit target at a halfword address: + P = 2 each
    ("call", 5, 13),                 # PUSH {lr} 2, BL 1 + 1, leaf ADDS 1, BX LR 1 + 2, POP {pc} 1 + 1 + 3
    ("fpu", 7, 37),                  # VLDR 2, VADD 1, VMLA 3, VDIV 14, VSQRT 14, VSTR 2, VMOV 1
]


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    board = get_board("mps2-an386")
    return build_elf(board, [ROOT / "tests" / "target_c" / "cycle_sequences.c"],
                     tmp_path_factory.mktemp("cycles") / "sequences.elf").elf


def test_sequences_of_known_cost(elf):
    costs = measure_calls(get_board("mps2-an386"), elf, functions=r"^seq_")
    assert len(costs) == len(KNOWN)
    got = {name: (c.instructions, c.cycles) for (name, _, _), c in zip(KNOWN, costs)}
    assert got == {name: (n, cycles) for name, n, cycles in KNOWN}


def test_marks_and_totals(elf):
    """Every mark carries both counts, the spans add up to the total, and the API's arithmetic is consistent."""
    res = run_counting(get_board("mps2-an386"), elf, ranges=function_ranges(elf, r"^seq_"), mark="hx_mark")
    assert res.exit_code == 0 and res.output.endswith(b"DONE\n")
    assert len(res.marks) == len(res.cycle_marks) == 2 * len(KNOWN)
    spans = res.spans()
    assert sum(s.instructions for s in spans) == res.total and sum(s.cycles for s in spans) == res.total_cycles
    assert Cost(10, 25) - Cost(4, 5) + Cost(1, 1) == Cost(7, 21) and Cost(8, 12).per_mac(4) == (2.0, 3.0)


def test_call_return_sites(elf):
    """seq_leaf is called once, by seq_call: the site is inside seq_call, 4 bytes after its PUSH {lr} + BL."""
    assert call_return_sites(elf, "seq_leaf") == [symbol_address(elf, "seq_call") + 2 + 4]


def test_estimated_cycles_of_whole_inferences(tmp_path):
    """The hook `mcu-train bench` calls (mcu_train/bench/cycles.py): the instructions the plugin counts from the
    entry of model_run to its return equal the firmware's own cost counter (SysTick, resolution 40, plus the
    counter reads) on the default model, and their estimated cycles come with them."""
    from codegen.compile import compile_model
    from mcu_train.bench.cycles import classify_costs, estimate_model_cycles
    from mcu_train.boards.build import build_firmware
    from mcu_train.boards.runner import session
    from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire
    from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL
    board = get_board("mps2-an386")
    compile_model(DEFAULT_MODEL, board, tmp_path / "model", calib=DEFAULT_CALIB, quiet=True)
    meta = load_model_meta(tmp_path / "model")
    elf = build_firmware(board, tmp_path / "model", tmp_path / "fw").elf
    rows = to_wire(meta, np.load(DEFAULT_CALIB)["x"][:2])
    with session(board, elf) as (_, link):
        own = [ModelClient(link, meta).classify(r, force_exit=-1).cost for r in rows]
    costs = classify_costs(board, elf, meta, rows)
    assert [abs(c.instructions - n) <= 80 for c, n in zip(costs, own)] == [True, True], (costs, own)
    assert all(c.instructions < c.cycles < 2 * c.instructions for c in costs)
    assert estimate_model_cycles(board, elf, meta, rows[:1]) == costs[0].cycles

"""The QEMU instruction-counting plugin (tools/qemu_insn_count) and its Python helper (mcu_train/insn_count)."""
import pytest

from mcu_train.bench.insn_count import _functions, function_ranges, run_counting, symbol_address
from mcu_train.bench.kernel_harness import KernelCase, build_harness, parse_results
from mcu_train.boards import get_board

pytestmark = pytest.mark.qemu

CASES = [
    KernelCase(op="relu", seed=1, input=(64, 1, 1, 1), act_min=0, act_max=100, name="relu 64"),
    KernelCase(op="relu", seed=2, input=(128, 1, 1, 1), act_min=0, act_max=100, name="relu 128"),
    KernelCase(op="max_pool", seed=3, input=(1, 1, 16, 8), kernel=(1, 2), stride=(1, 2), name="max pool"),
]


@pytest.fixture(scope="module")
def elfs(tmp_path_factory):
    out = tmp_path_factory.mktemp("insn")
    return {name: build_harness(get_board(name), CASES, out / name) for name in ("mps2-an386", "netduinoplus2")}


def test_function_ranges(elfs):
    elf = elfs["mps2-an386"]
    funcs = _functions(elf)
    ranges = function_ranges(elf, r"^mt_")
    inside = lambda a: any(lo <= a < hi for lo, hi in ranges)  # noqa: E731
    for start, end, name in funcs:
        assert inside(start) == name.startswith("mt_"), name
    assert symbol_address(elf, "hx_mark") % 2 == 0  # Thumb bit cleared


def test_counts_are_exact_and_board_independent(elfs):
    """Same code on two Cortex-M4 boards: the same counts, run after run; marks bracket each kernel call."""
    counts = []
    for name, elf in [*elfs.items(), ("mps2-an386", elfs["mps2-an386"])]:
        board = get_board(name)
        res = run_counting(board, elf, ranges=function_ranges(elf, r"^mt_"), mark="hx_mark")
        assert res.exit_code == 0
        assert parse_results(res.output, len(CASES)) == [c.expected() for c in CASES]
        assert len(res.marks) == 2 * len(CASES) and res.total == res.marks[-1]
        per_call = [res.marks[2 * i + 1] - res.marks[2 * i] for i in range(len(CASES))]
        assert all(n > 0 for n in per_call)
        assert res.marks[0] == 0  # nothing in mt_* runs before the first kernel call
        counts.append(per_call)
    assert counts[0] == counts[1] == counts[2]
    # relu on 128 bytes costs more than on 64, and less than twice plus a constant
    assert counts[0][0] < counts[0][1] < 2 * counts[0][0] + 20


def test_without_ranges_everything_counts(elfs):
    elf = elfs["mps2-an386"]
    board = get_board("mps2-an386")
    everything = run_counting(board, elf)
    kernels = run_counting(board, elf, ranges=function_ranges(elf, r"^mt_"))
    assert everything.marks == [] and everything.total > 2 * kernels.total > 0

"""On target: every kernel's DSP path (real SXTB16 / SMLAD / SEL instructions) and its plain C path run on the
same randomised cases on mps2-an386 (Cortex-M4F), bit-equal to each other and to the numpy golden model.

The harness (firmware/kernels/harness) is built twice, with and without -DMT_FORCE_REFERENCE; both boards
regenerate inputs and filters from each case's seed and print a checksum per case."""
import pytest

from mcu_train.bench.kernel_harness import (KernelCase, bench_cases, build_harness, conv_1x1_cases, random_cases,
                                            run_harness)
from mcu_train.boards import get_board

pytestmark = pytest.mark.qemu
BOARD = "mps2-an386"


def all_cases():
    refused = KernelCase(op="conv", seed=5, input=(1, 1, 8, 3), kernel=(1, 3), c_out=2, act_min=10, act_max=5,
                         multiplier=[1 << 30] * 2, shift=[-8] * 2, name="refused: act_min > act_max")
    return (random_cases(seed=2024, count=110) + conv_1x1_cases(seed=4, count=40) + [refused]
            + [KernelCase(op="requantize", seed=99, input=(2000, 1, 1, 1), name="mt_requantize x 2000")]
            + bench_cases())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    board = get_board(BOARD)
    cases = all_cases()
    out = tmp_path_factory.mktemp("kernels_qemu")
    got = {}
    for variant in ("dsp", "ref"):
        elf = build_harness(board, cases, out, reference=(variant == "ref"))
        got[variant] = run_harness(board, elf, len(cases), timeout=120)
    return cases, got


def _first_mismatch(cases, a, b):
    for i, case in enumerate(cases):
        if a[i] != b[i]:
            return f"case {i} ({case.describe()}): {a[i]} vs {b[i]}"
    return None


def test_cases_cover_every_kernel_and_odd_shapes():
    cases = all_cases()
    assert {c.op for c in cases} == {"conv", "depthwise", "fc", "max_pool", "avg_pool", "add", "relu", "requantize"}
    assert any(c.op == "conv" and c.input_dims[3] % 2 and c.c_out % 2 for c in cases)
    assert any(c.op == "depthwise" and c.input_dims[3] % 4 for c in cases)
    assert any(c.op == "fc" and c.filter_dims[3] % 4 for c in cases)
    assert any(c.input_dims[1] == 1 for c in cases if c.op == "conv")  # 1-D
    assert any(c.padding[0] != c.padding[2] or c.padding[1] != c.padding[3] for c in cases)  # asymmetric
    # mt_conv_s8's 1x1 route: every branch of it, and both sides of its dispatch
    one = [c for c in cases if c.op == "conv" and c.kernel == (1, 1) and not any(c.padding)]
    fast = [c for c in one if c.input_dims[3] % 16 == 0 and c.stride[1] == 1 and c.c_out >= 2]
    assert fast and any(c.input_dims[3] % 4 and c.input_dims[3] >= 4 for c in one)           # tail word
    assert any(c.input_dims[3] % 16 == 8 for c in one) and any(c.input_dims[3] % 8 == 4 for c in one)
    assert any(c.c_out % 2 and c.c_out > 1 for c in one)
    assert any(c.stride != (1, 1) and c.input_dims[1] > 1 for c in one)                       # runs per row
    assert any(max(c.shift) >= 0 for c in one) and any(c.bias is None for c in one)
    assert any(c.output_dims[0] * c.output_dims[1] * c.output_dims[2] % 2 for c in fast)     # odd length
    assert any(c.input_dims[3] < 4 for c in one) and any(c.c_out == 1 for c in one)          # generic path


def test_dsp_path_equals_reference_path(runs):
    cases, got = runs
    assert got["dsp"] == got["ref"], _first_mismatch(cases, got["dsp"], got["ref"])


@pytest.mark.parametrize("variant", ["dsp", "ref"])
def test_board_matches_numpy(runs, variant):
    cases, got = runs
    expected = [c.expected() for c in cases]
    assert [s for s, _ in expected].count(-1) == 1  # only the deliberately refused case
    # a refused case (status -1) has no output to compare
    board = [(s, h if s == 0 else None) for s, h in got[variant]]
    assert board == expected, _first_mismatch(cases, board, expected)


def test_kernel_cost_targets():
    """Issue 4: with the DSP path on Cortex-M4, no layer above CMSIS-NN's instructions/MAC on the same shape,
    and <= 2.0 on convs with >= 16 input channels (exact counts from the QEMU plugin), the HAR model's 1x1
    exit-head convs included. The odd-everywhere 1x1 row is listed but not enforced (kernel_bench.NOT_ENFORCED)."""
    from mcu_train.bench.kernel_bench import NOT_ENFORCED, measure
    rows = measure(get_board(BOARD))
    missed = [f"{r['case'].name}: {r['per_mac']:.2f} > {r['target']:.2f}" for r in rows
              if r["target"] and r["enforced"] and r["per_mac"] > r["target"]]
    assert not missed, missed
    assert sum(1 for r in rows if r["cmsis"]) == 6
    one_by_one = {r["case"].name: r["per_mac"] for r in rows
                  if r["case"].op == "conv" and r["case"].kernel == (1, 1) and r["case"].input_dims[3] >= 16
                  and r["enforced"]}
    assert sorted(one_by_one) == ["conv1d k1 16x64 -> 32", "conv1d k1 32x32 -> 32", "conv1d k1 64x16 -> 32"]
    assert all(v <= 2.0 for v in one_by_one.values()), one_by_one
    assert NOT_ENFORCED <= {r["case"].name for r in rows}

"""The ARMv6-M path (Cortex-M0: no DSP, no FPU, no IT blocks) on QEMU's micro:bit (nRF51822, 16 KB RAM): the
link self-test passes, the default model's inference is bit-exact against the numpy reference, and its trainer
is refused at compile time with the bytes it needs and the bytes there are."""
import subprocess

import pytest
from compiler_helpers import board_vs_reference
from repo import ROOT

from codegen.compile import compile_model
from codegen.errors import CompileError
from mcu_train import api, data
from mcu_train.boards import get_board
from mcu_train.boards.toolchain import require

MICROBIT = get_board("microbit")
MODEL, CALIB = ROOT / "models" / "har.onnx", ROOT / "models" / "har_calib.npz"
pytestmark = pytest.mark.qemu


def test_selftest_passes():
    assert api.selftest(MICROBIT, pings=100)


@pytest.mark.slow
def test_default_model_is_bit_exact(tmp_path):
    out = tmp_path / "har"
    compiled = compile_model(MODEL, MICROBIT, out, calib=CALIB, quiet=True)
    x = data.to_model_input(data.split_windows("validation").x)[::13][:100]
    mismatches, total = board_vs_reference(compiled, out, MICROBIT, x, thresholds=(0.9,))
    assert total == 100 * 5 and not mismatches, mismatches[:3]
    # ARMv6-M code only: the plain-C kernels (no SIMD, no IT blocks, no floating-point instructions).
    elf = out / "fw-microbit" / "firmware.elf"
    asm = subprocess.run([require("arm-none-eabi-gcc").replace("gcc", "objdump"), "-d", str(elf)],
                         capture_output=True, text=True, check=True).stdout
    mnemonics = {line.split("\t")[2].split()[0] for line in asm.splitlines() if line.count("\t") >= 2}
    assert not mnemonics & {"it", "ite", "itt", "smlad", "sxtb16", "vmla.f32", "vadd.f32", "sdiv", "udiv"}


def test_trainer_is_refused_with_the_bytes(tmp_path):
    with pytest.raises(CompileError, match=r"does not fit microbit's RAM: it needs [\d,]+ B .*16,384 B available"):
        compile_model(MODEL, MICROBIT, tmp_path / "t", calib=CALIB, quiet=True, train="exits")

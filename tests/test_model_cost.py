"""MLPerf Tiny's ResNet-8 and DS-CNN (mcu_train/bench/mlperf_tiny.py) compiled and run whole on Cortex-M4 and on
Cortex-M55 (Helium), without the protocol (mcu_train/bench/model_cost.py's harness): the final logits equal the
numpy golden model's bit for bit; and the default HAR model on the Cortex-M55 board through the protocol."""
import pytest
from compiler_helpers import board_vs_reference
from repo import ROOT

from codegen.compile import compile_model
from mcu_train import data
from mcu_train.bench.model_cost import measure_model, model_files
from mcu_train.boards import get_board

pytestmark = pytest.mark.qemu
MACS = {"resnet8": 12_501_632, "ds-cnn": 2_656_768}  # MLPerf Tiny's 12.5 M and 2.7 M


@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
@pytest.mark.parametrize("model", sorted(MACS))
def test_whole_model_equals_reference(tmp_path, model, board):
    result = measure_model(get_board(board), *model_files(model, tmp_path / "models"), tmp_path / "run")
    assert result["macs"] == MACS[model] == sum(step["macs"] for step in result["steps"])
    assert result["total"].instructions > sum(s["cost"].instructions for s in result["steps"]) > result["macs"] / 2


@pytest.mark.slow
def test_default_model_on_cortex_m55_equals_reference(tmp_path):
    board = get_board("mps3-an547")
    out = tmp_path / "har"
    compiled = compile_model(ROOT / "models" / "har.onnx", board, out, calib=ROOT / "models" / "har_calib.npz",
                             quiet=True)
    x = data.to_model_input(data.split_windows("validation").x[::150][:8])
    mismatches, total = board_vs_reference(compiled, out, board, x, thresholds=(0.9,))
    assert total == 8 * 5 and not mismatches, mismatches[:3]

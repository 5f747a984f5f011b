"""The MLPerf Tiny reference architectures (tests/mlperf_tiny.py: ResNet-8 on 32x32x3, the keyword-spotting DS-CNN on
49x10x1 and MobileNetV1-0.25 on 96x96x3, a 27,648-byte input) compile for mps2-an386, fit its RAM and run through
`mcu-train infer` bit for bit equal to the numpy reference: one input each (their cost per inference and per MAC
is measured by `mcu-train bench`, in docs/RESULTS.md). `mcu-train bench` itself works for a model that is not the
shipped HAR model, on the host board."""
import json

import mlperf_tiny
import model_zoo
import numpy as np
import onnx
import pytest
from compiler_helpers import compile_zoo, random_inputs

from codegen.reference import threshold_to_q16
from mcu_train.boards import get_board
from mcu_train.cli import main
from mcu_train.link.model_client import load_model_meta, to_wire

QEMU = get_board("mps2-an386")
# Multiply-accumulates of one inference as MLPerf Tiny publishes them (Banbury et al., 2021, table 1).
PUBLISHED_MACS = {"resnet8": 12.5e6, "ds_cnn": 2.7e6, "mobilenet_v1_025": 7.5e6}


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("name", list(PUBLISHED_MACS))
def test_mlperf_tiny_model_through_infer_on_mps2_an386(tmp_path, name):
    compiled, out = compile_zoo(getattr(mlperf_tiny, name)()[0], tmp_path, QEMU, name)
    memory = json.loads((out / "memory.json").read_text())
    assert memory["macs_per_exit"][-1] == pytest.approx(PUBLISHED_MACS[name], rel=0.02)
    assert memory["arena_bytes"] + memory["runtime_ram_bytes"] < memory["board_ram_bytes"]
    meta = load_model_meta(out)
    x = random_inputs(meta, 1)
    np.savez(tmp_path / "in.npz", x=x)
    main(["infer", str(out), "--board", QEMU.name, "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "y.npz")])
    y = np.load(tmp_path / "y.npz")
    row = to_wire(meta, x)[0]
    k, logits, _ = compiled.reference.run(row.reshape(meta["input_dims_nhwc"]), [threshold_to_q16(0.9)])
    assert y["exit"][0] == k and np.array_equal(y["logits_q"][0], logits) and y["cost"][0] > 0


def test_bench_takes_any_model(tmp_path):
    """`mcu-train bench --model X.onnx --calib Y.npz` on ResNet-8 (a calibration file whose one array is not
    named x), with the documented JSON keys."""
    model = mlperf_tiny.resnet8()[0]
    onnx.save(model, tmp_path / "resnet8.onnx")
    np.savez(tmp_path / "calib.npz", images=model_zoo.calibration(model, n=4))
    main(["bench", "--board", "host", "--model", str(tmp_path / "resnet8.onnx"), "--calib",
          str(tmp_path / "calib.npz"), "--inputs", "2", "-o", str(tmp_path / "bench.json")])
    (result,) = json.loads((tmp_path / "bench.json").read_text())
    keys = {"board", "cpu", "model", "flash_bytes", "ram_bytes", "arena_bytes", "exits", "layers", "unit"}
    assert keys <= set(result)
    assert result["exits"][0]["macs"] == 12_501_632 and result["exits"][0]["cost"] > 0
    assert len(result["layers"]) == 14 and all(layer["cost"] > 0 for layer in result["layers"])

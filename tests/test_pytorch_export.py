"""Models exported by PyTorch's ONNX exporter compile and run bit-exactly (its graphs differ from ours:
BatchNorm already folded, ReduceMean for x.mean(-1), Clip for ReLU6, shape arithmetic for x.view(n, -1))."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from compiler_helpers import (assert_exits_agree, board_vs_reference, onnxruntime_exits, ort_session,  # noqa: E402
                              random_inputs, reference_exit_logits)

from codegen.compile import compile_model  # noqa: E402
from mcu_train.boards import get_board  # noqa: E402
from mcu_train.link.model_client import load_model_meta, to_wire  # noqa: E402


class EarlyExit1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2))
        self.block2 = nn.Sequential(nn.Conv1d(8, 16, 3, padding=1), nn.ReLU6())
        self.exit0 = nn.Linear(8, 6)
        self.final = nn.Linear(16, 6)

    def forward(self, x):
        y = self.block1(x)
        return self.exit0(y.mean(-1)), self.final(self.block2(y).mean(-1))


class Flatten2d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.relu(self.dw(y)) + y
        return self.fc(y.view(y.size(0), -1))  # NCHW flatten order: the compiler reorders the weights


def export(module, shape, path, outputs):
    torch.manual_seed(0)
    module.eval()
    for p in module.parameters():  # non-trivial BatchNorm statistics
        p.data.normal_(0, 0.5)
    for b in module.buffers():
        if b.dtype.is_floating_point:
            b.data.uniform_(0.5, 1.5)
    torch.onnx.export(module, torch.randn(*shape), path, dynamo=False, input_names=["x"], output_names=outputs,
                      dynamic_axes={"x": {0: "batch"}})


@pytest.mark.parametrize("module,shape,outputs", [
    (EarlyExit1d, (1, 3, 64), ["exit0", "final"]),
    (Flatten2d, (1, 2, 8, 8), ["logits"]),
])
def test_pytorch_model_compiles_and_matches(tmp_path, module, shape, outputs):
    path = tmp_path / "torch.onnx"
    export(module(), shape, path, outputs)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(0, 1, (64, *shape[1:])).astype(np.float32))
    host = get_board("host")
    compiled = compile_model(path, host, tmp_path / "out", calib=calib, quiet=True)
    meta = load_model_meta(tmp_path / "out")
    assert [e["name"] for e in meta["exits"]] == outputs
    x = random_inputs(meta, 100)
    mismatches, _ = board_vs_reference(compiled, tmp_path / "out", host, x[:30])
    assert not mismatches
    assert_exits_agree(compiled, meta, x, onnxruntime_exits(tmp_path / "out" / "model_qdq.onnx", x),
                       min_top1=0.98, min_within=0.0)
    rows = to_wire(meta, x)
    # The int8 model follows the float PyTorch model.
    sess = ort_session(path)
    for k, e in enumerate(meta["exits"]):
        ours = reference_exit_logits(compiled, meta, rows, k)
        ours_f = (ours.astype(np.float32) - e["zero_point"]) * e["scale"]
        theirs_f = np.concatenate([sess.run([e["name"]], {"x": xi[None]})[0] for xi in x])
        assert np.mean(np.argmax(ours_f, 1) == np.argmax(theirs_f, 1)) >= 0.9

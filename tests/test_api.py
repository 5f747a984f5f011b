"""The Python API (mcu_train.api) does what the commands do, as its docstring shows: compile the shipped model by
the name the README uses, build, infer on a board, and talk to a booted board through the one board interface."""
import numpy as np

from mcu_train import api
from mcu_train.boards.runner import BoardRunner


def test_compile_build_infer_and_session_on_the_host_board(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: "models/har.onnx" names the shipped model
    compiled = api.compile_model("models/har.onnx", "out/har", calib="models/har_calib.npz", board="host")
    x = np.load(api.DEFAULT_CALIB)["x"][:5]
    results, unit = api.infer("out/har", x, board="host", force_exit=-1)
    assert unit == "ns" and results["exit"].tolist() == [len(compiled.meta["exits"]) - 1] * 5
    meta = api.load_model_meta("out/har")
    rows = api.to_wire(meta, x)
    for row, logits in zip(rows, results["logits_q"]):
        want = compiled.reference.run(row.reshape(meta["input_dims_nhwc"]), None, -1)
        assert logits[:len(want[1])].tolist() == want[1].tolist()

    firmware = api.build("host", "out/har")
    runner = api.runner_for(api.board_of("host"))
    assert isinstance(runner, BoardRunner) and runner.counter_unit == "ns"
    with api.session("host", firmware.elf) as (running, link):
        assert link.hello.counter_unit == running.counter_unit
        client = api.ModelClient(link, meta)
        assert client.classify(rows[0], force_exit=0).exit == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

"""Shared by the compiler tests: compile zoo models, compare the board with the numpy reference and
onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort

from codegen.compile import compile_model
from codegen.reference import threshold_to_q16
from mcu_train.boards.build import build_firmware
from mcu_train.boards.runner import session
from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire


def compile_zoo(model, tmp_path, board, name="m", calib=True):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    calib_path = None
    if calib:
        from model_zoo import calibration
        calib_path = tmp_path / f"{name}_calib.npz"
        np.savez(calib_path, x=calibration(model))
    out = tmp_path / name
    compiled = compile_model(path, board, out, calib=calib_path, quiet=True)
    return compiled, out


def random_inputs(meta, n=200, seed=7):
    return np.random.default_rng(seed).normal(0, 1, (n, *meta["input_shape"][1:])).astype(np.float32)


def board_vs_reference(compiled, out_dir, board, x, thresholds=(0.7,)):
    """Mismatches between the firmware on `board` and the reference, over every forced exit and a
    threshold policy; also returns the number of comparisons."""
    meta = load_model_meta(out_dir)
    rows = to_wire(meta, x)
    num_exits = len(meta["exits"])
    th = [thresholds[0]] * num_exits
    mismatches, total = [], 0
    firmware = build_firmware(board, out_dir, out_dir / f"fw-{board.name}")
    with session(board, firmware.elf) as (running, link):
        client = ModelClient(link, meta)
        for i, row in enumerate(rows):
            nhwc = row.reshape(meta["input_dims_nhwc"])
            for force in [None, *range(num_exits)]:
                got = client.classify(row, force_exit=force, thresholds=None if force is not None else th)
                ref = compiled.reference.run(nhwc, [threshold_to_q16(t) for t in th] if force is None else None,
                                             force)
                total += 1
                if (got.exit, got.logits_q.tolist(), got.confidence_q16) != (ref[0], ref[1].tolist(), ref[2]):
                    mismatches.append((i, force, got, ref))
    return mismatches, total


def ort_session(path):
    """onnxruntime on the CPU with exact int8 products: on x86 cores without VNNI its default U8S8 kernels
    saturate pairs of products at 16 bits (seen on an AVX2 EPYC), so it would disagree with any exact reference.
    Models its exact mode cannot run (QGemm on int8 activations) run as they are."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.x64quantprecision", "1")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except ort.capi.onnxruntime_pybind11_state.NotImplemented:  # its U8U8 rewrite has no QGemm: int8 inputs
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnxruntime_exits(qdq_path, x):
    """int8 logits of every exit, from onnxruntime running a QDQ model, one input at a time."""
    sess = ort_session(qdq_path)
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: xi[None]}) for xi in x]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def agreement(ours, theirs):
    """(top-1 agreement, fraction of int8 outputs within 1 LSB)."""
    top1 = np.mean(np.argmax(ours, 1) == np.argmax(theirs, 1))
    within = np.mean(np.abs(ours.astype(np.int32) - theirs.astype(np.int32)) <= 1)
    return top1, within


def reference_exit_logits(compiled, meta, rows, k):
    """int8 logits of exit k from the numpy reference for each wire row."""
    return np.stack([compiled.reference.run(r.reshape(meta["input_dims_nhwc"]), force_exit=k)[1] for r in rows])


def assert_exits_agree(compiled, meta, x, theirs, min_top1=0.99, min_within=0.999):
    """Our reference's int8 logits at every exit against another implementation's (`theirs[k]`)."""
    rows = to_wire(meta, x)
    for k in range(len(meta["exits"])):
        top1, within = agreement(reference_exit_logits(compiled, meta, rows, k), theirs[k])
        assert top1 >= min_top1 and within >= min_within, \
            f"exit {k}: top-1 {top1:.3f}, within 1 LSB {within:.4f}"


def quantise_with_onnxruntime(float_model, tmp_path, quant_format="QDQ", activation_type="QInt8", calib=64):
    """The user's own quantisation: onnxruntime's pre-processing (folds BatchNorm), then quantize_static with
    per-channel int8 weights in the given format (QDQ or QOperator). Returns the quantised model's path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from model_zoo import calibration
    onnx.save(float_model, tmp_path / "float.onnx")
    quant_pre_process(str(tmp_path / "float.onnx"), str(tmp_path / "prepared.onnx"))
    windows = calibration(float_model, calib)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": c[None]} for c in windows)

        def get_next(self):
            return next(self.it, None)

    path = tmp_path / f"{quant_format}.onnx"
    quantize_static(str(tmp_path / "prepared.onnx"), str(path), Reader(),
                    quant_format=getattr(QuantFormat, quant_format), per_channel=True,
                    activation_type=getattr(QuantType, activation_type), weight_type=QuantType.QInt8)
    return path


def quantised_model_exits(path, meta, x):
    """onnxruntime on a quantised model whose exits are float outputs, requantised to our exits' scales."""
    sess = ort_session(path)
    out = []
    for e in meta["exits"]:
        theirs = np.concatenate([sess.run([e["name"]], {"x": xi[None]})[0] for xi in x])
        out.append(np.clip(np.round(theirs / e["scale"]) + e["zero_point"], -128, 127).astype(np.int8))
    return out

"""int8 quantisation of the IR (TFLite scheme, docs/quantisation.md): activation ranges from calibration
data run through onnxruntime (or the scales a QDQ model already carries), per-channel symmetric weights,
int32 biases, fixed-point multipliers. Results go on each op as `op.q` (still in ONNX layout)."""
import numpy as np

from codegen import elementwise, quant
from codegen.ir import CompileError

# Ops whose output keeps its input's scale and zero point (they only select or move values).
SAME_SCALE_OPS = ("maxpool", "gmp", "reshape", "relu", "pad", "resize")


def load_calibration(path, input_shape):
    """The npz's `x` (or its only array), shaped (N, *input_shape[1:]), as float32; refuses data that cannot
    calibrate: empty, not real numbers, NaN / Inf, or one constant value."""
    from codegen.files import check_real_array, load_npz_array
    what = f"calibration data {path}"
    x = check_real_array(load_npz_array(path, "calibration data"), what)
    want = tuple(input_shape[1:])
    if x.ndim != len(input_shape) or tuple(x.shape[1:]) != want or len(x) == 0:
        raise CompileError(f"{what} has shape {tuple(x.shape)}, but the model input needs "
                           f"(N, {', '.join(map(str, want))}) with N >= 1")
    if float(x.max()) == float(x.min()):
        raise CompileError(f"{what} is constant (every value is {float(x.min()):g}): it gives no range to "
                           "quantise with; pass representative inputs")
    return x


def calibrate(onnx_model, graph, calib_x):
    """min/max of every IR tensor over the calibration windows, by onnxruntime on the float model."""
    import onnx
    import onnxruntime as ort
    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    wanted = [graph.input] + [op.output for op in graph.ops]
    present = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for x in calib_x:
        for name, value in zip(names, session.run(None, {graph.input: x[None]})):
            lo[name] = min(lo[name], float(np.min(value)))
            hi[name] = max(hi[name], float(np.max(value)))
    lo[graph.input] = min(lo.get(graph.input, np.inf), float(calib_x.min()))
    hi[graph.input] = max(hi.get(graph.input, -np.inf), float(calib_x.max()))
    return {n: (lo[n], hi[n]) for n in wanted if n in lo}


def assign_qparams(graph, ranges):
    """(scale, zero point) for every tensor: given by a QDQ model, or chosen from calibration ranges."""
    qp = {}

    def choose(tensor, op=None):
        if tensor in graph.given_qparams:
            return graph.given_qparams[tensor]
        if ranges is not None and tensor in ranges:
            return quant.choose_activation_qparams(*ranges[tensor])
        where = f" (output of node '{op.name}')" if op else ""
        raise CompileError(f"tensor '{tensor}'{where} has no quantisation parameters: the QDQ model does not "
                           "give them; pass --calib windows.npz")

    # A Concat's inputs written by requantising kernels take the Concat's own scale: a plain copy then.
    forced = {}
    for op in graph.ops:
        if op.kind == "concat":
            for t in op.inputs:
                p = graph.producer(t)
                if p is not None and p.kind not in SAME_SCALE_OPS and t not in graph.given_qparams \
                        and len(graph.consumers(t)) == 1 and t not in graph.exits:
                    forced[t] = choose(op.output, op)
    qp[graph.input] = choose(graph.input)
    for op in graph.ops:
        if op.kind in SAME_SCALE_OPS:
            qp[op.output] = qp[op.inputs[0]]
        else:
            qp[op.output] = forced.get(op.output) or choose(op.output, op)
    graph.qparams = {k: (float(np.float32(s)), int(z)) for k, (s, z) in qp.items()}
    return graph.qparams


def _act_range(op, scale, zp):
    kind = op.act[0]
    if kind == "clip":
        return quant.activation_range("clip", scale, zp, op.act[1], op.act[2])
    return quant.activation_range(kind, scale, zp)


def quantize_ops(graph):
    qp = graph.qparams
    for op in graph.ops:
        in_scale, in_zp = qp[op.inputs[0]]
        out_scale, out_zp = qp[op.output]
        act_min, act_max = _act_range(op, out_scale, out_zp)
        q = dict(input_offset=-in_zp, output_offset=out_zp, act_min=act_min, act_max=act_max)
        if op.kind in ("conv", "dwconv", "dense"):
            if "w_q" in op.params:
                w_q, w_scale = op.params["w_q"].astype(np.int8), op.params["w_scale"].astype(np.float32)
            else:
                w_q, w_scale = quant.quantize_weights_per_channel(op.params["w"], axis=0)
            b_q = op.params.get("b_q")
            if b_q is None:
                b_q = quant.quantize_bias(op.params["b"], in_scale, w_scale)
            multiplier, shift = quant.conv_quant_params(in_scale, w_scale, out_scale)
            q.update(w=w_q, w_scale=w_scale, bias=np.asarray(b_q, np.int32), multiplier=multiplier, shift=shift)
        elif op.kind == "avgpool" or op.kind == "gap":
            shape = graph.shapes[op.inputs[0]]
            hw = (1, shape[2]) if len(shape) == 3 else tuple(shape[2:4])
            if op.kind == "gap":
                kernel, stride, padding, include = hw, (1, 1), (0, 0, 0, 0), False
            else:
                kernel, stride = op.attrs["kernel"], op.attrs["stride"]
                padding, include = op.attrs["padding"], op.attrs["count_include_pad"]
            # One multiplier per possible count of in-bounds taps (all equal with count_include_pad).
            n = quant.avg_pool_num_multipliers(hw, kernel, stride, padding)
            multiplier, shift = quant.avg_pool_multipliers(in_scale, out_scale, kernel, n, include)
            q.update(multiplier=multiplier, shift=shift, kernel=kernel, stride=stride, padding=padding)
        elif op.kind == "add":
            s2, z2 = qp[op.inputs[1]]
            q = quant.add_params(in_scale, in_zp, s2, z2, out_scale, out_zp, act_min, act_max)
        elif op.kind == "lut":
            q["table"] = elementwise.table(op.attrs["chain"], in_scale, in_zp, out_scale, out_zp)
        elif op.kind == "mul":
            if "const" in op.attrs:
                vec = op.attrs["const"]
                s2, z2 = quant.choose_activation_qparams(float(vec.min()), float(vec.max()))
                q["input2"] = quant.quantize(vec, s2, z2)
            else:
                s2, z2 = qp[op.inputs[1]]
            m, sh = quant.quantize_multiplier(float(np.float32(in_scale)) * float(np.float32(s2))
                                              / float(np.float32(out_scale)))
            q.update(input2_offset=-int(z2), multiplier=m, shift=sh, input2_scale=float(s2), input2_zp=int(z2))
        elif op.kind == "concat":
            q["inputs"] = [quant.copy_params(*qp[t], out_scale, out_zp) for t in op.inputs]
        elif op.kind == "pad":
            q["pad_value"] = int(quant.quantize(op.attrs["value"] if np.isfinite(op.attrs["value"])
                                                else np.sign(op.attrs["value"]) * 3e38, out_scale, out_zp))
        op.q = q

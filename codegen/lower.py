"""Quantised IR -> kernel steps in the kernels' layout (NHWC; 1-D as H = 1): what the C template emits and
what the numpy reference runs, so both execute exactly the same list."""
from dataclasses import dataclass, field

import numpy as np

from codegen.passes import shape4


@dataclass
class Step:
    kernel: str  # conv, dwconv, dense, maxpool, avgpool, add, relu
    name: str  # ONNX node
    inputs: list  # buffer names
    output: str
    in_dims: tuple  # NHWC of the first input
    out_dims: tuple  # NHWC of the output
    q: dict  # integer parameters (offsets, clamps, add params, ...)
    arrays: dict = field(default_factory=dict)  # constant arrays: filter, bias, multiplier, shift
    segment: int = 0  # the exit block this step belongs to
    exit_index: int = -1  # >= 0 when the output is exit k's logits
    exits_needing: int = 0  # bit k set when exit k depends on this step
    scratch_bytes: int = 0
    macs: int = 0
    act: tuple = ("none",)  # the op's fused activation, in real units (the float trainer uses it)
    float_arrays: dict = field(default_factory=dict)  # float weights in the layout of `arrays` (filter, bias)


def nhwc(shape):
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    n, c, h, w = shape4(shape)
    return (n, h, w, c)


def conv_scratch_bytes(in_dims, kh, kw, c_out, dsp):
    """Must equal mt_conv_s8_get_buffer_size() (checked at run time by model_init and by tests): widened weights
    of one channel block (budget: 8 x the input tensor within [8 KB, 32 KB], at least one quad), the input band
    (or im2col columns), trash outputs."""
    if not dsp:
        return 0
    n, h, w, c_in = in_dims
    kpairs = (kh * kw * c_in + 3) // 4 * 2
    quad = 68 + 16 * kpairs
    budget = min(32768, max(8192, 8 * n * h * w * c_in))
    block = min((c_out + 3) // 4, max(1, budget // quad))
    x = 10 * kpairs
    if c_in % 4 == 0 and kh * kw > 1 and kh <= 16:
        cols = ((w + kw - 1 + 1) // 2 - 1) + kw
        x = max(x, cols * kh * c_in * 4)
    return block * quad + x + (c_out + 3) // 4 * 4


def dwconv_scratch_bytes(in_dims, kh, kw, c_out, dsp):
    """Must equal mt_depthwise_conv_s8_get_buffer_size(): the quads' records and widened weights, a ring of KH
    widened input rows and a zero row, trash outputs (0 where the DSP scratch path does not apply)."""
    c_in, w = in_dims[3], in_dims[2]
    if not dsp or c_out != c_in or c_out < 4:
        return 0
    quads = (c_out + 3) // 4
    w_out = w + kw - 1
    cols = ((w_out + 1) // 2 * 2 - 1) + kw
    return quads * (17 + 2 * kh * kw) * 4 + (kh + 1) * cols * quads * 8 + (c_out + 3) // 4 * 4


def lower(graph, dsp):
    """The schedule as a list of Step. Reshapes emit no step: their outputs share their input's buffer."""
    alias = {}
    flatten_from = {}  # reshape output -> the 4-D NCHW shape it flattened
    steps = []
    exit_of = {name: k for k, name in enumerate(graph.exits)}
    needing = {}
    for k, name in enumerate(graph.exits):
        for i in graph.ancestors(name):
            needing[i] = needing.get(i, 0) | (1 << k)

    def buf(t):
        while t in alias:
            t = alias[t]
        return t

    for i, segment in graph.schedule():
        op = graph.ops[i]
        q = dict(op.q)
        in_shape = graph.shapes[op.inputs[0]]
        out_shape = graph.shapes[op.output]
        if op.kind == "reshape":
            alias[op.output] = op.inputs[0]
            src = shape4(in_shape) if len(in_shape) >= 3 else None
            if src is not None and src[2] * src[3] > 1:
                flatten_from[op.output] = src
            elif op.inputs[0] in flatten_from:
                flatten_from[op.output] = flatten_from[op.inputs[0]]
            if op.output in exit_of:
                raise ValueError("an exit produced by a reshape")  # _pick_exits prevents this
            continue
        arrays, float_arrays = {}, {}
        kernel = op.kind
        if op.kind == "conv":
            arrays["filter"] = np.ascontiguousarray(q.pop("w").transpose(0, 2, 3, 1))  # OIHW -> OHWI
            float_arrays["filter"] = np.ascontiguousarray(op.params["w"].transpose(0, 2, 3, 1), np.float32)
        elif op.kind == "dwconv":
            w = q.pop("w")  # (C_out, 1, KH, KW) -> (KH, KW, C_out)
            arrays["filter"] = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
            q["ch_mult"] = w.shape[0] // nhwc(in_shape)[3]
        elif op.kind == "dense":
            w, wf = q.pop("w"), op.params["w"]
            src = flatten_from.get(op.inputs[0])
            if src is not None:  # the input was flattened in NCHW order; ours is NHWC
                _, c, h, wd = src
                w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
                wf = wf.reshape(wf.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(wf.shape[0], -1)
            arrays["filter"] = np.ascontiguousarray(w)
            float_arrays["filter"] = np.ascontiguousarray(wf, np.float32)
        elif op.kind in ("avgpool", "gap"):
            kernel = "avgpool"
        for key in ("bias", "multiplier", "shift"):
            if key in q:
                arrays[key] = np.asarray(q.pop(key), np.int32)
        q.pop("w_scale", None)
        if float_arrays:
            float_arrays["bias"] = np.asarray(op.params["b"], np.float32).reshape(-1)
        if op.kind in ("conv", "dwconv", "maxpool"):
            q.update(kernel=op.attrs["kernel"], stride=op.attrs["stride"], padding=op.attrs["padding"])
        step = Step(kernel, op.name, [buf(t) for t in op.inputs], op.output, nhwc(in_shape), nhwc(out_shape), q,
                    arrays, segment, exit_of.get(op.output, -1), needing.get(i, 0), macs=op.macs, act=op.act,
                    float_arrays=float_arrays)
        if op.kind in ("conv", "dwconv"):
            kh, kw = op.attrs["kernel"]
            size = conv_scratch_bytes if op.kind == "conv" else dwconv_scratch_bytes
            step.scratch_bytes = size(step.in_dims, kh, kw, step.out_dims[3], dsp)
        steps.append(step)
    return steps

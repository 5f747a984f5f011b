"""Quantised IR -> kernel steps in the kernels' layout (NHWC; 1-D as H = 1): what the C template emits and
what the numpy reference runs, so both execute exactly the same list."""
from dataclasses import dataclass, field

import numpy as np

from codegen.passes import shape4


@dataclass
class Step:
    kernel: str  # conv, conv_dilated, dwconv, dense, maxpool, avgpool, add, relu, lut, mul, concat, pad, resize
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
    scratch_buffer: str = ""  # the arena buffer of the kernel's scratch: '<output>.scratch' unless shared
    macs: int = 0
    view: tuple = None  # (buffer, byte offset, buffer size): the step writes into part of another buffer
    act: tuple = ("none",)  # the op's fused activation, in real units (the float trainer uses it)
    float_arrays: dict = field(default_factory=dict)  # float weights in the layout of `arrays` (filter, bias), w_scale

    @property
    def scratch(self):
        return self.scratch_buffer or f"{self.output}.scratch"


def nhwc(shape):
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    n, c, h, w = shape4(shape)
    return (n, h, w, c)


def conv_band_shape(kh, kw, c_in):
    """mt_conv_band_shape(): the DSP conv reads its windows from a band of widened input rows, not im2col."""
    return c_in % 4 == 0 and kh * kw > 1 and kh <= 16


def conv_scratch_bytes(in_dims, kh, kw, c_out, dsp, quads=None):
    """Must equal mt_conv_s8_get_buffer_size() (checked at run time by model_init and by tests): widened weights
    of one channel block (budget: 8 x the input tensor within [8 KB, 32 KB], at least one quad), the input band
    (or im2col columns), trash outputs. quads = k: a block of k quads instead (the kernel derives its block from
    the scratch it gets; the outputs do not depend on it); quads = 0: no weights, the filter being packed
    (mt_conv_s8_get_packed_buffer_size())."""
    if not dsp:
        return 0
    n, h, w, c_in = in_dims
    kpairs = (kh * kw * c_in + 3) // 4 * 2
    quad = 68 + 16 * kpairs
    budget = min(32768, max(8192, 8 * n * h * w * c_in))
    block = min((c_out + 3) // 4, max(1, budget // quad) if quads is None else quads)
    x = 10 * kpairs
    if conv_band_shape(kh, kw, c_in):
        cols = ((w + kw - 1 + 1) // 2 - 1) + kw
        x = max(x, cols * kh * c_in * 4)
    return block * quad + x + (c_out + 3) // 4 * 4


def conv_min_scratch_bytes(kh, kw, c_in):
    """Must equal mt_conv_s8_get_min_buffer_size(): one quad of widened weights and the im2col columns."""
    kpairs = (kh * kw * c_in + 3) // 4 * 2
    return 68 + 16 * kpairs + 10 * kpairs


def _int16_pairs(lo, hi):
    """Words of two int16 halves (lo in bits 0-15), as int32."""
    return ((lo.astype(np.int64) & 0xFFFF) | ((hi.astype(np.int64) & 0xFFFF) << 16)).astype(np.uint32).view(np.int32)


def pack_conv_filter(filt, bias, multiplier, shift, output_offset):
    """The DSP conv's weight records made at compile time (mt_conv_s8.c: mt_conv_widen_block, mt_pass_record), so
    the board keeps them in flash and its scratch holds no weights: per quad of output channels (the last one
    overlapping its neighbour) {4 biases, first channel, 4 x (multiplier, round, k = ~shift)}, then per group of 4
    K values the quad's (k0, k2) pairs and its (k1, k3) pairs as int16; K in OHWI order or, for the band, in
    (kx, ky, c) order."""
    c_out, kh, kw, c_in = filt.shape
    rows = (filt.transpose(0, 2, 1, 3) if conv_band_shape(kh, kw, c_in) else filt).reshape(c_out, -1)
    groups = (rows.shape[1] + 3) // 4
    rows = np.pad(rows, ((0, 0), (0, 4 * groups - rows.shape[1]))).reshape(c_out, groups, 4)
    words = []
    for first in range(0, c_out, 4):
        ch = min(first, c_out - 4) if c_out >= 4 else 0
        rec, w = np.zeros(17, np.int64), np.zeros((groups, 8), np.int32)
        rec[4] = ch
        for c in range(4):
            oc = ch + c
            k = ~int(shift[oc]) if oc < c_out else 1
            rec[6 + 3 * c] = ((1 << (k - 1)) + output_offset * (1 << k)) % 2**32 if 1 <= k <= 22 else 0
            rec[7 + 3 * c] = k
            if oc < c_out:
                rec[c], rec[5 + 3 * c] = bias[oc], multiplier[oc]
                w[:, c] = _int16_pairs(rows[oc, :, 0], rows[oc, :, 2])
                w[:, 4 + c] = _int16_pairs(rows[oc, :, 1], rows[oc, :, 3])
        words += [rec.astype(np.uint32).view(np.int32), w.reshape(-1)]
    return np.concatenate(words)


def dwconv_scratch_bytes(in_dims, kh, kw, c_out, dsp):
    """Must equal mt_depthwise_conv_s8_get_buffer_size(): the quads' records and widened weights, a ring of KH + 1
    widened input rows and a zero row, trash outputs (0 where the DSP scratch path does not apply)."""
    c_in, w = in_dims[3], in_dims[2]
    if not dsp or c_out != c_in or c_out < 4:
        return 0
    quads = (c_out + 3) // 4
    w_out = w + kw - 1
    cols = ((w_out + 1) // 2 * 2 - 1) + kw
    return quads * (17 + 2 * kh * kw) * 4 + (kh + 2) * cols * quads * 8 + (c_out + 3) // 4 * 4


DILATED_PIXELS = 8  # output pixels gathered per call of the dense kernel (mt_conv_dilated_s8.c)


def conv_dilated_scratch_bytes(kh, kw, c_in, out_pixels):
    """Must equal mt_conv_dilated_s8_get_buffer_size(): the gathered taps of up to 8 output pixels."""
    return (min(DILATED_PIXELS, out_pixels) * kh * kw * c_in + 3) // 4 * 4


def lower(graph, dsp):
    """The schedule as a list of Step. Reshapes emit no step: their outputs share their input's buffer."""
    alias = {}
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
        if op.kind == "reshape":  # a view: the bytes stay where they are (onnx_import checked the order)
            alias[op.output] = op.inputs[0]
            if op.output in exit_of:
                raise ValueError("an exit produced by a reshape")  # _pick_exits resolves views
            continue
        arrays, float_arrays = {}, {}
        kernel = op.kind
        if op.kind == "conv":
            if "dilation" in op.attrs:
                kernel = "conv_dilated"
                q["dilation"] = op.attrs["dilation"]
            arrays["filter"] = np.ascontiguousarray(q.pop("w").transpose(0, 2, 3, 1))  # OIHW -> OHWI
            float_arrays["filter"] = np.ascontiguousarray(op.params["w"].transpose(0, 2, 3, 1), np.float32)
        elif op.kind == "dwconv":
            w = q.pop("w")  # (C_out, 1, KH, KW) -> (KH, KW, C_out)
            arrays["filter"] = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
            q["ch_mult"] = w.shape[0] // nhwc(in_shape)[3]
        elif op.kind == "dense":
            w, wf = q.pop("w"), op.params["w"]
            order = op.attrs.get("in_order")
            if order is not None:  # stored input byte i holds feature order[i] (e.g. an NCHW flatten of NHWC data)
                w, wf = w[:, order], wf[:, order]
            arrays["filter"] = np.ascontiguousarray(w)
            float_arrays["filter"] = np.ascontiguousarray(wf, np.float32)
        elif op.kind in ("avgpool", "gap"):
            kernel = "avgpool"
        elif op.kind == "gmp":  # a max pool whose window is the whole map
            kernel = "maxpool"
            _, h, w, _ = nhwc(in_shape)
            q.update(kernel=(h, w), stride=(1, 1), padding=(0, 0, 0, 0))
        elif op.kind == "lut":
            arrays["table"] = np.asarray(q.pop("table"), np.int8)
        elif op.kind == "mul":
            if "input2" in q:
                arrays["input2"] = np.asarray(q.pop("input2"), np.int8)
                q["input2_size"] = arrays["input2"].size
            else:
                q["input2_size"] = int(np.prod(graph.shapes[op.inputs[1]]))
        elif op.kind == "concat":
            q["channels"] = [nhwc(graph.shapes[t])[3] for t in op.inputs]
        elif op.kind == "pad":
            q["padding"] = op.attrs["padding"]
        elif op.kind == "resize":
            arrays["rows"], arrays["cols"] = (np.asarray(m, np.int32) for m in op.attrs["maps"])
        for key in ("bias", "multiplier", "shift"):
            if key in q and not np.isscalar(q[key]):
                arrays[key] = np.asarray(q.pop(key), np.int32)
        w_scale = q.pop("w_scale", None)
        if float_arrays:
            float_arrays["bias"] = np.asarray(op.params["b"], np.float32).reshape(-1)
            float_arrays["w_scale"] = np.asarray(w_scale, np.float32).reshape(-1)
        if op.kind in ("conv", "dwconv", "maxpool"):
            q.update(kernel=op.attrs["kernel"], stride=op.attrs["stride"], padding=op.attrs["padding"])
        step = Step(kernel, op.name, [buf(t) for t in op.inputs], op.output, nhwc(in_shape), nhwc(out_shape), q,
                    arrays, segment, exit_of.get(op.output, -1), needing.get(i, 0), macs=op.macs, act=op.act,
                    float_arrays=float_arrays)
        if kernel in ("conv", "dwconv"):
            kh, kw = op.attrs["kernel"]
            size = conv_scratch_bytes if kernel == "conv" else dwconv_scratch_bytes
            step.scratch_bytes = size(step.in_dims, kh, kw, step.out_dims[3], dsp)
        elif kernel == "conv_dilated":
            kh, kw = op.attrs["kernel"]
            step.scratch_bytes = conv_dilated_scratch_bytes(kh, kw, step.in_dims[3],
                                                            step.out_dims[1] * step.out_dims[2])
        steps.append(step)
    return concat_in_place(steps)


def concat_in_place(steps):
    """A channel Concat whose output is one pixel (pooled features, dense outputs) has contiguous channel
    ranges: the producing steps write straight into them and the Concat step disappears. Only when each input
    is a plain copy (same quantisation), written by a step that nothing else reads."""
    readers = {}
    for s in steps:
        for t in s.inputs:
            readers[t] = readers.get(t, 0) + 1
    writer = {s.output: s for s in steps}
    kept = []
    for s in steps:
        producers = [writer.get(t) for t in s.inputs]
        if s.kernel == "concat" and s.out_dims[1] * s.out_dims[2] == 1 and s.exit_index < 0 \
                and all(p is not None and p.exit_index < 0 and p.view is None and readers[p.output] == 1
                        for p in producers) and not any(q["requantize"] for q in s.q["inputs"]) \
                and len(set(s.inputs)) == len(s.inputs):
            size, start = int(np.prod(s.out_dims)), 0
            for p, c in zip(producers, s.q["channels"]):
                p.view = (s.output, start, size)
                start += c
            continue
        kept.append(s)
    return kept

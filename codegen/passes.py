"""Graph rewrites on the float IR, each a small function: fold BatchNorm into the conv before it, fuse a
constant Pad into the padding of the op after it, fuse activations into their producer, count MACs."""
import numpy as np

from codegen.ir import CompileError


def fold_batchnorm(graph):
    for bn in [op for op in graph.ops if op.kind == "batchnorm"]:
        conv = graph.producer(bn.inputs[0])
        if conv is not None and "w_q" in conv.params:
            raise CompileError(f"node '{bn.name}' (BatchNormalization) follows a conv with quantised weights: fold "
                               "it before quantising (onnxruntime.quantization.quant_pre_process does)")
        if conv is None or conv.kind not in ("conv", "dwconv", "dense") or len(graph.consumers(conv.output)) != 1 \
                or conv.act != ("none",):
            raise CompileError(f"node '{bn.name}' (BatchNormalization) must directly follow a Conv, Gemm or "
                               "MatMul to be folded into it")
        p = bn.params
        g = p["gamma"] / np.sqrt(p["var"] + p["epsilon"])
        w = conv.params["w"]
        conv.params["w"] = (w * g.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
        conv.params["b"] = ((conv.params["b"] - p["mean"]) * g + p["beta"]).astype(np.float32)
        conv.output = bn.output
        graph.ops.remove(bn)


# Kernels that end with an output clamp (mt_activation).
CLAMPING_KINDS = ("conv", "dwconv", "dense", "maxpool", "avgpool", "gap", "gmp", "add", "mul")


def fuse_pads(graph):
    """A constant Pad read only by convolutions (value 0: they pad with real zeros), average pools counting
    padded taps (value 0) or max pools (value -inf: they ignore padded taps) becomes their own padding."""
    for pad in [op for op in graph.ops if op.kind == "pad"]:
        readers = graph.consumers(pad.output)
        v = pad.attrs["value"]

        def takes(op):
            if op.kind in ("conv", "dwconv") or (op.kind == "avgpool" and op.attrs["count_include_pad"]):
                return v == 0.0
            return op.kind == "maxpool" and v <= -3e38

        if not readers or pad.output in graph.exits or not all(takes(op) for op in readers):
            continue
        for op in readers:
            op.attrs["padding"] = tuple(a + b for a, b in zip(op.attrs["padding"], pad.attrs["padding"]))
            op.inputs = [pad.inputs[0] if t == pad.output else t for t in op.inputs]
        graph.ops.remove(pad)


def fuse_activations(graph):
    """relu/clip after an op whose output nobody else reads becomes that op's output clamp."""
    for act in [op for op in graph.ops if op.kind == "relu"]:
        producer = graph.producer(act.inputs[0])
        if producer is None or producer.kind not in CLAMPING_KINDS or producer.act != ("none",) \
                or len(graph.consumers(producer.output)) != 1 or producer.output in graph.exits:
            continue
        producer.act = act.act
        producer.output = act.output
        graph.ops.remove(act)


def shape4(shape):
    return (shape[0], shape[1], 1, shape[2]) if len(shape) == 3 else tuple(shape)


def count_macs(graph):
    for op in graph.ops:
        if op.kind in ("conv", "dwconv"):
            n, c_out, oh, ow = shape4(graph.shapes[op.output])
            kh, kw = op.attrs["kernel"]  # taps of a dilated kernel count once each
            c_in_per_out = 1 if op.kind == "dwconv" else op.params["w"].shape[1]
            op.attrs["macs"] = n * c_out * oh * ow * kh * kw * c_in_per_out
        elif op.kind == "dense":
            op.attrs["macs"] = int(np.prod(op.params["w"].shape))


def macs_per_exit(graph):
    """MACs the board spends when it leaves at exit k: every op scheduled up to k (earlier heads included)."""
    totals, running = [], 0
    schedule = graph.schedule()
    for k in range(len(graph.exits)):
        running += sum(graph.ops[i].macs for i, seg in schedule if seg == k)
        totals.append(running)
    return totals


def run_passes(graph):
    fold_batchnorm(graph)
    fuse_pads(graph)
    fuse_activations(graph)
    count_macs(graph)
    return graph

"""onnxruntime's QOperator format (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, ... as in the ONNX zoo's int8
MNIST) rewritten to the QDQ format the importer reads: each quantised operator becomes DequantizeLinear on its
inputs, the float operator, and QuantizeLinear on its output, with the same scales, zero points, int8 weights
and int32 biases. Nothing is requantised here: the importer then takes the quantisation exactly as given."""
import numpy as np
from onnx import helper, numpy_helper

# op type -> (float op, input slots [(value, scale, zero point)], output (scale, zero point) slots or None)
_QLINEAR = {
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QGemm": ("Gemm", [(0, 1, 2), (3, 4, 5)], (7, 8)),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], (3, 4)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], (3, 4)),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], (3, 4)),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], (3, 4)),
    "QLinearSoftmax": ("Softmax", [(0, 1, 2)], (3, 4)),
}
# Attributes of the com.microsoft operators that the float operator does not have.
_DROP_ATTRS = {"channels_last", "opset"}


def is_qoperator(model):
    return any(n.op_type in _QLINEAR or n.op_type == "QLinearConcat" for n in model.graph.node)


def to_qdq(model):
    """Rewrite every QOperator node of `model` (in place) into DequantizeLinear -> float op -> QuantizeLinear.
    Returns the names of the nodes rewritten."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes, rewritten = [], []
    count = [0]

    def fresh(base):
        count[0] += 1
        return f"{base}__qdq{count[0]}"

    def dq(value, scale, zp, axis=None):
        out = fresh(value)
        attrs = {"axis": axis} if axis is not None else {}
        nodes.append(helper.make_node("DequantizeLinear", [value, scale, zp] if zp else [value, scale], [out],
                                      name=fresh("dq"), **attrs))
        return out

    def array(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for node in g.node:
        ins = list(node.input)
        if node.op_type == "QLinearConcat":  # Y_scale, Y_zp, then (X, X_scale, X_zp) per input
            floats = [dq(ins[i], ins[i + 1], ins[i + 2]) for i in range(2, len(ins), 3)]
            y = fresh(node.output[0])
            nodes.append(helper.make_node("Concat", floats, [y], name=node.name,
                                          axis=helper.get_attribute_value(node.attribute[0])
                                          if node.attribute else 1))
            nodes.append(helper.make_node("QuantizeLinear", [y, ins[0], ins[1]], [node.output[0]], name=fresh("q")))
            rewritten.append(node.name)
            continue
        if node.op_type not in _QLINEAR:
            nodes.append(node)
            continue
        float_op, slots, out_slot = _QLINEAR[node.op_type]
        floats = []
        for k, (v, s, z) in enumerate(slots):
            scale = array(ins[s])
            axis = None
            if k == 1 and float_op == "Conv" and scale is not None and scale.size > 1:
                axis = 0  # per output channel
            elif k == 1 and float_op in ("MatMul", "Gemm") and scale is not None and scale.size > 1:
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                axis = 0 if trans_b else 1
            floats.append(dq(ins[v], ins[s], ins[z] if z < len(ins) else "", axis))
        if float_op == "Conv" and len(ins) > 8 and ins[8]:
            floats.append(_bias(ins[8], array(ins[1]), array(ins[4]), g, inits, dq, fresh))
        if float_op == "Gemm" and len(ins) > 6 and ins[6]:
            floats.append(_bias(ins[6], array(ins[1]), array(ins[4]), g, inits, dq, fresh))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in _DROP_ATTRS}
        has_out_scale = out_slot[0] < len(ins) and ins[out_slot[0]]
        y = fresh(node.output[0]) if has_out_scale else node.output[0]
        nodes.append(helper.make_node(float_op, floats, [y], name=node.name, **attrs))
        if has_out_scale:
            zp = ins[out_slot[1]] if out_slot[1] < len(ins) else ""
            nodes.append(helper.make_node("QuantizeLinear", [y, ins[out_slot[0]], zp] if zp else
                                          [y, ins[out_slot[0]]], [node.output[0]], name=fresh("q")))
        rewritten.append(node.name)
    del g.node[:]
    g.node.extend(nodes)
    return rewritten


def _bias(name, x_scale, w_scale, g, inits, dq, fresh):
    """An int32 bias with scale x_scale * w_scale (zero point 0), dequantised like QDQ models do."""
    if x_scale is None or w_scale is None:
        return name
    scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32).reshape(-1)
    s = fresh(f"{name}_scale")
    g.initializer.append(numpy_helper.from_array(scale if scale.size > 1 else scale.reshape(()), s))
    return dq(name, s, "", 0 if scale.size > 1 else None)

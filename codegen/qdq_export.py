"""Our quantised graph as a standard QDQ ONNX model: the same int8 weights, int32 biases and activation
scales, in float ops between QuantizeLinear/DequantizeLinear pairs. onnxruntime runs it as an independent
reference (it requantises in float, so expect at most 1 LSB differences from our integer kernels).
Outputs are the exits' int8 logits, named after the exits."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from codegen import elementwise, quant


def export_qdq(graph):
    nodes, inits = [], []
    qp = graph.qparams
    counter = [0]

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def fresh(base):
        counter[0] += 1
        return f"{base}__{counter[0]}"

    def q_dq(tensor_float, tensor_name, out_name=None):
        """Quantise to the tensor's int8 parameters; return the dequantised float name (and the int8 one)."""
        scale, zp = qp[tensor_name]
        s = const(fresh(f"{tensor_name}_scale"), np.float32(scale))
        z = const(fresh(f"{tensor_name}_zp"), np.int8(zp))
        q = out_name or fresh(f"{tensor_name}_q")
        dq = fresh(f"{tensor_name}_dq")
        nodes.append(helper.make_node("QuantizeLinear", [tensor_float, s, z], [q]))
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq]))
        return dq, q

    def weight(name, w_q, scales):
        q = const(fresh(f"{name}_wq"), w_q.astype(np.int8))
        s = const(fresh(f"{name}_ws"), scales.astype(np.float32))
        z = const(fresh(f"{name}_wz"), np.zeros(len(scales), np.int8))
        out = fresh(f"{name}_w")
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out], axis=0))
        return out

    def bias(name, b_q, in_scale, w_scales):
        q = const(fresh(f"{name}_bq"), b_q.astype(np.int32))
        s = const(fresh(f"{name}_bs"), (np.float32(in_scale) * w_scales).astype(np.float32))
        z = const(fresh(f"{name}_bz"), np.zeros(len(w_scales), np.int32))
        out = fresh(f"{name}_b")
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out], axis=0))
        return out

    def activation(op, x):
        kind = op.act[0]
        if kind == "none":
            return x
        out = fresh(f"{op.output}_act")
        if kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out]))
        else:
            lo, hi = op.act[1], op.act[2]
            nodes.append(helper.make_node("Clip", [x, const(fresh("lo"), np.float32(max(lo, -3e38))),
                                                   const(fresh("hi"), np.float32(min(hi, 3e38)))], [out]))
        return out

    in_shape = graph.shapes[graph.input]
    fl = {}
    fl[graph.input], _ = q_dq(graph.input, graph.input)

    def spatial_attrs(op):
        (kh, kw), (sh, sw), (t, l, b, r) = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
        dh, dw = op.attrs.get("dilation", (1, 1))
        if len(graph.shapes[op.inputs[0]]) == 3:
            return dict(kernel_shape=[kw], strides=[sw], pads=[l, r], dilations=[dw])
        return dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[t, l, b, r], dilations=[dh, dw])

    def reshape(x, shape, y):
        nodes.append(helper.make_node("Reshape", [x, const(fresh("shape"), np.array(shape, np.int64))], [y]))

    def per_channel(vec, like):
        """A (C,) vector shaped to broadcast along the channel axis of a tensor of shape `like`."""
        return np.asarray(vec, np.float32).reshape(1, -1, *[1] * (len(like) - 2))

    for op in graph.ops:
        x = fl[op.inputs[0]]
        y = fresh(op.output)
        in_scale = qp[op.inputs[0]][0]
        if op.kind in ("conv", "dwconv"):
            w_q = op.q["w"]
            if len(graph.shapes[op.inputs[0]]) == 3:
                w_q = w_q.reshape(w_q.shape[0], w_q.shape[1], w_q.shape[3])
            attrs = spatial_attrs(op)
            attrs.pop("kernel_shape")
            if op.kind == "dwconv":
                attrs["group"] = graph.shapes[op.inputs[0]][1]
            nodes.append(helper.make_node("Conv", [x, weight(op.output, w_q, op.q["w_scale"]),
                                                   bias(op.output, op.q["bias"], in_scale, op.q["w_scale"])],
                                          [y], **attrs))
        elif op.kind == "dense":
            nodes.append(helper.make_node("Gemm", [x, weight(op.output, op.q["w"], op.q["w_scale"]),
                                                   bias(op.output, op.q["bias"], in_scale, op.q["w_scale"])],
                                          [y], transB=1))
        elif op.kind == "maxpool":
            attrs = spatial_attrs(op)
            attrs.pop("dilations")
            nodes.append(helper.make_node("MaxPool", [x], [y], **attrs))
        elif op.kind == "avgpool":
            attrs = spatial_attrs(op)
            attrs.pop("dilations")
            nodes.append(helper.make_node("AveragePool", [x], [y], **attrs,
                                          count_include_pad=int(op.attrs["count_include_pad"])))
        elif op.kind in ("gap", "gmp"):
            g = fresh(op.kind)
            nodes.append(helper.make_node("GlobalAveragePool" if op.kind == "gap" else "GlobalMaxPool", [x], [g]))
            reshape(g, graph.shapes[op.output], y)
        elif op.kind == "add":
            nodes.append(helper.make_node("Add", [x, fl[op.inputs[1]]], [y]))
        elif op.kind == "relu":
            nodes.append(helper.make_node("Identity", [x], [y]))
        elif op.kind == "reshape":
            if "perm" in op.attrs:
                nodes.append(helper.make_node("Transpose", [x], [y], perm=op.attrs["perm"]))
            else:
                reshape(x, graph.shapes[op.output], y)
        elif op.kind == "lut":
            nodes.append(helper.make_node("Identity", [elementwise.export(op.attrs["chain"], x, nodes,
                                                                          lambda v: const(fresh("c"), v), fresh)],
                                          [y]))
        elif op.kind == "mul":
            if "const" in op.attrs:
                vec = quant.dequantize(op.q["input2"], op.q["input2_scale"], op.q["input2_zp"])
                other = const(fresh("mul_c"), per_channel(vec, graph.shapes[op.output]))
            else:
                other = fl[op.inputs[1]]
            nodes.append(helper.make_node("Mul", [x, other], [y]))
        elif op.kind == "concat":
            nodes.append(helper.make_node("Concat", [fl[t] for t in op.inputs], [y], axis=1))
        elif op.kind == "pad":
            t, l, b, r = op.attrs["padding"]
            rank = len(graph.shapes[op.inputs[0]])
            pads = [0, 0, l, 0, 0, r] if rank == 3 else [0, 0, t, l, 0, 0, b, r]
            value = quant.dequantize(op.q["pad_value"], *qp[op.output])
            nodes.append(helper.make_node("Pad", [x, const(fresh("pads"), np.array(pads, np.int64)),
                                                  const(fresh("value"), np.float32(value))], [y]))
        elif op.kind == "resize":
            rows, cols = op.attrs["maps"]
            g = fresh("rows")
            rank = len(graph.shapes[op.inputs[0]])
            if rank == 4:
                nodes.append(helper.make_node("Gather", [x, const(fresh("rows"), rows.astype(np.int64))], [g], axis=2))
            else:
                g = x
            nodes.append(helper.make_node("Gather", [g, const(fresh("cols"), cols.astype(np.int64))], [y],
                                          axis=rank - 1))
        else:
            raise ValueError(op.kind)
        y = activation(op, y)
        if op.output in graph.exits:
            name = graph.exit_names[graph.exits.index(op.output)]
            fl[op.output], _ = q_dq(y, op.output, out_name=name)
        else:
            fl[op.output], _ = q_dq(y, op.output)

    inputs = [helper.make_tensor_value_info(graph.input, TensorProto.FLOAT, list(in_shape))]
    outputs = [helper.make_tensor_value_info(name, TensorProto.INT8, list(graph.shapes[e]))
               for e, name in zip(graph.exits, graph.exit_names)]
    model = helper.make_model(helper.make_graph(nodes, "mcu_train_qdq", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model

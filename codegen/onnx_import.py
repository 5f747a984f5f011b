"""ONNX -> IR: read and check the file, fix the batch size to 1, fold constant subgraphs, map each node to
an IR op (or an alias for Identity / Dropout / activation Q-DQ pairs), keep what a QDQ model says about
quantisation. Anything else fails with the node's name, its op type and the supported list."""
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from codegen.ir import CompileError, Graph, Op, as_float

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "ReduceMean", "BatchNormalization", "Add", "Flatten", "Reshape", "Squeeze",
                 "QuantizeLinear", "DequantizeLinear", "Identity", "Dropout")
# Ops accepted only when every input is a constant (they fold away): shape arithmetic from exporters.
FOLDABLE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Mul", "Div", "Sub", "Slice",
                "Transpose", "Sqrt", "Reciprocal", "ConstantOfShape", "Range", "Expand")


def read_model(path):
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    try:
        model = onnx.load_from_string(path.read_bytes())
    except Exception as e:  # protobuf raises several types for truncated or foreign files
        raise CompileError(f"{path} is not a readable ONNX model (truncated or not ONNX?): {e}") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise CompileError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0]}") from None
    return model


def fix_input_shape(model):
    """Batch size 1; any other dimension must be fixed. Returns (input name, static shape)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise CompileError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                           "mcu-train compiles models with exactly one")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    shape = []
    for axis, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)
        elif axis == 0:
            d.ClearField("dim_param")
            d.dim_value = 1
            shape.append(1)
        else:
            raise CompileError(f"input '{inp.name}' has a dynamic dimension "
                               f"{d.dim_param or '?'!r} at axis {axis}: export the model with a fixed shape")
    if shape[0] != 1:
        raise CompileError(f"input '{inp.name}' has batch size {shape[0]}; export with batch size 1 or dynamic")
    if len(shape) not in (3, 4):
        raise CompileError(f"input '{inp.name}' has shape {tuple(shape)}: expected (N, C, L) or (N, C, H, W)")
    return inp.name, tuple(shape)


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _evaluate(node, values):
    """Run one node on constant inputs with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    ins = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
    outs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
    g = onnx.helper.make_graph([node], "fold", ins, outs)
    ref = ReferenceEvaluator(onnx.helper.make_model(g))
    results = ref.run(None, {n: values[n] for n in node.input if n})
    return dict(zip(node.output, results))


def _as_4d(shape):
    """(N, C, L) -> (N, C, 1, L); others unchanged."""
    return (shape[0], shape[1], 1, shape[2]) if len(shape) == 3 else tuple(shape)


def _spatial(pads, kernel, strides, node):
    """ONNX pads/kernel/strides of a 1-D or 2-D op -> (kernel (kh, kw), stride, padding (t, l, b, r))."""
    if len(kernel) == 1:
        pads = pads or [0, 0]
        return (1, kernel[0]), (1, (strides or [1])[0]), (0, pads[0], 0, pads[1])
    if len(kernel) == 2:
        pads = pads or [0, 0, 0, 0]
        s = strides or [1, 1]
        return tuple(kernel), (s[0], s[1]), (pads[0], pads[1], pads[2], pads[3])
    raise CompileError(f"node '{node.name}' ({node.op_type}) is {len(kernel)}-D; only 1-D and 2-D are supported")


def _unsupported(node, why=None):
    what = f"node '{node.name}' has op type {node.op_type}"
    if why:
        return CompileError(f"{what}: {why}")
    return CompileError(f"{what}, which mcu-train cannot compile. Supported op types: {', '.join(SUPPORTED_OPS)}")


def _unsupported_shape(op, shape):
    return CompileError(f"node '{op.name}' reshapes to {tuple(shape)}: only flattening to (N, features) before "
                        "a dense layer is supported")


def _check_no_auto_pad(node, a):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _unsupported(node, "auto_pad is not supported: export with explicit pads")
    if any(d != 1 for d in a.get("dilations", [])):
        raise _unsupported(node, "dilation other than 1 is not supported")


def import_onnx(path, exits=None):
    """Read `path` and return (IR graph, the static-shape ONNX model used for calibration)."""
    model = read_model(path)
    input_name, input_shape = fix_input_shape(model)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        raise CompileError(f"shape inference failed: {str(e).splitlines()[0]}") from None
    shapes = {input_name: input_shape}
    for vi in [*model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)

    const = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantised_const = {}  # DequantizeLinear of a constant: name -> (int array, scale, zero point, axis)
    alias = {}  # tensor -> the tensor it is a copy of
    given_qparams = {}
    ops = []

    def src(name):
        while name in alias:
            name = alias[name]
        return name

    def need_const(node, name, what):
        if name not in const:
            raise _unsupported(node, f"its {what} '{name}' must be a constant initializer")
        return const[name]

    for node in model.graph.node:
        ins = [src(n) if n else "" for n in node.input]
        a = _attrs(node)
        op_type = node.op_type
        if op_type == "Constant":
            const[node.output[0]] = numpy_helper.to_array(a["value"]) if "value" in a else np.array(
                next(iter(a.values())))
            continue
        if op_type == "Shape" and ins[0] in shapes:
            const[node.output[0]] = np.array(shapes[ins[0]], dtype=np.int64)
            continue
        if op_type == "DequantizeLinear" and ins[0] in const:
            q, scale = const[ins[0]], const[ins[1]]
            zp = const[ins[2]] if len(ins) > 2 and ins[2] else np.zeros_like(scale, dtype=q.dtype)
            axis = a.get("axis", 1)
            quantised_const[node.output[0]] = (q, scale, zp, axis)
            const.update(_evaluate(node, const))
            continue
        if all(n in const for n in ins if n) and op_type not in ("QuantizeLinear",):
            if op_type not in FOLDABLE_OPS and op_type not in SUPPORTED_OPS:
                raise _unsupported(node)
            const.update(_evaluate(node, const))
            continue
        if op_type in ("Identity", "Dropout"):
            alias[node.output[0]] = ins[0]
            if len(node.output) > 1 and node.output[1]:
                raise _unsupported(node, "a Dropout mask output is not supported")
            continue
        if op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = float(need_const(node, ins[1], "scale"))
            zp = need_const(node, ins[2], "zero point") if len(ins) > 2 and ins[2] else np.int8(0)
            zp_int8 = int(zp) - 128 if zp.dtype == np.uint8 else int(zp)  # uint8 data is int8 shifted by 128
            if zp.dtype not in (np.int8, np.uint8):
                raise _unsupported(node, f"only int8/uint8 quantisation is supported, not {zp.dtype}")
            given_qparams[ins[0]] = (scale, zp_int8)
            alias[node.output[0]] = ins[0]
            continue
        out = node.output[0]
        name = node.name or f"{op_type}_{len(ops)}"

        def weights(tensor_name):
            """Float weights and, for QDQ models, the int8 values and scales they came from."""
            w = as_float(need_const(node, tensor_name, "weight"))
            return w, quantised_const.get(tensor_name)

        if op_type == "Conv":
            _check_no_auto_pad(node, a)
            w, wq = weights(ins[1])
            group = a.get("group", 1)
            kernel, stride, padding = _spatial(a.get("pads"), list(w.shape[2:]), a.get("strides"), node)
            w = w.reshape(w.shape[0], w.shape[1], *kernel)
            params = {"w": w, "b": as_float(const[ins[2]]) if len(ins) > 2 and ins[2] else np.zeros(w.shape[0], np.float32)}
            if wq is not None:
                params["w_q"] = wq[0].reshape(w.shape)
                params["w_scale"] = np.broadcast_to(as_float(wq[1]).reshape(-1), (w.shape[0],)).copy()
                if np.any(wq[2] != 0):
                    raise _unsupported(node, "weights must be quantised symmetrically (zero point 0)")
            if len(ins) > 2 and ins[2] in quantised_const:
                params["b_q"] = quantised_const[ins[2]][0].astype(np.int32)
            c_in = _as_4d(shapes[ins[0]])[1]
            if group == 1:
                kind = "conv"
            elif group == c_in and w.shape[1] == 1:
                kind = "dwconv"
            else:
                raise _unsupported(node, f"grouped convolution (group={group}) is supported only as depthwise")
            ops.append(Op(kind, name, [ins[0]], out, dict(kernel=kernel, stride=stride, padding=padding), params))
        elif op_type == "BatchNormalization":
            p = {k: as_float(need_const(node, n, k)) for k, n in zip(("gamma", "beta", "mean", "var"), ins[1:5])}
            p["epsilon"] = a.get("epsilon", 1e-5)
            ops.append(Op("batchnorm", name, [ins[0]], out, {}, p))
        elif op_type == "Relu":
            ops.append(Op("relu", name, [ins[0]], out, act=("relu",)))
        elif op_type == "Clip":
            lo = float(const[ins[1]]) if len(ins) > 1 and ins[1] else float(a.get("min", -np.inf))
            hi = float(const[ins[2]]) if len(ins) > 2 and ins[2] else float(a.get("max", np.inf))
            ops.append(Op("relu", name, [ins[0]], out, act=("clip", lo, hi)))
        elif op_type in ("MaxPool", "AveragePool"):
            _check_no_auto_pad(node, a)
            if a.get("ceil_mode", 0):
                raise _unsupported(node, "ceil_mode=1 is not supported")
            kernel, stride, padding = _spatial(a.get("pads"), a["kernel_shape"], a.get("strides"), node)
            attrs = dict(kernel=kernel, stride=stride, padding=padding,
                         count_include_pad=bool(a.get("count_include_pad", 0)))
            ops.append(Op("maxpool" if op_type == "MaxPool" else "avgpool", name, [ins[0]], out, attrs))
        elif op_type == "GlobalAveragePool":
            ops.append(Op("gap", name, [ins[0]], out))
        elif op_type == "ReduceMean":
            rank = len(shapes[ins[0]])
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = const[ins[1]].tolist()
            if sorted(ax % rank for ax in (axes or [])) != list(range(2, rank)):
                raise _unsupported(node, f"ReduceMean is supported over the spatial axes only, not {axes}")
            ops.append(Op("gap", name, [ins[0]], out))
        elif op_type in ("Gemm", "MatMul"):
            if op_type == "Gemm" and a.get("transA", 0):
                raise _unsupported(node, "transA=1 is not supported")
            w, wq = weights(ins[1])
            trans_b = a.get("transB", 0) if op_type == "Gemm" else 0
            alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
            w_mk = (w if trans_b else w.T) * alpha  # y = x @ w_mk.T
            b = as_float(const[ins[2]]).reshape(-1) * beta if len(ins) > 2 and ins[2] else np.zeros(w_mk.shape[0], np.float32)
            params = {"w": np.ascontiguousarray(w_mk), "b": np.broadcast_to(b, (w_mk.shape[0],)).copy()}
            if wq is not None:
                if alpha != 1.0:
                    raise _unsupported(node, "alpha other than 1 is not supported with quantised weights")
                q = wq[0] if trans_b else wq[0].T
                params["w_q"] = np.ascontiguousarray(q)
                params["w_scale"] = np.broadcast_to(as_float(wq[1]).reshape(-1), (w_mk.shape[0],)).copy()
            if len(ins) > 2 and ins[2] in quantised_const:
                params["b_q"] = quantised_const[ins[2]][0].astype(np.int32).reshape(-1)
            ops.append(Op("dense", name, [ins[0]], out, {}, params))
        elif op_type == "Add":
            consts = [n for n in ins if n in const]
            if not consts:
                ops.append(Op("add", name, ins[:2], out))
                continue
            other = next(n for n in ins if n not in const)
            prev = ops[-1] if ops else None
            if prev is None or prev.output != other or prev.kind != "dense" or "bias_added" in prev.attrs:
                raise _unsupported(node, "adding a constant is supported only as the bias of a MatMul")
            prev.params["b"] = prev.params["b"] + as_float(const[consts[0]]).reshape(-1)
            if consts[0] in quantised_const:
                prev.params["b_q"] = quantised_const[consts[0]][0].astype(np.int32).reshape(-1)
            prev.attrs["bias_added"] = True
            prev.output = out
        elif op_type in ("Flatten", "Reshape", "Squeeze"):
            ops.append(Op("reshape", name, [ins[0]], out))
        else:
            raise _unsupported(node)

    for op in ops:  # our own shape inference where ONNX's gave up
        if op.output not in shapes:
            shapes[op.output] = _infer_shape(op, [shapes[t] for t in op.inputs])
        if op.kind == "reshape" and len(shapes[op.output]) != 2:
            raise _unsupported_shape(op, shapes[op.output])
    graph_outputs = [src(o.name) for o in model.graph.output]
    metadata = {p.key: p.value for p in model.metadata_props}
    graph = Graph(input_name, {k: tuple(v) for k, v in shapes.items()}, ops, exits=[], metadata=metadata,
                  given_qparams=given_qparams)
    graph.exits, graph.exit_names = _pick_exits(graph, graph_outputs, exits, [o.name for o in model.graph.output],
                                                alias)
    return graph, model


def _infer_shape(op, in_shapes):
    """Output shape of an IR op, for outputs ONNX's shape inference left unknown (e.g. a Reshape whose target
    shape was computed by Shape/Gather/Concat nodes that only became constants when we folded them)."""
    x = in_shapes[0]
    if op.kind in ("relu", "add"):
        return x
    if op.kind == "reshape":
        return (x[0], int(np.prod(x[1:])))  # Flatten/Reshape/Squeeze to (N, features): the forms we support
    if op.kind == "dense":
        return (x[0], op.params["w"].shape[0])
    if op.kind == "gap":
        return (x[0], x[1])
    (kh, kw), (sh, sw), (t, l, b, r) = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
    n, c, h, w = _as_4d(x)
    c_out = op.params["w"].shape[0] if op.kind in ("conv", "dwconv") else c
    oh, ow = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
    return (n, c_out, ow) if len(x) == 3 else (n, c_out, oh, ow)


def _pick_exits(graph, outputs, requested, output_names, alias):
    """Exit tensors, shallow to deep: --exits, else the mcu_train.exits metadata, else every (N, classes)
    graph output ordered by how much of the graph it needs."""
    def resolve(names, where):
        resolved = []
        for n in names:
            n = n.strip()
            if n not in output_names and n not in graph.shapes:
                raise CompileError(f"exit '{n}' named by {where} is not an output of the model "
                                   f"(outputs: {', '.join(output_names)})")
            while n in alias:
                n = alias[n]
            resolved.append(n)
        return resolved

    if requested:
        names = list(requested)
    elif "mcu_train.exits" in graph.metadata:
        names = graph.metadata["mcu_train.exits"].split(",")
    else:
        names = sorted((name for name, o in zip(output_names, outputs) if len(graph.shapes.get(o, ())) == 2),
                       key=lambda name: len(graph.ancestors(outputs[output_names.index(name)])))
    exits = resolve(names, "--exits" if requested else "mcu_train.exits")
    names = [n.strip() for n in names]
    if not exits:
        raise CompileError("the model has no exits: no graph output is a (N, classes) tensor of logits "
                           f"(outputs: {', '.join(f'{o} {graph.shapes.get(o)}' for o in output_names)})")
    for e in exits:
        if len(graph.shapes.get(e, ())) != 2 or graph.producer(e) is None:
            raise CompileError(f"exit '{e}' has shape {graph.shapes.get(e)}; an exit must be (N, classes) logits "
                               "computed from the input")
    return exits, names

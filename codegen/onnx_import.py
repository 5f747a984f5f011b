"""ONNX -> IR: read and check the file, fix the batch size to 1, rewrite onnxruntime's QOperator nodes to QDQ,
fold constant subgraphs, map each node to an IR op (or an alias for Identity / Dropout / Q-DQ pairs / views
that move no data), keep what a QDQ model says about quantisation. Every node that cannot be compiled is
collected, so one run lists them all (node name, op type, what is not supported, what to do).

Layout: activations are stored channels-last (NHWC; (N, C, L) as (N, L, C); (N, K) as it is). Every tensor's
*storage order* is tracked: which logical element each stored byte holds. A Transpose / Reshape / Flatten /
Squeeze / Unsqueeze only relabels the stored bytes, so it becomes a view; compute ops need their input in
the canonical order, except a dense layer, which takes any order by permuting its weight columns (that is
how a flatten of an NCHW tensor reaches it). The model input may be stored as given (an NHWC input followed by
a Transpose to NCHW, as TFLite conversions have): the Transpose is then a view too."""
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import numpy_helper, shape_inference

from codegen.ir import CompileError, Graph, Op, as_float
from codegen.qoperator import is_qoperator, to_qdq

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "GlobalMaxPool", "ReduceMean", "ReduceMax", "BatchNormalization", "Add", "Sub", "Mul", "Div",
                 "Concat", "Pad", "Resize", "Softmax", "LogSoftmax", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
                 "Transpose", "QuantizeLinear", "DequantizeLinear", "Identity", "Dropout", "Sigmoid",
                 "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu", "Softplus", "Neg", "Exp", "Abs",
                 "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu")
# Ops accepted only when every input is a constant (they fold away): shape arithmetic from exporters.
FOLDABLE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Mul", "Div", "Sub", "Slice",
                "Transpose", "Sqrt", "Reciprocal", "ConstantOfShape", "Range", "Expand", "Squeeze", "Reshape",
                "Add", "Neg", "Equal", "Where", "Floor", "Ceil", "Min", "Max", "ReduceProd", "Size")
VIEW_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose")
MAC_KINDS = ("conv", "dwconv", "dense")


def read_model(path):
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    try:
        model = onnx.load_from_string(path.read_bytes())
    except Exception as e:  # protobuf raises several types for truncated or foreign files
        raise CompileError(f"{path} is not a readable ONNX model (truncated or not ONNX?): {e}") from None
    try:  # weights in a file next to the model (PyTorch's default exporter writes model.onnx.data)
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as e:
        raise CompileError(f"{path} keeps its weights in a separate file that cannot be read: {e}") from None
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
    if inp.type.tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise CompileError(f"input '{inp.name}' is of type "
                           f"{onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)}: mcu-train compiles "
                           "models with a float input")
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
    if len(shape) not in (2, 3, 4):
        raise CompileError(f"input '{inp.name}' has shape {tuple(shape)}: expected (N, features), (N, C, L) or "
                           "(N, C, H, W) (or the channels-last forms of the last two)")
    return inp.name, tuple(shape)


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _evaluate(node, values):
    """Run one node on constant inputs with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    ins = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
    outs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
    g = onnx.helper.make_graph([node], "fold", ins, outs)
    ref = ReferenceEvaluator(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 21)]))
    results = ref.run(None, {n: values[n] for n in node.input if n})
    return dict(zip(node.output, results))


def _as_4d(shape):
    """(N, C, L) -> (N, C, 1, L); others unchanged."""
    return (shape[0], shape[1], 1, shape[2]) if len(shape) == 3 else tuple(shape)


def canonical_perm(rank):
    """Axes of a logical (ONNX) tensor in storage order: channels last."""
    return (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))


def canonical_store(shape):
    """For each stored byte, the row-major logical index of the element it holds (canonical layout)."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(canonical_perm(len(shape))).ravel()


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class Problem(CompileError):
    pass


class Importer:
    def __init__(self, model, input_name, input_shape, shapes):
        self.model = model
        self.input = input_name
        self.shapes = shapes  # ONNX tensor name -> static shape
        self.const = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.quantised_const = {}  # DequantizeLinear of a constant: name -> (int array, scale, zero point, axis)
        self.alias = {}  # tensor -> the tensor it is a copy of
        self.given_qparams = {}
        self.store = {}  # tensor -> storage order (array) when not canonical
        self.ops = []
        self.producer = {}  # IR tensor -> op
        self.softmax = set()  # output names whose Softmax was absorbed
        self.probabilities = set()  # tensors that are an absorbed Softmax's output (their Q / DQ say nothing)
        self.problems = []
        self.broken = set()
        self.uses = Counter(n for node in model.graph.node for n in node.input if n)
        self.uses.update(o.name for o in model.graph.output)
        self.graph_outputs = {o.name for o in model.graph.output}
        self.consumers = {}
        for node in model.graph.node:
            for n in node.input:
                self.consumers.setdefault(n, []).append(node)
        self.input_transpose = canonical_perm(len(input_shape))
        self._choose_input_layout()

    # -- helpers -----------------------------------------------------------------------------------------------
    def src(self, name):
        while name in self.alias:
            name = self.alias[name]
        return name

    def shape(self, name):
        if name not in self.shapes:
            raise Problem(f"the shape of tensor '{name}' is unknown: export the model with static shapes")
        return self.shapes[name]

    def order(self, name):
        """Storage order of tensor `name` (array), canonical when not recorded."""
        s = self.store.get(name)
        return canonical_store(self.shape(name)) if s is None else s

    def need_const(self, name, what):
        if name not in self.const:
            raise Problem(f"its {what} '{name}' must be a constant initializer (it is computed at run time)")
        return self.const[name]

    def data(self, name, allow_any_order=False):
        """The IR tensor for a data input; refuses inputs stored in an order the op cannot read."""
        if name in self.const:
            raise Problem(f"its input '{name}' is a constant: only activations computed from the model input "
                          "are supported here")
        if not allow_any_order and self.store.get(name) is not None:
            raise Problem(f"its input '{name}' comes through a Transpose/Reshape that would reorder the data in "
                          "memory (channels-last layout): only flattening before a dense layer and transposes "
                          "that move no data are supported; export without that Transpose")
        return self.src(name)

    def add(self, op):
        self.ops.append(op)
        self.producer[op.output] = op
        return op

    def single_use(self, name):
        """True when IR tensor `name` has one reader and no quantisation of its own (it may be fused away)."""
        return self.uses[name] == 1 and name not in self.given_qparams and name not in self.graph_outputs

    def weights(self, node, tensor_name):
        """Float weights and, for QDQ models, the int8 values and scales they came from."""
        return as_float(self.need_const(tensor_name, "weight")), self.quantised_const.get(tensor_name)

    def _choose_input_layout(self):
        """An input whose only reader is a Transpose that makes it channels-first (NHWC -> NCHW) is stored as
        given: the Transpose becomes a view and the host sends the input as it is."""
        readers = self.consumers.get(self.input, [])
        shape = self.shapes[self.input]
        if len(readers) != 1 or readers[0].op_type != "Transpose" or len(shape) < 3:
            return
        perm = _attrs(readers[0]).get("perm")
        if perm is None:
            return
        idx = np.arange(int(np.prod(shape))).reshape(shape)
        out = idx.transpose(perm)
        if np.array_equal(out.transpose(canonical_perm(len(shape))).ravel(), idx.ravel()):
            self.store[self.input] = idx.ravel()
            self.input_transpose = tuple(range(len(shape)))

    # -- the walk ------------------------------------------------------------------------------------------------
    def run(self):
        for node in self.model.graph.node:
            try:
                self.visit(node)
            except Problem as e:
                self.problems.append(f"node '{node.name or node.output[0]}' ({node.op_type}): {e}")
                self.broken.update(node.output)
            except CompileError:
                raise
            except Exception:
                if not any(n in self.broken for n in node.input):
                    raise
                self.broken.update(node.output)

    def visit(self, node):
        ins = [self.src(n) if n else "" for n in node.input]
        a = _attrs(node)
        op_type = node.op_type
        if op_type == "Constant":
            self.const[node.output[0]] = numpy_helper.to_array(a["value"]) if "value" in a else np.array(
                next(iter(a.values())))
            return
        if op_type == "Shape" and node.input[0] in self.shapes:
            shape = np.array(self.shapes[node.input[0]], dtype=np.int64)
            start, end = a.get("start", 0), a.get("end")
            self.const[node.output[0]] = shape[start:end]
            return
        if op_type == "DequantizeLinear" and ins[0] in self.const:
            q, scale = self.const[ins[0]], self.const[ins[1]]
            zp = self.const[ins[2]] if len(ins) > 2 and ins[2] else np.zeros_like(scale, dtype=q.dtype)
            self.quantised_const[node.output[0]] = (q, scale, zp, a.get("axis", 1))
            self.const.update(_evaluate(node, self.const))
            return
        if all(n in self.const for n in ins if n) and op_type != "QuantizeLinear":
            if op_type not in FOLDABLE_OPS and op_type not in SUPPORTED_OPS:
                raise Problem(self.unknown(op_type))
            self.const.update(_evaluate(node, self.const))
            return
        handler = getattr(self, f"op_{op_type}", None)
        if handler is None or node.domain not in ("", "ai.onnx"):
            raise Problem(self.unknown(op_type))
        handler(node, ins, a, node.output[0], node.name or f"{op_type}_{len(self.ops)}")

    @staticmethod
    def unknown(op_type):
        return (f"op type {op_type}, which mcu-train cannot compile. Supported op types: "
                f"{', '.join(SUPPORTED_OPS)}")

    def alias_to(self, out, tensor):
        self.alias[out] = tensor
        if tensor in self.store:
            self.store[out] = self.store[tensor]

    # -- no-ops, quantisation, views ------------------------------------------------------------------------------
    def op_Identity(self, node, ins, a, out, name):
        self.alias_to(out, node.input[0])

    def op_Dropout(self, node, ins, a, out, name):
        if len(node.output) > 1 and node.output[1]:
            raise Problem("a Dropout mask output is not supported: export the model in eval mode")
        self.alias_to(out, node.input[0])

    def _qdq(self, node, ins, a, out, name):
        if node.input[0] in self.probabilities:  # the quantisation of probabilities: not the logits'
            self.probabilities.add(out)
            self.alias_to(out, node.input[0])
            return
        scale = np.asarray(self.need_const(ins[1], "scale"))
        zp = np.asarray(self.need_const(ins[2], "zero point")) if len(ins) > 2 and ins[2] else np.int8(0)
        if scale.size != 1 or zp.size != 1:
            raise Problem("per-axis quantisation of activations is not supported: quantise activations per tensor")
        if zp.dtype not in (np.int8, np.uint8):
            raise Problem(f"attribute/input zero point of type {zp.dtype} is not supported: quantise to int8 or uint8")
        zp_int8 = int(zp) - 128 if zp.dtype == np.uint8 else int(zp)  # uint8 data is int8 shifted by 128
        self.given_qparams[ins[0]] = (float(scale), zp_int8)
        self.alias_to(out, node.input[0])

    op_QuantizeLinear = op_DequantizeLinear = _qdq

    def _view(self, node, ins, a, out, name):
        x = node.input[0]
        if x in self.const:
            raise Problem("a view of a constant that is not folded")
        in_shape = self.shape(x)
        idx = np.arange(int(np.prod(in_shape))).reshape(in_shape)
        attrs = {}
        if node.op_type == "Transpose":
            perm = a.get("perm", list(range(len(in_shape)))[::-1])
            out_idx = idx.transpose(perm)
            attrs["perm"] = list(perm)
        else:
            out_shape = self.shapes.get(out) or self._view_shape(node, ins, a, in_shape)
            out_idx = idx.reshape(out_shape)
        self.shapes[out] = tuple(out_idx.shape)
        position = np.empty(idx.size, np.int64)
        position[out_idx.ravel()] = np.arange(idx.size)  # input element -> its logical index in the output
        order = position[self.order(x)]
        if not np.array_equal(order, canonical_store(out_idx.shape)):
            self.store[out] = order
        self.add(Op("reshape", name, [self.src(x)], out, attrs))

    op_Flatten = op_Reshape = op_Squeeze = op_Unsqueeze = op_Transpose = _view

    def _view_shape(self, node, ins, a, in_shape):
        if node.op_type == "Flatten":
            axis = a.get("axis", 1) % len(in_shape)
            return (int(np.prod(in_shape[:axis])), int(np.prod(in_shape[axis:])))
        if node.op_type == "Reshape":
            target = [int(v) for v in self.need_const(ins[1], "shape")]
            target = [in_shape[i] if v == 0 else v for i, v in enumerate(target)]
            return np.empty(in_shape, np.int8).reshape(target).shape
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = [int(v) for v in self.need_const(ins[1], "axes")]
        if node.op_type == "Squeeze":
            axes = [ax % len(in_shape) for ax in axes] if axes else [i for i, d in enumerate(in_shape) if d == 1]
            return tuple(d for i, d in enumerate(in_shape) if i not in axes)
        rank = len(in_shape) + len(axes)
        axes = sorted(ax % rank for ax in axes)
        shape = list(in_shape)
        for ax in axes:
            shape.insert(ax, 1)
        return tuple(shape)

    def op_Softmax(self, node, ins, a, out, name):
        shape = self.shape(node.input[0])
        axis = a.get("axis", -1 if self._opset() >= 13 else 1) % len(shape)
        if any(d != 1 for i, d in enumerate(shape) if i not in (0, axis)) or axis == 0:
            raise Problem(f"attribute axis={a.get('axis', 'default')} is not supported: only a Softmax over the "
                          "classes of (N, classes) logits is")
        end = out
        while end not in self.graph_outputs:
            readers = self.consumers.get(end, [])
            if len(readers) != 1 or readers[0].op_type not in ("Identity", "Flatten", "Reshape", "Squeeze",
                                                               "QuantizeLinear", "DequantizeLinear"):
                raise Problem("a Softmax is supported only as the model's last op (it is absorbed: the exit's "
                              "logits are its input); remove it from the middle of the graph")
            end = readers[0].output[0]
        self.softmax.add(end)
        self.probabilities.add(out)
        self.alias_to(out, node.input[0])
        self.shapes.setdefault(out, shape)

    op_LogSoftmax = op_Softmax

    def _opset(self):
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)

    # -- compute ops ---------------------------------------------------------------------------------------------
    def spatial(self, node, a, kernel, out, pool=False):
        """Kernel, stride, padding (t, l, b, r) and dilation of a 1-D or 2-D op, in 2-D form, with auto_pad and
        ceil_mode resolved to explicit padding."""
        x_shape = self.shape(node.input[0])
        nd = len(kernel)
        if nd not in (1, 2) or len(x_shape) != nd + 2:
            raise Problem(f"a {nd}-D {node.op_type} on a tensor of shape {x_shape} is not supported: only 1-D and "
                          "2-D are")
        strides = list(a.get("strides") or [1] * nd)
        dil = list(a.get("dilations") or [1] * nd)
        if pool and any(d != 1 for d in dil):
            raise Problem(f"attribute dilations={dil} is not supported on pooling: use dilation 1")
        auto_pad = _s(a.get("auto_pad", "NOTSET"))
        spatial_in = list(x_shape[2:])
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # output ceil(n / s); the odd pixel at the end (UPPER)
            begin, end = [], []
            for n, k, s in zip(spatial_in, eff, strides):
                total = max(0, (-(-n // s) - 1) * s + k - n)
                begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
                end.append(total - begin[-1])
            pads = begin + end
        elif auto_pad == "VALID":
            pads = [0] * (2 * nd)
        elif auto_pad == "NOTSET":
            pads = list(a.get("pads") or [0] * (2 * nd))
        else:
            raise Problem(f"attribute auto_pad={auto_pad} is not supported")
        if a.get("ceil_mode", 0):
            if out not in self.shapes:
                raise Problem("ceil_mode=1 needs the output shape: export the model with static shapes")
            for i in range(nd):
                need = (self.shapes[out][2 + i] - 1) * strides[i] + eff[i] - (spatial_in[i] + pads[i] + pads[nd + i])
                pads[nd + i] += max(0, need)
        if any(p < 0 for p in pads):
            raise Problem(f"negative pads {pads} are not supported")
        if nd == 1:
            return (1, kernel[0]), (1, strides[0]), (0, pads[0], 0, pads[1]), (1, dil[0])
        return tuple(kernel), tuple(strides), (pads[0], pads[1], pads[2], pads[3]), tuple(dil)

    def op_Conv(self, node, ins, a, out, name):
        w, wq = self.weights(node, ins[1])
        x = self.data(node.input[0])
        group = a.get("group", 1)
        kernel, stride, padding, dilation = self.spatial(node, a, list(w.shape[2:]), out)
        w = w.reshape(w.shape[0], w.shape[1], *kernel)
        params = {"w": w, "b": as_float(self.const[ins[2]]).reshape(-1) if len(ins) > 2 and ins[2]
                  else np.zeros(w.shape[0], np.float32)}
        if wq is not None:
            if np.any(wq[2] != 0):  # asymmetric weights: requantised symmetrically per channel by the compiler
                wq = None
            else:
                params["w_q"] = wq[0].reshape(w.shape)
                params["w_scale"] = np.broadcast_to(as_float(wq[1]).reshape(-1), (w.shape[0],)).copy()
        if len(ins) > 2 and ins[2] in self.quantised_const and wq is not None:
            params["b_q"] = self.quantised_const[ins[2]][0].astype(np.int32).reshape(-1)
        c_in = self.shape(node.input[0])[1]
        if group == 1:
            kind = "conv"
        elif group == c_in and w.shape[1] == 1:
            kind = "dwconv"
            if dilation != (1, 1):
                raise Problem(f"attribute dilations={list(a.get('dilations'))} is not supported on a depthwise "
                              "convolution: use dilation 1 there")
        else:
            raise Problem(f"attribute group={group} is not supported: grouped convolution only as depthwise "
                          f"(group = input channels = {c_in})")
        attrs = dict(kernel=kernel, stride=stride, padding=padding)
        if dilation != (1, 1):
            attrs["dilation"] = dilation
        self.add(Op(kind, name, [x], out, attrs, params))

    def op_BatchNormalization(self, node, ins, a, out, name):
        p = {k: as_float(self.need_const(n, k)) for k, n in zip(("gamma", "beta", "mean", "var"), ins[1:5])}
        p["epsilon"] = a.get("epsilon", 1e-5)
        if len([o for o in node.output if o]) > 1:
            raise Problem("training-mode outputs (running mean / var) are not supported: export in eval mode")
        self.add(Op("batchnorm", name, [self.data(node.input[0])], out, {}, p))

    def _act(self, node, out, step, act):
        """ReLU / Clip: merged into an elementwise table before it, else an activation op (fused later)."""
        x = node.input[0]
        prev = self.producer.get(self.src(x))
        if prev is not None and prev.kind == "lut" and self.single_use(prev.output):
            return self.extend_lut(prev, out, step)
        op = self.add(Op("relu", node.name or out, [self.data(x, allow_any_order=True)], out, act=act))
        self.alias_store(out, x)
        return op

    def alias_store(self, out, x):
        if x in self.store:
            self.store[out] = self.store[x]

    def op_Relu(self, node, ins, a, out, name):
        self._act(node, out, ("Relu",), ("relu",))

    def op_Clip(self, node, ins, a, out, name):
        lo = float(self.need_const(ins[1], "min")) if len(ins) > 1 and ins[1] else float(a.get("min", -np.inf))
        hi = float(self.need_const(ins[2], "max")) if len(ins) > 2 and ins[2] else float(a.get("max", np.inf))
        self._act(node, out, ("Clip", lo, hi), ("clip", lo, hi))

    def extend_lut(self, prev, out, step):
        prev.attrs["chain"] = prev.attrs["chain"] + [step]
        del self.producer[prev.output]
        prev.output = out
        self.producer[out] = prev
        return prev

    def lut(self, node, out, step, x=None):
        """An elementwise function of one tensor: appended to the table before it when nothing else reads
        that, else a new table."""
        x = x or node.input[0]
        prev = self.producer.get(self.src(x))
        if prev is not None and prev.kind == "lut" and self.single_use(prev.output) and step[0] != "MulInput":
            return self.extend_lut(prev, out, step)
        op = self.add(Op("lut", node.name or out, [self.data(x, allow_any_order=True)], out, {"chain": [step]}))
        self.alias_store(out, x)
        return op

    def _unary(self, node, ins, a, out, name):
        t = node.op_type
        if t == "HardSigmoid":
            step = (t, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5)))
        elif t == "LeakyRelu":
            step = (t, float(a.get("alpha", 0.01)))
        elif t == "Elu":
            step = (t, float(a.get("alpha", 1.0)))
        else:
            step = (t,)
        self.lut(node, out, step)

    op_Sigmoid = op_HardSigmoid = op_HardSwish = op_LeakyRelu = op_Tanh = op_Elu = op_Neg = op_Exp = _unary
    op_Softplus = op_Abs = _unary

    def channel_vector(self, c, out_shape):
        """A constant that broadcasts to `out_shape` and varies only along the channel axis -> (C,) or None."""
        c = np.asarray(c, np.float32)
        if c.ndim > len(out_shape):
            return None
        try:
            full = np.broadcast_to(c, out_shape)
        except ValueError:
            return None
        vec = full.reshape(out_shape[0], out_shape[1], -1)[0, :, 0]
        return vec if np.array_equal(full, np.broadcast_to(vec.reshape(1, -1, *[1] * (len(out_shape) - 2)),
                                                              out_shape)) else None

    def fold_affine(self, x, out, scale=None, shift=None):
        """y = x * scale + shift (per channel) folded into the conv / dense that produces x. True when done."""
        prev = self.producer.get(self.src(x))
        if prev is None or prev.kind not in MAC_KINDS or prev.act != ("none",) or not self.single_use(prev.output) \
                or "w_q" in prev.params or x != prev.output:
            return False
        vec = self.channel_vector(scale if scale is not None else shift, self.shape(out))
        if vec is None:
            return False
        if scale is not None:
            prev.params["w"] = (prev.params["w"] * vec.reshape(-1, *[1] * (prev.params["w"].ndim - 1))).astype(
                np.float32)
            prev.params["b"] = (prev.params["b"] * vec).astype(np.float32)
        else:
            prev.params["b"] = (prev.params["b"] + vec).astype(np.float32)
        prev.params.pop("b_q", None)
        del self.producer[prev.output]
        prev.output = out
        self.producer[out] = prev
        return True

    def _binary(self, node, ins, a, out, name):
        t = node.op_type
        x, y = node.input[0], node.input[1]
        cx, cy = x in self.const, y in self.const
        if not cx and not cy:
            if t == "Add":
                if self.shape(x) != self.shape(y):
                    raise Problem(f"adding tensors of shapes {self.shape(x)} and {self.shape(y)} (broadcasting) is "
                                  "not supported: only same-shape residual additions are")
                self.add(Op("add", name, [self.data(x), self.data(y)], out))
                return
            if t == "Mul":
                return self.mul(node, x, y, out, name)
            raise Problem(f"{t} of two computed tensors is not supported: only Add and Mul are (and {t} by a "
                          "constant)")
        data, c = (y, self.const[x]) if cx else (x, self.const[y])
        c = np.asarray(c, np.float32)
        if t == "Sub":
            if cx:
                return self.scalar_lut(node, data, out, "SubFrom", c)
            t, c = "Add", -c
        if t == "Div":
            if cx:
                return self.scalar_lut(node, data, out, "DivInto", c)
            t, c = "Mul", 1.0 / c
        if self.fold_affine(data, out, scale=c if t == "Mul" else None, shift=c if t == "Add" else None):
            return
        if c.size == 1:
            return self.scalar_lut(node, data, out, t, c)
        if t == "Mul" and self.channel_vector(c, self.shape(out)) is not None:
            vec = self.channel_vector(c, self.shape(out))
            self.add(Op("mul", name, [self.data(data)], out, {"const": vec}))
            return
        raise Problem(f"{t} of a constant of shape {c.shape} is supported only right after a Conv / Gemm / MatMul "
                      "(it is folded into the weights or bias) or as a scalar")

    op_Add = op_Sub = op_Mul = op_Div = _binary

    def scalar_lut(self, node, data, out, kind, c):
        if c.size != 1:
            raise Problem(f"{node.op_type} with a constant of shape {c.shape} is supported only as a scalar")
        self.lut(node, out, (kind, float(c.reshape(-1)[0])), x=data)

    def mul(self, node, x, y, out, name):
        """Product of two tensors: x * f(x) is one table (SiLU, HardSwish written out); else a Mul kernel,
        the second factor the same shape or one value per channel (a gate)."""
        for a_, b_ in ((x, y), (y, x)):
            gate = self.producer.get(self.src(b_))
            if gate is not None and gate.kind == "lut" and gate.inputs[0] == self.src(a_) \
                    and self.single_use(gate.output) and b_ == gate.output:
                return self.extend_lut(gate, out, ("MulInput",))
        sx, sy = self.shape(x), self.shape(y)
        if sx != sy and int(np.prod(sx)) < int(np.prod(sy)):
            x, y, sx, sy = y, x, sy, sx
        if sx != sy and not (sy[:2] == sx[:2] and all(d == 1 for d in sy[2:])):
            raise Problem(f"multiplying tensors of shapes {sx} and {sy} is not supported: only the same shape or "
                          "one value per channel (N, C, 1, 1)")
        self.add(Op("mul", name, [self.data(x), self.data(y)], out))

    def op_Gemm(self, node, ins, a, out, name):
        if a.get("transA", 0):
            raise Problem("attribute transA=1 is not supported: export the layer as x @ W.T")
        self._dense(node, ins, out, name, a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0))

    def op_MatMul(self, node, ins, a, out, name):
        if ins[1] not in self.const:
            raise Problem("a MatMul of two computed tensors is not supported: the second input must be constant "
                          "weights")
        self._dense(node, ins, out, name, 0, 1.0, 1.0)

    def _dense(self, node, ins, out, name, trans_b, alpha, beta):
        x = node.input[0]
        if len(self.shape(x)) != 2:
            raise Problem(f"its input has shape {self.shape(x)}: a dense layer takes (N, features); flatten first")
        w, wq = self.weights(node, ins[1])
        w_mk = (w if trans_b else w.T) * alpha  # y = x @ w_mk.T
        b = as_float(self.const[ins[2]]).reshape(-1) * beta if len(ins) > 2 and ins[2] \
            else np.zeros(w_mk.shape[0], np.float32)
        params = {"w": np.ascontiguousarray(w_mk), "b": np.broadcast_to(b, (w_mk.shape[0],)).copy()}
        if wq is not None and not np.any(wq[2] != 0):
            if alpha != 1.0:
                raise Problem("attribute alpha other than 1 is not supported with quantised weights")
            q = wq[0] if trans_b else wq[0].T
            params["w_q"] = np.ascontiguousarray(q)
            params["w_scale"] = np.broadcast_to(as_float(wq[1]).reshape(-1), (w_mk.shape[0],)).copy()
            if len(ins) > 2 and ins[2] in self.quantised_const:
                params["b_q"] = self.quantised_const[ins[2]][0].astype(np.int32).reshape(-1)
        attrs = {}
        order = self.order(x)
        if not np.array_equal(order, np.arange(order.size)):
            attrs["in_order"] = order  # stored byte i holds feature order[i]: the weight columns follow
        self.add(Op("dense", name, [self.data(x, allow_any_order=True)], out, attrs, params))

    def _pool(self, node, ins, a, out, name):
        if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
            raise Problem("the Indices output of MaxPool is not supported")
        if a.get("storage_order", 0):
            raise Problem("attribute storage_order=1 is not supported")
        kernel, stride, padding, _ = self.spatial(node, a, list(a["kernel_shape"]), out, pool=True)
        include = bool(a.get("count_include_pad", 0))
        if include and a.get("ceil_mode", 0) and self.spatial(node, {**a, "ceil_mode": 0}, list(a["kernel_shape"]),
                                                              out, pool=True)[2] != padding:
            raise Problem("count_include_pad=1 with ceil_mode=1 windows past the padding is not supported")
        attrs = dict(kernel=kernel, stride=stride, padding=padding, count_include_pad=include)
        kind = "maxpool" if node.op_type == "MaxPool" else "avgpool"
        self.add(Op(kind, name, [self.data(node.input[0])], out, attrs))

    op_MaxPool = op_AveragePool = _pool

    def op_GlobalAveragePool(self, node, ins, a, out, name):
        self.add(Op("gap", name, [self.data(node.input[0])], out))

    def op_GlobalMaxPool(self, node, ins, a, out, name):
        self.add(Op("gmp", name, [self.data(node.input[0])], out))

    def _reduce(self, node, ins, a, out, name):
        shape = self.shape(node.input[0])
        rank = len(shape)
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = self.need_const(ins[1], "axes").tolist()
        reduced = {ax % rank for ax in (axes or [])}
        spatial = {i for i in range(2, rank) if shape[i] > 1}
        if not axes or not spatial <= reduced or reduced & {0, 1}:
            raise Problem(f"attribute axes={axes} is not supported: {node.op_type} only over the spatial axes "
                          f"(a global pooling) of an (N, C, ...) tensor")
        self.add(Op("gap" if node.op_type == "ReduceMean" else "gmp", name, [self.data(node.input[0])], out))

    op_ReduceMean = op_ReduceMax = _reduce

    def op_Concat(self, node, ins, a, out, name):
        shape = self.shape(node.input[0])
        axis = a.get("axis", 1) % len(shape)
        if axis != 1:
            raise Problem(f"attribute axis={a.get('axis')} is not supported: Concat only along channels (axis 1)")
        self.add(Op("concat", name, [self.data(n) for n in node.input], out, {"axis": 1}))

    def op_Pad(self, node, ins, a, out, name):
        mode = _s(a.get("mode", "constant"))
        if mode != "constant":
            raise Problem(f"attribute mode={mode} is not supported: only constant padding")
        pads = a.get("pads") if "pads" in a else self.need_const(ins[1], "pads").tolist()
        value = float(a.get("value", 0.0)) if len(ins) < 3 or not ins[2] else float(self.need_const(ins[2], "value"))
        shape = self.shape(node.input[0])
        rank = len(shape)
        if len(ins) > 3 and ins[3]:
            full = [0] * (2 * rank)
            for i, ax in enumerate(self.need_const(ins[3], "axes").tolist()):
                full[ax % rank], full[rank + ax % rank] = pads[i], pads[len(pads) // 2 + i]
            pads = full
        if any(pads[i] or pads[rank + i] for i in (0, 1)) or min(pads) < 0 or rank not in (3, 4):
            raise Problem(f"pads={pads} are not supported: only non-negative padding of the spatial axes")
        padding = (0, pads[2], 0, pads[5]) if rank == 3 else (pads[2], pads[3], pads[6], pads[7])
        self.add(Op("pad", name, [self.data(node.input[0])], out, {"padding": padding, "value": value}))

    def op_Resize(self, node, ins, a, out, name):
        mode = _s(a.get("mode", "nearest"))
        if mode != "nearest":
            raise Problem(f"attribute mode={mode} is not supported: only nearest")
        shape = self.shape(node.input[0])
        out_shape = self.shape(out)
        if out_shape[:2] != shape[:2] or len(shape) not in (3, 4):
            raise Problem(f"resizing {shape} to {out_shape} is not supported: only the spatial axes")
        self.add(Op("resize", name, [self.data(node.input[0])], out, {"maps": self._resize_maps(node, shape,
                                                                                                 out_shape)}))

    def _resize_maps(self, node, shape, out_shape):
        """Source row / column of each output row / column, by running the node on an index image."""
        index_shape = (1, 1, *shape[2:])
        values = dict(self.const)
        probe = node.input[0] + "__index"
        values[probe] = np.arange(int(np.prod(index_shape)), dtype=np.float32).reshape(index_shape)
        ins = [probe, *node.input[1:]]
        if len(ins) > 3 and ins[3]:  # sizes
            values[ins[3] + "__index"] = np.array([1, 1, *out_shape[2:]], np.int64)
            ins[3] = ins[3] + "__index"
        for n in ins[1:]:
            if n and n not in values:
                raise Problem(f"its input '{n}' (roi / scales / sizes) must be a constant")
        probe_node = onnx.helper.make_node("Resize", ins, [node.output[0] + "__index"], **_attrs(node))
        idx = _evaluate(probe_node, values)[probe_node.output[0]].astype(np.int64).reshape(out_shape[2:])
        w = shape[-1]
        rows = idx[:, 0] // w if idx.ndim == 2 else np.zeros(1, np.int64)
        cols = idx[0] % w if idx.ndim == 2 else idx % w
        if idx.ndim == 2 and not np.array_equal(idx, rows[:, None] * w + cols[None, :]):
            raise Problem("this Resize does not map rows and columns separately")
        return rows.astype(np.int32), cols.astype(np.int32)


def import_onnx(path, exits=None, values=False):
    """Read `path` and return (IR graph, the static-shape ONNX model used for calibration)."""
    model = read_model(path)
    input_name, input_shape = fix_input_shape(model)
    if is_qoperator(model):
        to_qdq(model)
    shape_error = None
    try:
        model = shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        shape_error = str(e).splitlines()[0]
        model = shape_inference.infer_shapes(model)
    shapes = {input_name: input_shape}
    for vi in [*model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)

    imp = Importer(model, input_name, input_shape, shapes)
    imp.run()
    ops = imp.ops
    for op in ops:  # our own shape inference where ONNX's gave up
        if op.output not in shapes and not any(t in imp.broken for t in op.inputs):
            try:
                shapes[op.output] = _infer_shape(op, [shapes[t] for t in op.inputs])
            except KeyError:
                pass
    if imp.problems:
        if len(imp.problems) == 1:
            raise CompileError(imp.problems[0])
        raise CompileError(f"{len(imp.problems)} nodes cannot be compiled:\n  " + "\n  ".join(imp.problems))
    missing = [op.output for op in ops if op.output not in shapes]
    if missing:
        raise CompileError(f"shape inference failed: {shape_error or f'no shape for {missing[0]}'}")
    metadata = {p.key: p.value for p in model.metadata_props}
    graph = Graph(input_name, {k: tuple(v) for k, v in shapes.items()}, ops, exits=[], metadata=metadata,
                  given_qparams=imp.given_qparams)
    graph.input_transpose = list(imp.input_transpose)
    output_names = [o.name for o in model.graph.output]
    graph.values = values or metadata.get("mcu_train.outputs") == "values" or _looks_like_values(
        shapes, output_names, input_shape, exits or metadata.get("mcu_train.exits"))
    graph.exits, graph.exit_names = _pick_exits(graph, [imp.src(o) for o in output_names], exits, output_names,
                                                imp.alias)
    graph.softmax = [name in imp.softmax for name in graph.exit_names]
    for e, name in zip(graph.exits, graph.exit_names):
        if imp.store.get(name) is not None and not np.array_equal(imp.store[name], canonical_store(shapes[e])):
            raise CompileError(f"output '{name}' is a transposed view that would need a copy: export without the "
                               "final Transpose")
    return graph, model


def _looks_like_values(shapes, output_names, input_shape, named_exits):
    """A model without classes: one output that is not (N, classes) logits, i.e. a map, a single value, or
    the input's own shape (an autoencoder)."""
    if named_exits or len(output_names) != 1:
        return False
    shape = shapes.get(output_names[0])
    return shape is not None and (len(shape) != 2 or shape[1] == 1 or tuple(shape) == tuple(input_shape))


def _infer_shape(op, in_shapes):
    """Output shape of an IR op, for outputs ONNX's shape inference left unknown (e.g. a Reshape whose target
    shape was computed by Shape/Gather/Concat nodes that only became constants when we folded them)."""
    x = in_shapes[0]
    if op.kind in ("relu", "add", "lut", "mul"):
        return x
    if op.kind == "dense":
        return (x[0], op.params["w"].shape[0])
    if op.kind in ("gap", "gmp"):
        return (x[0], x[1], *[1] * (len(x) - 2))
    if op.kind == "concat":
        return (x[0], sum(s[1] for s in in_shapes), *x[2:])
    if op.kind == "pad":
        t, l, b, r = op.attrs["padding"]
        return (*x[:2], x[2] + l + r) if len(x) == 3 else (*x[:2], x[2] + t + b, x[3] + l + r)
    (kh, kw), (sh, sw), (t, l, b, r) = op.attrs["kernel"], op.attrs["stride"], op.attrs["padding"]
    dh, dw = op.attrs.get("dilation", (1, 1))
    n, c, h, w = _as_4d(x)
    c_out = op.params["w"].shape[0] if op.kind in ("conv", "dwconv") else c
    oh, ow = (h + t + b - (kh - 1) * dh - 1) // sh + 1, (w + l + r - (kw - 1) * dw - 1) // sw + 1
    return (n, c_out, ow) if len(x) == 3 else (n, c_out, oh, ow)


def _pick_exits(graph, outputs, requested, output_names, alias):
    """Exit tensors, shallow to deep: --exits, else the mcu_train.exits metadata, else every (N, classes)
    graph output ordered by how much of the graph it needs (a model without classes: its one output)."""
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

    def logits_shape(name):
        shape = graph.shapes.get(name, ())
        return len(shape) >= 2 and all(d == 1 for d in shape[2:])

    if requested:
        names = list(requested)
    elif "mcu_train.exits" in graph.metadata:
        names = graph.metadata["mcu_train.exits"].split(",")
    elif graph.values:
        names = output_names[:1]
    else:
        names = sorted((name for name, o in zip(output_names, outputs) if len(graph.shapes.get(name, ())) == 2),
                       key=lambda name: len(graph.ancestors(outputs[output_names.index(name)])))
    exits = resolve(names, "--exits" if requested else "mcu_train.exits")
    for k, e in enumerate(exits):  # an exit that is a view (Flatten of a pooled map): the data it views
        while graph.producer(e) is not None and graph.producer(e).kind == "reshape":
            e = graph.producer(e).inputs[0]
        exits[k] = e
    names = [n.strip() for n in names]
    if not exits:
        raise CompileError("the model has no exits: no graph output is a (N, classes) tensor of logits "
                           f"(outputs: {', '.join(f'{o} {graph.shapes.get(o)}' for o in output_names)})")
    for e, name in zip(exits, names):
        if graph.producer(e) is None:
            raise CompileError(f"exit '{name}' is not computed from the input")
        if not graph.values and not (logits_shape(e) and len(graph.shapes.get(name, graph.shapes[e])) == 2):
            raise CompileError(f"exit '{name}' has shape {graph.shapes.get(name, graph.shapes.get(e))}; an exit "
                               "must be (N, classes) logits computed from the input")
    return exits, names

"""Elementwise functions of one int8 tensor (Sigmoid, HardSwish, LeakyReLU, x * sigmoid(x), Mul by a constant,
...) as 256-entry lookup tables: every int8 input value maps to exactly one int8 output, so a table is exact
and the numpy golden model and the C kernel (mt_lut_s8) agree bit for bit by construction.

A function is a chain of steps applied in order to the real value v, each (op type, parameters); the step
("MulInput",) multiplies by the chain's input x, which turns Sigmoid into SiLU and HardSigmoid into HardSwish.
The same chain is written back as float ONNX operators for model_qdq.onnx, so onnxruntime computes the
function itself (in float32) as an independent reference."""
import numpy as np
from onnx import helper

from codegen import quant

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def apply_step(step, v, x):
    kind, p = step[0], step[1:]
    if kind == "Sigmoid":
        return _sigmoid(v)
    if kind == "HardSigmoid":
        return np.clip(p[0] * v + p[1], 0.0, 1.0)
    if kind == "HardSwish":
        return v * np.clip(v / 6.0 + 0.5, 0.0, 1.0)
    if kind == "LeakyRelu":
        return np.where(v >= 0, v, p[0] * v)
    if kind == "Tanh":
        return np.tanh(v)
    if kind == "Elu":
        return np.where(v >= 0, v, p[0] * (np.exp(v) - 1.0))
    if kind == "Relu":
        return np.maximum(v, 0.0)
    if kind == "Clip":
        return np.clip(v, p[0], p[1])
    if kind == "Neg":
        return -v
    if kind == "Exp":
        return np.exp(v)
    if kind == "Softplus":
        return np.log1p(np.exp(v))
    if kind == "Abs":
        return np.abs(v)
    if kind == "Add":
        return v + p[0]
    if kind == "Mul":
        return v * p[0]
    if kind == "SubFrom":  # c - v
        return p[0] - v
    if kind == "DivInto":  # c / v
        return p[0] / v
    if kind == "MulInput":
        return v * x
    raise ValueError(kind)


def evaluate(chain, x):
    """The chain on real values x (float64)."""
    x = np.asarray(x, np.float64)
    v = x
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for step in chain:
            v = apply_step(step, v, x)
    return v


def table(chain, in_scale, in_zp, out_scale, out_zp):
    """int8[256]: entry i is the output for the int8 input i - 128."""
    q = np.arange(-128, 128)
    y = evaluate(chain, quant.dequantize(q, in_scale, in_zp).astype(np.float64))
    y = np.nan_to_num(y, nan=0.0, posinf=3e38, neginf=-3e38)
    return quant.quantize(y, out_scale, out_zp)


def describe(chain):
    return " -> ".join(s[0] if len(s) == 1 else f"{s[0]}({', '.join(f'{p:g}' for p in s[1:])})" for s in chain)


def export(chain, x, nodes, const, fresh):
    """Float ONNX nodes computing the chain on tensor x; returns the output name."""
    v = x
    for step in chain:
        kind, p = step[0], step[1:]
        out = fresh("ew")
        if kind in ("Sigmoid", "HardSwish", "Tanh", "Relu", "Neg", "Exp", "Softplus", "Abs"):
            nodes.append(helper.make_node(kind, [v], [out]))
        elif kind == "HardSigmoid":
            nodes.append(helper.make_node(kind, [v], [out], alpha=float(p[0]), beta=float(p[1])))
        elif kind in ("LeakyRelu", "Elu"):
            nodes.append(helper.make_node(kind, [v], [out], alpha=float(p[0])))
        elif kind == "Clip":
            nodes.append(helper.make_node("Clip", [v, const(np.float32(max(p[0], -3e38))),
                                                   const(np.float32(min(p[1], 3e38)))], [out]))
        elif kind in ("Add", "Mul"):
            nodes.append(helper.make_node(kind, [v, const(np.float32(p[0]))], [out]))
        elif kind == "SubFrom":
            nodes.append(helper.make_node("Sub", [const(np.float32(p[0])), v], [out]))
        elif kind == "DivInto":
            nodes.append(helper.make_node("Div", [const(np.float32(p[0])), v], [out]))
        elif kind == "MulInput":
            nodes.append(helper.make_node("Mul", [v, x], [out]))
        else:
            raise ValueError(kind)
        v = out
    return v

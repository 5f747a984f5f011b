"""The compiler's small IR: a list of ops over named tensors, in ONNX's own layout (NCHW; 1-D models are
NCHW with H = 1) until lowering. Float parameters live on the ops; quantisation adds integer ones."""
from dataclasses import dataclass, field

import numpy as np

from codegen.errors import CompileError  # noqa: F401 (raised by every pass)


@dataclass
class Op:
    kind: str  # conv, dwconv, dense, maxpool, avgpool, gap, gmp, add, relu, lut, mul, concat, pad, resize, reshape
    name: str  # the ONNX node it came from (for errors and comments in the C)
    inputs: list
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # float weights/bias; given int8 ones for QDQ models
    act: tuple = ("none",)  # fused activation: ("none",), ("relu",), ("clip", lo, hi)

    @property
    def macs(self):
        return self.attrs.get("macs", 0)


@dataclass
class Graph:
    input: str
    shapes: dict  # tensor name -> tuple (NCHW for activations, (N, K) after flattening)
    ops: list
    exits: list  # the tensors that are exits' logits, shallow to deep
    exit_names: list = field(default_factory=list)  # the model's output names for them
    metadata: dict = field(default_factory=dict)
    given_qparams: dict = field(default_factory=dict)  # tensor -> (scale, zero point), from a QDQ model
    input_transpose: list = None  # axes of the input in the order the board stores it (channels last, or as given)
    values: bool = False  # a model without classes: its one output is values (no confidence, no early exit)
    softmax: list = field(default_factory=list)  # per exit: its Softmax was absorbed (the logits are its input)

    def producer(self, tensor):
        return next((op for op in self.ops if op.output == tensor), None)

    def consumers(self, tensor):
        return [op for op in self.ops if tensor in op.inputs]

    def ancestors(self, tensor):
        """Indices of the ops `tensor` depends on."""
        needed, stack = set(), [tensor]
        index = {op.output: i for i, op in enumerate(self.ops)}
        while stack:
            t = stack.pop()
            if t in index and index[t] not in needed:
                needed.add(index[t])
                stack += self.ops[index[t]].inputs
        return needed

    def schedule(self):
        """Execution order, block by block: everything exit 0 needs, then what exit 1 needs in addition, ...
        Returns a list of (op index, segment) where segment k ends with exit k's logits."""
        done, order = set(), []
        for k, exit_name in enumerate(self.exits):
            for i in sorted(self.ancestors(exit_name) - done):
                order.append((i, k))
            done |= self.ancestors(exit_name)
        return order


def as_float(a):
    return np.asarray(a, dtype=np.float32)

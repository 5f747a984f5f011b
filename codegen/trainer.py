"""`mcu-train compile --train MODE`: which layers train on the board, and where their buffers live.

A *unit* is the chain of layers one exit trains: its input is an int8 tensor of the frozen backbone
(dequantised on the fly), its layers run in float32 with fp32 master weights, and it ends in that exit's
logits. Units never share parameters, so each one is an independent model with its own loss.

- `exits`: one unit per early exit, made of the steps only that exit needs (its head: typically 1x1 conv +
  ReLU + global average pool + dense). The final classifier stays int8 and supplies the pseudo-labels.
- `exits+last-block`: in addition, the final exit's unit: from the last convolution of the final segment
  (the last backbone block) to the final logits. Pseudo-labels still come from the generic int8 final
  classifier kept in flash (a frozen teacher), never from the personalised one.

The memory plan places everything in one arena over a timeline of *events*: the int8 kernel steps in schedule
order, with a float head event after each trainable exit's logits (the personalised head used for
inference) and an exit event (the early-exit decision); then one training event per unit (saved activations,
error maps, gradients); then the checkpoint staging event. Master weights, momentum and the trainer state
live through the whole timeline; each unit's int8 input lives until its training event.
"""
from dataclasses import dataclass, field

import numpy as np

from codegen import planner
from codegen.ir import CompileError

TRAIN_MODES = ("exits", "exits+last-block")
TRAINABLE_KERNELS = ("conv", "dense", "maxpool", "avgpool", "relu")
# Persistent trainer state (firmware/trainer.h tr_state): the filter, then one record per exit; 4-byte words.
FILTER_STATE_WORDS = 8  # w[4], tau, kept_rate, prng, reserved
EXIT_STATE_WORDS = 5  # threshold, agreement, acc_personal, acc_generic, labelled
CHECKPOINT_HEADER_BYTES = 32  # magic, version, num_exits, reserved, model hash (16), n_params, state bytes
CHECKPOINT_MAGIC = 0x4B43544D  # "MTCK"
CHECKPOINT_VERSION = 1
ACTS = {"none": 0, "relu": 1, "clip": 2}
KINDS = {"conv": 0, "maxpool": 1, "avgpool": 2, "act": 3}


@dataclass
class FloatLayer:
    kind: str  # conv (dense is a 1x1 conv over one position), maxpool, avgpool (global), act (standalone ReLU)
    name: str
    in_dims: tuple  # NHWC
    out_dims: tuple
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    act: tuple = ("none",)  # ("none",), ("relu",), ("clip", lo, hi)
    dense: bool = False  # a dense layer (pruned only when prune_dense is set)
    w: np.ndarray = None  # float32 (C_out, KH, KW, C_in)
    b: np.ndarray = None
    w_offset: int = 0  # float index into the unit's parameter vector
    b_offset: int = 0

    @property
    def size(self):
        return int(np.prod(self.out_dims))

    @property
    def macs(self):
        if self.kind != "conv":
            return 0
        _, oh, ow, co = self.out_dims
        return oh * ow * co * self.kernel[0] * self.kernel[1] * self.in_dims[3]


@dataclass
class Unit:
    exit: int
    layers: list
    input: str  # the int8 backbone tensor it reads
    in_dims: tuple
    in_scale: float
    in_zero_point: int
    steps: list  # indices of the generic int8 steps it replaces (the generic head)
    init: np.ndarray = None  # initial parameters: every layer's w then b, in layer order

    @property
    def num_params(self):
        return 0 if self.init is None else int(self.init.size)

    @property
    def forward_macs(self):
        return sum(layer.macs for layer in self.layers)


@dataclass
class TrainSpec:
    mode: str
    units: list
    events: list  # ("step", i) | ("head", unit index) | ("exit", k) | ("train", unit index) | ("checkpoint",)
    num_exits: int
    unit_of_exit: dict  # exit -> unit index
    offsets: dict = field(default_factory=dict)  # training buffer -> arena offset, after planning

    @property
    def trainable_parameters(self):
        return sum(u.num_params for u in self.units)

    @property
    def state_bytes(self):
        return 4 * (FILTER_STATE_WORDS + EXIT_STATE_WORDS * self.num_exits)

    @property
    def checkpoint_bytes(self):
        return CHECKPOINT_HEADER_BYTES + 4 * self.trainable_parameters + self.state_bytes + 4


def _act(step):
    act = step.act
    if act[0] not in ACTS:
        raise CompileError(f"step '{step.name}': activation {act[0]} cannot be trained")
    return act


def _layer(step):
    """The float layer for a lowered int8 step, or a clear error when the kind cannot train."""
    k = step.kernel
    if k == "conv":
        w = step.float_arrays["filter"]
        return FloatLayer("conv", step.name, step.in_dims, step.out_dims, tuple(step.q["kernel"]),
                          tuple(step.q["stride"]), tuple(step.q["padding"]), _act(step), False,
                          w.copy(), step.float_arrays["bias"].copy())
    if k == "dense":
        w = step.float_arrays["filter"]
        k_in = w.shape[1]
        return FloatLayer("conv", step.name, (1, 1, 1, k_in), step.out_dims, act=_act(step), dense=True,
                          w=w.reshape(w.shape[0], 1, 1, k_in).copy(), b=step.float_arrays["bias"].copy())
    if k == "avgpool":
        _, h, w, _ = step.in_dims
        if tuple(step.out_dims[1:3]) != (1, 1) or any(step.q["padding"]) or tuple(step.q["kernel"]) != (h, w):
            raise CompileError(f"step '{step.name}': only global average pooling can be trained")
        return FloatLayer("avgpool", step.name, step.in_dims, step.out_dims, (h, w), (1, 1))
    if k == "maxpool":
        kernel, stride, pad = tuple(step.q["kernel"]), tuple(step.q["stride"]), tuple(step.q["padding"])
        if kernel != stride or any(pad):
            raise CompileError(f"step '{step.name}': max pooling trains only with stride = kernel and no padding "
                               f"(kernel {kernel}, stride {stride}, padding {pad})")
        return FloatLayer("maxpool", step.name, step.in_dims, step.out_dims, kernel, stride)
    if k == "relu":
        lo_hi = step.act
        return FloatLayer("act", step.name, step.in_dims, step.out_dims, act=lo_hi if lo_hi[0] != "none" else ("relu",))
    raise CompileError(f"step '{step.name}' ({k}) cannot be trained on the board: trainable layers are "
                       f"{', '.join(TRAINABLE_KERNELS)}; choose exits whose heads use only those")


def find_units(graph, steps, mode):
    if mode not in TRAIN_MODES:
        raise CompileError(f"--train {mode!r}: one of {', '.join(TRAIN_MODES)}")
    num_exits = len(graph.exits)
    if num_exits < 2 and mode == "exits":
        raise CompileError("--train exits needs a model with early exits; this one has only the final classifier "
                           "(try --train exits+last-block)")
    units = []
    for k in range(num_exits):
        if k < num_exits - 1:
            idx = [i for i, s in enumerate(steps) if s.exits_needing == 1 << k]
        elif mode == "exits+last-block":
            seg = [i for i, s in enumerate(steps) if s.segment == k]
            convs = [i for i in seg if steps[i].kernel == "conv"]
            idx = seg[seg.index(convs[-1]):] if convs else [i for i in seg if steps[i].exits_needing == 1 << k]
        else:
            continue
        if not idx:
            raise CompileError(f"exit {k} ('{graph.exits[k]}') has no layers of its own to train")
        chain = [steps[i] for i in idx]
        for prev, s in zip(chain, chain[1:]):
            if len(s.inputs) != 1 or s.inputs[0] != prev.output:
                raise CompileError(f"exit {k}: step '{s.name}' does not read the previous step's output, so the "
                                   "head is not a chain of layers; only chains can be trained")
        if chain[-1].exit_index != k:
            raise CompileError(f"exit {k}: its trainable layers do not end in its logits")
        if len(chain[0].inputs) != 1:
            raise CompileError(f"exit {k}: the first trainable step '{chain[0].name}' has several inputs")
        layers = [_layer(s) for s in chain]
        scale, zp = graph.qparams[chain[0].inputs[0]]
        unit = Unit(k, layers, chain[0].inputs[0], chain[0].in_dims, float(scale), int(zp), idx)
        parts, offset = [], 0
        for layer in layers:
            if layer.kind == "conv":
                layer.w_offset = offset
                offset += layer.w.size
                layer.b_offset = offset
                offset += layer.b.size
                parts += [layer.w.reshape(-1), layer.b.reshape(-1)]
        if not parts:
            raise CompileError(f"exit {k}: its head has no weights to train")
        unit.init = np.concatenate(parts).astype(np.float32)
        units.append(unit)
    return units


def events_for(steps, units, num_exits):
    unit_of_exit = {u.exit: i for i, u in enumerate(units)}
    events = []
    for i, s in enumerate(steps):
        events.append(("step", i))
        if s.exit_index >= 0:
            if s.exit_index in unit_of_exit:
                events.append(("head", unit_of_exit[s.exit_index]))
            events.append(("exit", s.exit_index))
    events += [("train", u) for u in range(len(units))]
    events.append(("checkpoint",))
    return events, unit_of_exit


def training_buffers(spec, steps):
    """Buffers for the float heads, the training and the trainer's persistent state, with lifetimes in
    event indices; plus the int8 tensors whose lifetime must be extended (tensor -> last event)."""
    pos = {e: n for n, e in enumerate(spec.events)}
    end = len(spec.events) - 1
    bufs, extend = [], {}
    for u, unit in enumerate(spec.units):
        head, train = pos[("head", u)], pos[("train", u)]
        bufs.append(planner.Buffer(f"u{u}.params", 4 * unit.num_params, 0, end))
        bufs.append(planner.Buffer(f"u{u}.momentum", 4 * unit.num_params, 0, end))
        for j, layer in enumerate(unit.layers):
            # The personalised head's inference forward, then the training forward whose saved activations
            # are overwritten in place by the error maps during the backward pass.
            bufs.append(planner.Buffer(f"u{u}.infer.y{j}", 4 * layer.size, head, head))
            bufs.append(planner.Buffer(f"u{u}.train.y{j}", 4 * layer.size, train, train))
        bufs.append(planner.Buffer(f"u{u}.grad", 4 * unit.num_params, train, train))
        channels = max(l.out_dims[3] for l in unit.layers if l.kind == "conv")
        bufs.append(planner.Buffer(f"u{u}.scratch", 8 * channels, train, train))  # pruning scores and flags
        extend[unit.input] = train
    bufs.append(planner.Buffer("train.state", spec.state_bytes, 0, end))
    bufs.append(planner.Buffer("checkpoint.staging", spec.checkpoint_bytes, end, end))
    for s in steps:  # exit logits are read at the exit event, after the personalised head's event
        if s.exit_index >= 0:
            extend[s.output] = max(extend.get(s.output, 0), pos[("exit", s.exit_index)])
    return bufs, extend, pos


MAX_FILTER_CLASSES = 32  # firmware/instance_filter.c: the filter's softmax of exit 0 works on at most this many


def plan(graph, steps, mode):
    units = find_units(graph, steps, mode)
    classes = graph.shapes[graph.exits[0]][1]
    if classes > MAX_FILTER_CLASSES:
        raise CompileError(f"exit 0 has {classes} classes; the instance filter handles at most {MAX_FILTER_CLASSES}")
    events, unit_of_exit = events_for(steps, units, len(graph.exits))
    return TrainSpec(mode, units, events, len(graph.exits), unit_of_exit)


def describe(spec):
    """What model.json says about training (the host's Trainer and the reference read it)."""
    return dict(
        mode=spec.mode, trainable_parameters=spec.trainable_parameters, checkpoint_bytes=spec.checkpoint_bytes,
        units=[dict(exit=u.exit, input=u.input, input_scale=u.in_scale, input_zero_point=u.in_zero_point,
                    parameters=u.num_params, forward_macs=u.forward_macs,
                    layers=[dict(kind=l.kind, name=l.name, dense=l.dense, in_dims=list(l.in_dims),
                                 out_dims=list(l.out_dims), act=list(l.act)) for l in u.layers])
               for u in spec.units])


def memory_report(spec, buffers):
    """Arena extent while each phase runs: the highest byte used by the buffers alive at any of its events."""
    def extent(kinds):
        idx = [n for n, e in enumerate(spec.events) if e[0] in kinds]
        return max((b.offset + b.size for b in buffers.values() for n in idx if b.size and b.first <= n <= b.last),
                   default=0)
    return dict(mode=spec.mode, inference_extent_bytes=extent(("step", "head", "exit")),
                training_extent_bytes=extent(("train",)), checkpoint_extent_bytes=extent(("checkpoint",)),
                master_weights_bytes=4 * spec.trainable_parameters, momentum_bytes=4 * spec.trainable_parameters,
                state_bytes=spec.state_bytes, checkpoint_bytes=spec.checkpoint_bytes,
                units=[dict(exit=u.exit, parameters=u.num_params,
                            activations_bytes=4 * sum(l.size for l in u.layers)) for u in spec.units])


def f32_literal(v):
    return f"{float(np.float32(v)):.9e}f"


def render_context(spec, compiled, config):
    """What codegen/templates/model_train.c.j2 needs."""
    off = compiled.buffer_offsets
    units = []
    for u, unit in enumerate(spec.units):
        layers = []
        for l in unit.layers:
            act = l.act[0]
            lo, hi = (l.act[1], l.act[2]) if act == "clip" else (0.0, 0.0)
            layers.append(dict(name=l.name, kind=KINDS[l.kind], act=ACTS[act], dense=int(l.dense), kh=l.kernel[0],
                               kw=l.kernel[1], sh=l.stride[0], sw=l.stride[1], pad_t=l.padding[0], pad_l=l.padding[1],
                               act_lo=lo, act_hi=hi, in_dims=list(l.in_dims), out_dims=list(l.out_dims),
                               w=l.w_offset, b=l.b_offset))
        units.append(dict(exit=unit.exit, layers=layers, n_params=unit.num_params, init=unit.init, input=unit.input,
                          input_offset=off[unit.input], in_scale=unit.in_scale, in_zero_point=unit.in_zero_point,
                          params_offset=off[f"u{u}.params"], momentum_offset=off[f"u{u}.momentum"],
                          grad_offset=off[f"u{u}.grad"], scratch_offset=off[f"u{u}.scratch"],
                          infer_offsets=[off[f"u{u}.infer.y{j}"] for j in range(len(unit.layers))],
                          train_offsets=[off[f"u{u}.train.y{j}"] for j in range(len(unit.layers))],
                          forward_macs=unit.forward_macs))
    kinds = {"step": 0, "head": 1, "exit": 2, "train": 3, "checkpoint": 4}
    events = [(kinds[e[0]], e[1] if len(e) > 1 else 0) for e in spec.events]
    step_unit = [-1] * len(compiled.steps)
    for u, unit in enumerate(spec.units):
        for i in unit.steps:
            step_unit[i] = u
    exit_unit = [spec.unit_of_exit.get(k, -1) for k in range(spec.num_exits)]
    return dict(mode=spec.mode, units=units, events=events, step_unit=step_unit, exit_unit=exit_unit,
                state_offset=off["train.state"], staging_offset=off["checkpoint.staging"],
                checkpoint_bytes=spec.checkpoint_bytes, num_params=spec.trainable_parameters, config=config,
                exits=compiled.meta["exits"])

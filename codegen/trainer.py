"""`mcu-train compile --train MODE`: which layers train on the board, how their weights are kept, and where
every training buffer lives (docs/training.md is the specification).

A *unit* is the chain of int8 steps one exit trains: it reads an int8 tensor of the frozen backbone and ends
in that exit's logits. Units never share parameters, so each one is an independent model with its own loss.

- `exits`: one unit per early exit, made of the steps only that exit needs (its head: typically 1x1 conv +
  ReLU + global average pool + dense). The final classifier stays generic and supplies the pseudo-labels.
- `exits+last-block`: in addition, the final exit's unit: from the last convolution of the final segment
  (the last backbone block) to the final logits. Pseudo-labels still come from the generic final classifier
  kept in flash (a frozen teacher), never from the personalised one.

A unit's personalised head is served in int8 by the same kernels as the generic one, and its int8 weights are
the master weights: training updates them in place (in units of their channel's scale, rounded) and refits a
channel's scale, the compiler's per-channel scheme, only when its range changes. Fraction bits below the int8
step were measured and bought no accuracy (docs/training.md). Each trainable (conv or dense) layer keeps, per
output channel, its weight scale, int32 bias, and the kernels' multiplier and shift, all in RAM; a unit's
`u<i>.params` buffer is

    scale f32[C] | bias i32[C] | multiplier i32[C] | shift i32[C] | W i8[N]

(C output channels and N weights over the unit's trainable layers, layer after layer; padded to 4 bytes).
The checkpoint image holds these buffers as they are.

The memory plan places everything in one arena over a timeline of *events*: the int8 steps in schedule
order, where each unit's steps form one *head* event followed by its exit's *exit* event (the early-exit
decision); then one *train* event per unit. The training backward reuses the activations the head computed:
each unit's input and its steps' outputs live until its train event, and their kernels' scratch (one buffer all
head steps share) until training starts (a head may be recomputed after later steps). Error maps, the gradient
of one output channel and the pruning scores live only during the train event.
"""
from dataclasses import dataclass, field

import numpy as np

from codegen import planner
from codegen.ir import CompileError

TRAIN_MODES = ("exits", "exits+last-block")
HEAD_SCRATCH = "heads.scratch"  # the scratch buffer of every head step (training_buffers)
TRAINABLE_KERNELS = ("conv", "dense", "maxpool", "avgpool", "relu")
# Persistent trainer state (firmware/trainer.h tr_state): the filter, then one record per exit; 4-byte words.
FILTER_STATE_WORDS = 8  # w[4], tau, kept_rate, prng, cut
EXIT_STATE_WORDS = 5  # threshold, agreement, acc_personal, acc_generic, labelled
CHECKPOINT_HEADER_BYTES = 32  # magic, version, num_exits, num_units, model hash (16), param bytes, state bytes
CHECKPOINT_MAGIC = 0x4B43544D  # "MTCK"
CHECKPOINT_VERSION = 3  # 3: the replay memory follows the state
ACTS = {"none": 0, "relu": 1, "clip": 2}
KINDS = {"conv": 0, "maxpool": 1, "avgpool": 2, "act": 3}
WEIGHT_BOUND_FACTOR = 8.0  # a weight or bias may not exceed this times its layer's largest initial magnitude
ERROR_BITS = 14  # error maps are int16 with |e| <= 2^14 and one float scale per map (block floating point)
MAX_GRAD_POSITIONS = 512  # weight gradients sum e (<= 2^14) * x (<= 255) over output positions in int32
MAX_ERROR_TERMS = 1024  # input errors sum e (<= 2^14) * w (<= 127) over taps x channels in int32


@dataclass
class TrainLayer:
    kind: str  # conv (dense is a 1x1 conv over one position), maxpool, avgpool (global), act (standalone ReLU)
    name: str
    step: int  # the int8 step that computes it
    input: str  # int8 tensors it reads and writes (the model's planned buffers)
    output: str
    in_dims: tuple  # NHWC
    out_dims: tuple
    in_scale: float
    in_zero_point: int
    out_scale: float
    act: str = "none"  # none, relu, clip: the gate of its backward, read off the int8 output
    act_min: int = -128  # the int8 clamp of the step's output
    act_max: int = 127
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    dense: bool = False  # a dense layer (pruned only when prune_dense is set)
    arrays: dict = field(default_factory=dict)  # trainable layers: initial scale, bias, mult, shift, w
    bound: float = 0.0  # largest magnitude a weight or bias of this layer may take
    keep_max: float = 1.0  # error-map pruning keeps at most this fraction of its channels (below prune_keep 1)
    w_offset: int = 0  # first weight in the unit's W / L arrays
    ch_offset: int = 0  # first channel in the unit's per-channel arrays

    @property
    def trainable(self):
        return self.kind == "conv"

    @property
    def channels(self):
        return self.out_dims[3]

    @property
    def taps(self):
        return self.kernel[0] * self.kernel[1] * self.in_dims[3]

    @property
    def size(self):
        return int(np.prod(self.out_dims))

    @property
    def in_size(self):
        return int(np.prod(self.in_dims))

    @property
    def macs(self):
        if self.kind != "conv":
            return 0
        return self.out_dims[1] * self.out_dims[2] * self.channels * self.taps


@dataclass
class Unit:
    exit: int
    layers: list
    input: str  # the int8 backbone tensor it reads
    steps: list  # indices of its int8 steps (contiguous in the schedule)
    momentum: bool = False

    @property
    def trainable(self):
        return [l for l in self.layers if l.trainable]

    @property
    def num_weights(self):
        return sum(l.channels * l.taps for l in self.trainable)

    @property
    def num_channels(self):
        return sum(l.channels for l in self.trainable)

    @property
    def num_params(self):
        return self.num_weights + self.num_channels

    @property
    def forward_macs(self):
        return sum(layer.macs for layer in self.layers)

    @property
    def params_bytes(self):
        return param_layout(self.num_channels, self.num_weights)["bytes"]

    @property
    def momentum_bytes(self):
        return _align4(2 * self.num_weights) + 4 * self.num_channels if self.momentum else 0

    def error_maps(self):
        """Elements of the backward's buffers: the two int16 error maps (map j, the error at layer j's output,
        lives in buffer j % 2); the int32 sums of conv / dense input errors; the int16 output errors weighted by
        channel scale (`fold`) they are summed from."""
        sizes, acc, fold = [0, 0], 0, 0
        broadcast = False  # the error at the logits is a full map
        for j in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[j]
            sizes[j % 2] = max(sizes[j % 2], layer.channels if broadcast else layer.size)
            if j == 0:
                break
            if layer.kind == "conv":
                acc, fold = max(acc, layer.in_size), max(fold, layer.size)
            broadcast = layer.kind == "avgpool"
        return sizes, acc, fold

    def initial_params(self):
        """The `u<i>.params` buffer at boot (bytes, little-endian)."""
        ch = [np.concatenate([l.arrays[k] for l in self.trainable]) for k in ("scale", "bias", "mult", "shift", "w")]
        raw = (ch[0].astype("<f4").tobytes() + b"".join(a.astype("<i4").tobytes() for a in ch[1:4])
               + ch[4].astype(np.int8).tobytes())
        return raw + bytes(self.params_bytes - len(raw))


def _align4(n):
    return (n + 3) // 4 * 4


def param_layout(channels, weights):
    """Byte offsets of the parts of a unit's params buffer (firmware/trainer.c unit_params follows it)."""
    c = channels
    return dict(scale=0, bias=4 * c, mult=8 * c, shift=12 * c, w=16 * c, bytes=_align4(16 * c + weights))


@dataclass
class TrainSpec:
    mode: str
    units: list
    events: list  # ("step", i) | ("head", unit) | ("exit", k) | ("train", unit)
    num_exits: int
    unit_of_exit: dict  # exit -> unit index
    momentum: bool = False
    offsets: dict = field(default_factory=dict)  # training buffer -> arena offset, after planning
    memory: dict = field(default_factory=lambda: memory_layout([], 0))  # the replay memory (memory_layout)

    @property
    def trainable_parameters(self):
        return sum(u.num_params for u in self.units)

    @property
    def params_bytes(self):
        return sum(u.params_bytes for u in self.units)

    @property
    def state_bytes(self):
        return 4 * (FILTER_STATE_WORDS + EXIT_STATE_WORDS * self.num_exits)

    @property
    def checkpoint_bytes(self):
        return CHECKPOINT_HEADER_BYTES + self.params_bytes + self.state_bytes + self.memory["bytes"] + 4


def _trainable_arrays(step):
    """Initial per-channel and per-weight values of a conv / dense step's personalised head: the compiler's
    int8 weights, bias, multiplier and shift (so it starts as the generic head), and the layer's bound."""
    bound = WEIGHT_BOUND_FACTOR * max(float(np.max(np.abs(step.float_arrays["filter"]))),
                                      float(np.max(np.abs(step.float_arrays["bias"]))), 1e-6)
    arrays = dict(scale=step.float_arrays["w_scale"].astype(np.float32), bias=step.arrays["bias"].astype(np.int64),
                  mult=step.arrays["multiplier"].astype(np.int64), shift=step.arrays["shift"].astype(np.int64),
                  w=step.arrays["filter"].reshape(-1).astype(np.int8))
    return arrays, float(np.float32(bound))


def _layer(step, qparams):
    """The training layer for a lowered int8 step, or a clear error when the kind cannot train."""
    k = step.kernel
    in_scale, in_zp = qparams[step.inputs[0]]
    out_scale, _ = qparams[step.output]
    act = step.act[0]
    if act not in ACTS:
        raise CompileError(f"step '{step.name}': activation {act} cannot be trained")
    common = dict(name=step.name, step=-1, input=step.inputs[0], output=step.output, in_dims=tuple(step.in_dims),
                  out_dims=tuple(step.out_dims), in_scale=float(in_scale), in_zero_point=int(in_zp),
                  out_scale=float(out_scale), act=act, act_min=int(step.q["act_min"]), act_max=int(step.q["act_max"]))
    if k in ("conv", "dense"):
        arrays, bound = _trainable_arrays(step)
        if k == "conv":
            layer = TrainLayer("conv", kernel=tuple(step.q["kernel"]), stride=tuple(step.q["stride"]),
                               padding=tuple(step.q["padding"]), arrays=arrays, bound=bound, **common)
        else:
            common["in_dims"] = (1, 1, 1, step.arrays["filter"].shape[1])
            layer = TrainLayer("conv", dense=True, arrays=arrays, bound=bound, **common)
        positions = layer.out_dims[1] * layer.out_dims[2]
        if positions > MAX_GRAD_POSITIONS or layer.kernel[0] * layer.kernel[1] * layer.channels > MAX_ERROR_TERMS:
            raise CompileError(f"step '{step.name}': too large to train on the board ({positions} output positions, "
                               f"at most {MAX_GRAD_POSITIONS}; {layer.kernel[0] * layer.kernel[1] * layer.channels} "
                               f"taps x channels, at most {MAX_ERROR_TERMS})")
        return layer
    if k == "avgpool":
        _, h, w, _ = step.in_dims
        if tuple(step.out_dims[1:3]) != (1, 1) or any(step.q["padding"]) or tuple(step.q["kernel"]) != (h, w):
            raise CompileError(f"step '{step.name}': only global average pooling can be trained")
        return TrainLayer("avgpool", kernel=(h, w), **common)
    if k == "maxpool":
        kernel, stride, pad = tuple(step.q["kernel"]), tuple(step.q["stride"]), tuple(step.q["padding"])
        if kernel != stride or any(pad):
            raise CompileError(f"step '{step.name}': max pooling trains only with stride = kernel and no padding "
                               f"(kernel {kernel}, stride {stride}, padding {pad})")
        return TrainLayer("maxpool", kernel=kernel, stride=stride, **common)
    if k == "relu":
        if act == "none":
            common["act"] = "relu"
        return TrainLayer("act", **common)
    raise CompileError(f"step '{step.name}' ({k}) cannot be trained on the board: trainable layers are "
                       f"{', '.join(TRAINABLE_KERNELS)}; choose exits whose heads use only those")


# The replay memory's budget when `--replay-bytes` is not given: none, so a default `--train exits` build keeps
# issue 13's training peak SRAM (24 KB); the budget docs/training.md recommends (the largest with which a training
# build of the default model fits the 64 KB of lm3s6965evb: 11 examples), what the benchmarks measure.
DEFAULT_REPLAY_BYTES = 0
RECOMMENDED_REPLAY_BYTES = 37888
MEMORY_HEADER_BYTES = 16  # prng u32, label credit f32, ask cut f32, windows since the pending ask u32


def memory_layout(units, budget):
    """The replay memory (docs/training.md, "Replay memory and active labels"): `slots` labelled examples and
    one pending slot (the inputs of the window the board asked a label for). An example holds each unit's
    frozen int8 input once per distinct tensor (units reading the same tensor share it):

        prng u32 | credit f32 | cut f32 | since_ask u32 | label u8[slots + 1] | mask u8[slots + 1] (pad 4) |
        example[slots + 1] of `example_bytes`, tensor t at `tensor_offsets[t]`

    The most slots that fit in `budget` bytes; 0 slots (no memory at all) when the budget is 0."""
    tensors = list(dict.fromkeys(u.input for u in units))
    sizes = {u.input: u.layers[0].in_size for u in units}
    offsets, example = {}, 0
    for t in tensors:
        offsets[t] = example
        example += _align4(sizes[t])
    slots = 0
    if budget and len(units) > 8:
        raise CompileError(f"--replay-bytes: the replay memory marks each example's units in one byte; this model "
                           f"trains {len(units)} units (at most 8): use --replay-bytes 0")
    if budget and units:
        def need(n):
            return MEMORY_HEADER_BYTES + _align4(2 * (n + 1)) + (n + 1) * example
        while need(slots + 1) <= budget:
            slots += 1
        if slots == 0:
            raise CompileError(f"--replay-bytes {budget}: the replay memory needs at least {need(1):,} B for one "
                               f"example and the pending slot ({example:,} B per example: the int8 inputs of "
                               f"{len(units)} trainable unit(s)); give at least that, or 0 to leave it out")
    total = MEMORY_HEADER_BYTES + _align4(2 * (slots + 1)) + (slots + 1) * example if slots else 0
    return dict(budget=budget, slots=slots, example_bytes=example, bytes=total,
                examples_offset=MEMORY_HEADER_BYTES + _align4(2 * (slots + 1)),
                unit_offsets=[offsets[u.input] for u in units], unit_bytes=[sizes[u.input] for u in units])


def find_units(graph, steps, mode, momentum=False, block_keep=None):
    if mode not in TRAIN_MODES:
        raise CompileError(f"--train {mode!r}: one of {', '.join(TRAIN_MODES)}")
    if block_keep is not None and mode != "exits+last-block":
        raise CompileError("--block-keep needs --train exits+last-block (it prunes the last block's updates)")
    if block_keep is not None and not 0 < block_keep <= 1:
        raise CompileError(f"--block-keep {block_keep}: a fraction of the last block's channels, in (0, 1]")
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
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise CompileError(f"exit {k}: its trainable steps are not consecutive in the schedule")
        if chain[-1].exit_index != k:
            raise CompileError(f"exit {k}: its trainable layers do not end in its logits")
        if len(chain[0].inputs) != 1:
            raise CompileError(f"exit {k}: the first trainable step '{chain[0].name}' has several inputs")
        layers = [_layer(s, graph.qparams) for s in chain]
        for i, layer in zip(idx, layers):
            layer.step = i
        if k == num_exits - 1 and convs and block_keep is not None:
            # `--block-keep`: the last block's conv updates at most this fraction of its channels a window (the
            # error-map scores choose them): a trained window costs less, at some accuracy (docs/RESULTS.md
            # "The last block's channels")
            layers[0].keep_max = float(np.float32(block_keep))
        if not any(l.trainable for l in layers):
            raise CompileError(f"exit {k}: its head has no weights to train")
        w_off = ch_off = 0
        for layer in layers:
            if layer.trainable:
                layer.w_offset, layer.ch_offset = w_off, ch_off
                w_off += layer.channels * layer.taps
                ch_off += layer.channels
        units.append(Unit(k, layers, chain[0].inputs[0], idx, momentum))
    return units


def events_for(steps, units):
    unit_of_exit = {u.exit: i for i, u in enumerate(units)}
    unit_of_step = {i: u for u, unit in enumerate(units) for i in unit.steps}
    events = []
    for i, s in enumerate(steps):
        u = unit_of_step.get(i)
        if u is None:
            events.append(("step", i))
        elif i == units[u].steps[0]:
            events.append(("head", u))
        if s.exit_index >= 0:
            events.append(("exit", s.exit_index))
    events += [("train", u) for u in range(len(units))]
    return events, unit_of_exit


def training_buffers(spec, steps):
    """Buffers of the trainer (persistent and per train event) with lifetimes in event indices; the int8
    tensors and the head steps' shared scratch buffer whose lifetime must be extended (name -> last event); and
    each step's event index. Sets the head steps' `scratch_buffer`."""
    pos = {e: n for n, e in enumerate(spec.events)}
    end = len(spec.events) - 1
    step_pos = [pos.get(("step", i)) for i in range(len(steps))]
    first_train = pos[("train", 0)]
    bufs, extend = [], {}
    for u, unit in enumerate(spec.units):
        head, train = pos[("head", u)], pos[("train", u)]
        for i in unit.steps:
            step_pos[i] = head
        bufs.append(planner.Buffer(f"u{u}.params", unit.params_bytes, 0, end))
        if unit.momentum:
            bufs.append(planner.Buffer(f"u{u}.momentum", unit.momentum_bytes, 0, end))
        (e0, e1), acc, fold = unit.error_maps()
        channels = max(l.channels for l in unit.trainable)
        for name, size in (("error0", 2 * e0), ("error1", 2 * e1), ("input_error", 4 * acc), ("fold", 2 * fold),
                           ("row", 4 * max(l.taps for l in unit.trainable)), ("scores", 4 * channels),
                           ("kept", channels)):
            bufs.append(planner.Buffer(f"u{u}.{name}", size, train, train))
        # The backward reads the head's activations and the unit's input: they live until training.
        for t in [unit.input] + [steps[i].output for i in unit.steps]:
            extend[t] = max(extend.get(t, 0), train)
        # A head runs again, after later steps, whenever the window needs the head it did not serve
        # (firmware/trainer.c complete()): its kernels' scratch must not hold anything alive until training.
        # One step runs at a time, so every head step shares one scratch buffer, alive from the first head on.
        for i in unit.steps:
            if steps[i].scratch_bytes:
                steps[i].scratch_buffer = HEAD_SCRATCH
                extend[HEAD_SCRATCH] = first_train - 1
    bufs.append(planner.Buffer("train.state", spec.state_bytes, 0, end))
    if spec.memory["bytes"]:
        bufs.append(planner.Buffer("train.memory", spec.memory["bytes"], 0, end))
    for s in steps:  # exit logits are read at the exit event
        if s.exit_index >= 0:
            extend[s.output] = max(extend.get(s.output, 0), pos[("exit", s.exit_index)])
    return bufs, extend, step_pos


WORK_BUFFERS = ("error0", "error1", "input_error", "fold", "row", "scores", "kept")  # one unit's train event
MAX_FILTER_CLASSES = 32  # firmware/instance_filter.c: the filter's features of exit 0 work on at most this many


def plan(graph, steps, mode, momentum=False, replay_bytes=DEFAULT_REPLAY_BYTES, block_keep=None):
    units = find_units(graph, steps, mode, momentum, block_keep)
    classes = graph.shapes[graph.exits[0]][1]
    if classes > MAX_FILTER_CLASSES:
        raise CompileError(f"exit 0 has {classes} classes; the instance filter handles at most {MAX_FILTER_CLASSES}")
    events, unit_of_exit = events_for(steps, units)
    return TrainSpec(mode, units, events, len(graph.exits), unit_of_exit, momentum,
                     memory=memory_layout(units, replay_bytes))


def describe(spec):
    """What model.json says about training (the host's Trainer and the reference read it)."""
    return dict(
        mode=spec.mode, trainable_parameters=spec.trainable_parameters, checkpoint_bytes=spec.checkpoint_bytes,
        params_bytes=spec.params_bytes, momentum=spec.momentum, replay_bytes=spec.memory["budget"],
        replay_slots=spec.memory["slots"],
        units=[dict(exit=u.exit, input=u.input, parameters=u.num_params, weights=u.num_weights,
                    channels=u.num_channels, params_bytes=u.params_bytes, forward_macs=u.forward_macs,
                    layers=[dict(kind=l.kind, name=l.name, step=l.step, dense=l.dense, in_dims=list(l.in_dims),
                                 out_dims=list(l.out_dims), act=l.act, bound=l.bound, keep_max=l.keep_max)
                            for l in u.layers])
               for u in spec.units])


def memory_report(spec, buffers):
    """Each part of the trainer's memory, and the arena's extent while each phase runs (the highest byte used
    by the buffers alive at any of its events)."""
    def extent(kinds):
        idx = [n for n, e in enumerate(spec.events) if e[0] in kinds]
        return max((b.offset + b.size for b in buffers.values() for n in idx if b.size and b.first <= n <= b.last),
                   default=0)

    def total(suffix):
        return sum(b.size for name, b in buffers.items() if name.startswith("u") and name.endswith(suffix))
    units = []
    for u, unit in enumerate(spec.units):
        kept = [unit.input] + [l.output for l in unit.layers]
        units.append(dict(exit=unit.exit, parameters=unit.num_params, weights=unit.num_weights,
                          channels=unit.num_channels, params_bytes=unit.params_bytes,
                          momentum_bytes=unit.momentum_bytes,
                          activations_kept_bytes=sum(buffers[t].size for t in dict.fromkeys(kept)),
                          work_bytes=sum(buffers[f"u{u}.{n}"].size for n in WORK_BUFFERS)))
    return dict(mode=spec.mode, inference_extent_bytes=extent(("step", "head", "exit")),
                training_extent_bytes=extent(("train",)),
                weights_bytes=sum(u.num_weights for u in spec.units),
                channel_bytes=16 * sum(u.num_channels for u in spec.units),
                params_bytes=total(".params"), momentum_bytes=total(".momentum"), state_bytes=spec.state_bytes,
                checkpoint_bytes=spec.checkpoint_bytes, checkpoint_staging_bytes=0, units=units,
                replay=dict(budget_bytes=spec.memory["budget"], bytes=spec.memory["bytes"],
                            slots=spec.memory["slots"], example_bytes=spec.memory["example_bytes"]))


def f32_literal(v):
    return f"{float(np.float32(v)):.9e}f"


def render_context(spec, compiled, config):
    """What codegen/templates/model_train.c.j2 needs."""
    off = compiled.buffer_offsets
    units = []
    for u, unit in enumerate(spec.units):
        layers = []
        for l in unit.layers:
            layers.append(dict(name=l.name, kind=KINDS[l.kind], act=ACTS[l.act], dense=int(l.dense), act_min=l.act_min,
                               act_max=l.act_max, step=l.step, kh=l.kernel[0], kw=l.kernel[1], sh=l.stride[0],
                               sw=l.stride[1], pad_t=l.padding[0], pad_l=l.padding[1], in_dims=list(l.in_dims),
                               out_dims=list(l.out_dims), in_offset=off[l.input], out_offset=off[l.output],
                               in_zp=l.in_zero_point, in_scale=l.in_scale, out_scale=l.out_scale, w=l.w_offset,
                               ch=l.ch_offset, bound=l.bound, keep_max=l.keep_max))
        init = np.frombuffer(unit.initial_params(), "<u4")
        units.append(dict(exit=unit.exit, layers=layers, first_step=unit.steps[0], n_steps=len(unit.steps),
                          n_weights=unit.num_weights, n_channels=unit.num_channels, params_bytes=unit.params_bytes,
                          init=init, input_offset=off[unit.input], params_offset=off[f"u{u}.params"],
                          momentum_offset=off.get(f"u{u}.momentum", 0),
                          error_offsets=[off[f"u{u}.error0"], off[f"u{u}.error1"]],
                          work={n: off[f"u{u}.{n}"] for n in WORK_BUFFERS[2:]}, forward_macs=unit.forward_macs,
                          memory_offset=spec.memory["unit_offsets"][u], input_bytes=spec.memory["unit_bytes"][u]))
    kinds = {"step": 0, "head": 1, "exit": 2, "train": 3}
    events = [(kinds[e[0]], e[1]) for e in spec.events]
    exit_unit = [spec.unit_of_exit.get(k, -1) for k in range(spec.num_exits)]
    return dict(mode=spec.mode, units=units, events=events, exit_unit=exit_unit, state_offset=off["train.state"],
                checkpoint_bytes=spec.checkpoint_bytes, num_params=spec.trainable_parameters,
                params_bytes=spec.params_bytes, momentum=int(spec.momentum), config=config, memory=spec.memory,
                memory_offset=off.get("train.memory", 0),
                exits=compiled.meta["exits"])

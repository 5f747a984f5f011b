"""The golden model of the on-device trainer: the same algorithm as firmware/trainer.c, train_layers.c and
instance_filter.c, in the same arithmetic, so a board and this reference make the same decisions on every
window and end with the same weights. docs/training.md is the specification.

The personalised heads run as int8 steps (codegen.reference's kernels with the unit's own arrays). The backward
pass and the updates are integer arithmetic (error maps of int16 values with one float32 scale per map, int32
sums); only per-map, per-channel and per-window scalars are float32, each operation rounding once as in C.
Shapes are NHWC without the batch dimension.
"""
import struct
from dataclasses import dataclass, field

import numpy as np

from codegen import fmath, int8_ops
from codegen.fmath import F, pow2, round_shift, scaled
from codegen.reference import _run_step, confidence_q16
from codegen.trainer import (CHECKPOINT_HEADER_BYTES, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, ERROR_BITS,
                             EXIT_STATE_WORDS, FILTER_STATE_WORDS, MEMORY_HEADER_BYTES, param_layout)
from codegen.trainer_abi import (ASK_CREDIT_MAX, ASK_CUT_START, ASK_SPACING, ASK_STEP, NO_CLASS, STEP_ASKED,
                                 STEP_EXPLORED, STEP_LABEL, STEP_PERSONALISED, STEP_PREDICTED_HARD, STEP_PSEUDO,
                                 ExitStats, FilterMode, Outcome, ServeMode, TrainConfig, TrainStats, TrainStep,
                                 checkpoint_crc)

WEIGHT_MAX = 127  # int8 weights are symmetric, [-127, 127]
WEIGHT_REFIT = 120  # a channel's largest |weight| right after its scale is refitted (1/16 headroom)
WEIGHT_LOW = 96  # below this the channel's scale is refitted (when its values fit)
UPDATE_RANGE = 1 << 30  # an update that takes a weight beyond this many steps is never applied
INT32_MAX = 2**31 - 1
# A study of issue 13 (docs/RESULTS.md, "The last block's training cost"); the firmware does "all". On a labelled
# window that left at an early exit the final exit's unit trains and is do-no-harm evidence ("all"), does
# neither ("reached": only windows that reached the final exit), or trains but is no evidence
# ("evidence-reached"); "-or-wrong": as "all" when the early exit's prediction was wrong.
FINAL_UNIT_RULES = ("all", "reached", "evidence-reached", "reached-or-wrong", "evidence-reached-or-wrong")
FINAL_UNIT_RULE = "all"
DNH_WINS = 1  # do no harm: the personalised head's lead needed to serve, in steps of the moving accuracies
# When examples are replayed they are evidence too; the personalised head has trained on them, so its
# lead must be larger (chosen on the validation people: docs/RESULTS.md "Replayed examples as do-no-harm evidence").
DNH_WINS_REPLAY = 2
PROTO_TEMPERATURE = 16.0  # prototype heads: the Gaussian softmax's temperature (higher: less confident; docs/RESULTS.md)


# ------------------------------------------------------------------------------------- unit parameters

class UnitParams:
    """A unit's `u<i>.params` buffer as numpy arrays (codegen.trainer.param_layout), plus its momentum."""

    def __init__(self, unit):
        self.unit = unit
        a = {k: np.concatenate([l.arrays[k] for l in unit.trainable]) for k in ("scale", "bias", "mult", "shift", "w")}
        self.scale = a["scale"].astype(F)
        self.bias, self.mult, self.shift = (a[k].astype(np.int64) for k in ("bias", "mult", "shift"))
        self.w = a["w"].astype(np.int8)
        self.vw = np.zeros(unit.num_weights, np.int64) if unit.momentum else None
        self.vb = np.zeros(unit.num_channels, np.int64) if unit.momentum else None

    def to_bytes(self):
        raw = (self.scale.astype("<f4").tobytes() + b"".join(a.astype("<i4").tobytes() for a in (
            self.bias, self.mult, self.shift)) + self.w.tobytes())
        return raw + bytes(self.unit.params_bytes - len(raw))

    def load(self, raw):
        c, n = self.unit.num_channels, self.unit.num_weights
        lay = param_layout(c, n)
        self.scale = np.frombuffer(raw, "<f4", c, lay["scale"]).astype(F)
        self.bias, self.mult, self.shift = (np.frombuffer(raw, "<i4", c, lay[k]).astype(np.int64)
                                            for k in ("bias", "mult", "shift"))
        self.w = np.frombuffer(raw, np.int8, n, lay["w"]).copy()
        if self.vw is not None:
            self.vw[:], self.vb[:] = 0, 0

    def real(self, layer):
        """The layer's weights (C_out, taps) and biases in real units (float64), as its int8 head serves them."""
        c0, co = layer.ch_offset, layer.channels
        scale = self.scale[c0:c0 + co].astype(np.float64)
        w = self.w[layer.w_offset:layer.w_offset + co * layer.taps].reshape(co, -1) * scale[:, None]
        return w, self.bias[c0:c0 + co] * scale * float(np.float32(layer.in_scale))

    def step_arrays(self, layer):
        """The int8 step's arrays for this layer's personalised head."""
        w0, c0, co = layer.w_offset, layer.ch_offset, layer.channels
        filt = self.w[w0:w0 + co * layer.taps]
        shape = (co, layer.taps) if layer.dense else (co, layer.kernel[0], layer.kernel[1], layer.in_dims[3])
        return dict(filter=filt.reshape(shape), bias=self.bias[c0:c0 + co].astype(np.int32),
                    multiplier=self.mult[c0:c0 + co].astype(np.int32), shift=self.shift[c0:c0 + co].astype(np.int32))


# ------------------------------------------------------------------------------------- the backward pass

def gate(layer, y):
    """Where the layer's activation lets the gradient through, read off its int8 output y."""
    y = np.asarray(y, np.int32)
    if layer.act == "relu":
        return y > layer.act_min
    if layer.act == "clip":
        return (y > layer.act_min) & (y < layer.act_max)
    return np.ones(y.shape, bool)


def normalise(v, sigma):
    """Block floating point: (int values with |v| <= 2^14, their float32 scale) for int values v of scale sigma."""
    v = np.asarray(v, np.int64)
    m = int(np.max(np.abs(v))) if v.size else 0
    sh = max(0, fmath.bit_length(m) - ERROR_BITS)
    return round_shift(v, sh), F(F(sigma) * pow2(sh))


def logits_error(z_q, table, target):
    """The error p - onehot(target) at int8 logits z_q, through the exit's confidence table (p_j = T_j / S,
    T_j = table[max z - z_j], S = sum T_j): integers 2^30 p_j - 2^30 [j == target]. Also the cross-entropy
    log S - log T_target (T at least 1)."""
    z = np.asarray(z_q, np.int32)
    t = table[int(np.max(z)) - z].astype(np.int64)
    s = int(np.sum(t))
    e = np.array([(int(v) << 30) // s for v in t], np.int64)
    e[target] -= 1 << 30
    loss = F(fmath.logf(F(s)) - fmath.logf(F(max(int(t[target]), 1))))
    return e, loss


def kept_channels(scores, keep):
    """Channels kept by error-map pruning: the ceil(keep * C) highest scores, ties to the lower index."""
    c = len(scores)
    kf = F(F(keep) * F(c))
    k = int(kf)
    if F(k) < kf:
        k += 1
    k = max(1, min(c, k))
    s = np.asarray(scores, F)
    above = (s[None, :] > s[:, None]) | ((s[None, :] == s[:, None]) & np.tri(c, k=-1, dtype=bool))
    return above.sum(axis=1) < k  # rank: the channels ahead of each one


class Backward:
    """One unit's backward pass and updates for one window (firmware/train_layers.c)."""

    def __init__(self, unit, params, cfg, macs):
        self.unit, self.p, self.cfg, self.macs = unit, params, cfg, macs
        self.skipped = 0

    def run(self, acts, target, table):
        """acts: int8 tensors by name (the unit's input and its steps' outputs). Returns the loss."""
        layers = self.unit.layers
        e, loss = logits_error(acts[layers[-1].output].reshape(-1), table, target)
        err, sigma = normalise(e, F(2.0 ** -30))
        broadcast = False
        for j in range(len(layers) - 1, -1, -1):
            layer = layers[j]
            x = acts[layer.input].reshape(layer.in_dims[1:])
            y = acts[layer.output].reshape(layer.out_dims[1:])
            err, sigma, broadcast = getattr(self, layer.kind)(layer, x, y, err, broadcast, sigma, j > 0)
        return loss

    # Each layer: error at its output (a full map, or one value per channel broadcast over positions) ->
    # (error at its input, its scale, broadcast?), or (None, ...) when the input's error is not needed.
    def conv(self, layer, x, y, err, broadcast, sigma, need_dx):
        oh, ow, co = layer.out_dims[1:]
        kh, kw = layer.kernel
        sh, sw = layer.stride
        ci = layer.in_dims[3]
        y = y.reshape(oh * ow, co)
        e = np.where(gate(layer, y), np.broadcast_to(err.reshape(1 if broadcast else oh * ow, co), y.shape), 0)
        c0 = layer.ch_offset
        mult, shift = self.p.mult[c0:c0 + co], self.p.shift[c0:c0 + co]
        w = self.p.w[layer.w_offset:layer.w_offset + co * layer.taps].astype(np.int64).reshape(co, kh, kw, ci)
        cfg = self.cfg
        if not layer.dense or cfg.prune_dense:
            scores = F(sigma) * np.abs(e).sum(axis=0).astype(F)  # each operation rounds once, as in C
            if cfg.prune_weight_l1 != 0:
                wl1 = np.abs(w).reshape(co, -1).sum(axis=1).astype(F)
                scores = scores + F(cfg.prune_weight_l1) * (self.p.scale[c0:c0 + co] * wl1)
            keep = F(cfg.prune_keep)
            if keep < F(1) and F(layer.keep_max) < keep:
                keep = F(layer.keep_max)
            kept = kept_channels(scores, keep)
        else:
            kept = np.ones(co, bool)
        per_channel = oh * ow * layer.taps * (2 if need_dx else 1)
        self.macs["backward"] += int(kept.sum()) * per_channel
        self.macs["backward_dense"] += co * per_channel
        t, l, _, _ = layer.padding
        h, wd = layer.in_dims[1:3]
        xp = int8_ops.pad(x[None].astype(np.int64) - layer.in_zero_point, layer.padding, 0)[0]
        patches = np.stack([xp[p * sh:p * sh + kh, q * sw:q * sw + kw, :].reshape(-1)
                            for p in range(oh) for q in range(ow)])  # (positions, taps)
        dx = None
        if need_dx:
            smax = int(np.max(shift))
            folded = np.where(kept, round_shift(e * mult, 31 + smax - shift), 0)  # per kept channel
            acc = np.zeros((h + t + layer.padding[2], wd + l + layer.padding[3], ci), np.int64)
            fold = folded.reshape(oh, ow, co)
            for i in range(kh):
                for j in range(kw):
                    contrib = np.tensordot(fold, w[:, i, j, :], axes=([2], [0]))  # (oh, ow, ci)
                    acc[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += contrib
            acc = acc[t:t + h, l:l + wd]
            sig = F(F(sigma * F(F(layer.out_scale) / F(layer.in_scale))) * pow2(smax))
            dx, dsig = normalise(acc, sig)
        rows = np.flatnonzero(kept)
        self.update_rows(layer, rows, e[:, rows].T @ patches, e[:, rows].sum(axis=0), sigma)
        return dx, (dsig if need_dx else sigma), False

    def avgpool(self, layer, x, y, err, broadcast, sigma, need_dx):
        h, w, c = layer.in_dims[1:]
        e = np.where(gate(layer, y.reshape(-1)), err.reshape(-1), 0)
        return e, F(sigma / F(h * w)), True

    def maxpool(self, layer, x, y, err, broadcast, sigma, need_dx):
        oh, ow, c = layer.out_dims[1:]
        kh, kw = layer.kernel
        e = np.where(gate(layer, y), np.broadcast_to(err.reshape((1, 1, c) if broadcast else (oh, ow, c)),
                                                     (oh, ow, c)), 0)
        dx = np.zeros(x.shape, np.int64)
        x = x.astype(np.int32)
        for p in range(oh):
            for q in range(ow):
                win = x[p * kh:(p + 1) * kh, q * kw:(q + 1) * kw].reshape(-1, c)
                first = np.argmax(win, axis=0)  # the first largest, in scan order
                for ch in range(c):
                    i, j = divmod(int(first[ch]), kw)
                    dx[p * kh + i, q * kw + j, ch] = e[p, q, ch]
        return dx, sigma, False

    def act(self, layer, x, y, err, broadcast, sigma, need_dx):
        g = gate(layer, y)
        e = np.where(g, np.broadcast_to(err.reshape((1, 1, -1) if broadcast else y.shape), y.shape), 0)
        return e, sigma, False

    def update_rows(self, layer, rows, g, gb, sigma):
        """SGD on output channels `rows` of a trainable layer from their weight gradients g (rows x taps, int,
        scale sigma * s_in) and bias gradients gb (scale sigma), each channel on its own (firmware: one at a
        time). A channel whose weight or bias would leave its bound is skipped (and counted)."""
        p, cfg = self.p, self.cfg
        c = layer.ch_offset + rows
        k = layer.taps
        idx = (layer.w_offset + rows * k)[:, None] + np.arange(k)
        s, s_in = p.scale[c], F(layer.in_scale)
        sigma_g = F(sigma * s_in)
        lr = np.full(len(rows), F(cfg.lr))
        clip = F(cfg.clip_norm)
        g, gb = np.asarray(g, np.int64).reshape(len(rows), k), np.asarray(gb, np.int64)
        if clip > F(0):
            sh = np.maximum(0, fmath.bit_lengths(np.abs(g).max(axis=1)) - 15)
            sum2 = ((g >> sh[:, None]) ** 2).sum(axis=1)
            a, b = sigma_g * np.ldexp(F(1), sh).astype(F), F(sigma) * gb.astype(F)
            norm2 = a * a * sum2.astype(F) + b * b  # sums below 2^53: one rounding each, as in C
            over = norm2 > F(clip * clip)
            lr = np.where(over, lr * (clip / np.sqrt(norm2)), lr)
        # Steps of each channel's scale (weights) and of in_scale * scale (bias) per unit of gradient.
        f_w = (lr * sigma_g) / s
        f_b = (lr * F(sigma)) / (s_in * s)
        f_d = F(F(cfg.lr) * F(cfg.weight_decay))
        ok = np.isfinite(f_w) & np.isfinite(f_b) & bool(np.isfinite(f_d))
        f_w, f_b = np.where(ok, f_w, F(0)), np.where(ok, f_b, F(0))
        fd = np.full(len(rows), f_d if np.isfinite(f_d) else F(0))
        w = p.w[idx].astype(np.int64)
        bias = p.bias[c]
        d, db = fmath.scaled_rows(g, f_w), fmath.scaled_rows(gb, f_b)
        if f_d != F(0):
            d, db = d + fmath.scaled_rows(w, fd), db + fmath.scaled_rows(bias, fd)
        vmax = np.zeros(len(rows), np.int64)
        if p.vw is not None:
            mu = np.full(len(rows), F(cfg.momentum))
            d = fmath.scaled_rows(p.vw[idx], mu) + d
            vmax = np.abs(d).max(axis=1)
            db = fmath.scaled_rows(p.vb[c], mu) + db
        new, new_b = w - d, bias - db
        m = np.abs(new).max(axis=1)
        ok &= (vmax <= 32767) & (np.abs(db) <= INT32_MAX) & (m <= UPDATE_RANGE) & (np.abs(new_b) <= INT32_MAX)
        # Refit a channel's scale (the compiler's per-channel scheme, with headroom: largest weight at 120)
        # when its weights outgrew the int8 range (required) or shrank below 96 (when the new values fit).
        want = ok & ((m > WEIGHT_MAX) | ((0 < m) & (m < WEIGHT_LOW)))
        fits, s_new, new_vb = np.zeros(len(rows), bool), s, db
        if want.any():
            mf = np.where(want, m, WEIGHT_REFIT).astype(F)
            refit, r = (s * mf) / F(WEIGHT_REFIT), F(WEIGHT_REFIT) / mf
            rb, rvb = fmath.scaled_rows(new_b, r), fmath.scaled_rows(db, r)
            with np.errstate(invalid="ignore"):
                fits = want & np.isfinite(refit) & (F(127) * refit <= F(layer.bound))
            fits &= (np.abs(rb) <= INT32_MAX) & (fmath.scaled_rows(vmax, r) <= 32767) & (np.abs(rvb) <= INT32_MAX)
            ok &= ~(want & ~fits & (m > WEIGHT_MAX))
            s_new = np.where(fits, refit, s)
            new_b, new_vb = np.where(fits, rb, new_b), np.where(fits, rvb, db)
            new = np.where(fits[:, None], fmath.scaled_rows(new, r), new)
            if p.vw is not None:
                d = np.where(fits[:, None], fmath.scaled_rows(d, r), d)
        with np.errstate(invalid="ignore", over="ignore"):
            ok &= ~(np.abs(new_b).astype(F) * (s_in * s_new) > F(layer.bound))
        self.skipped += int(np.sum(~ok))
        idx, c, fits = idx[ok], c[ok], fits[ok]
        p.w[idx] = new[ok].astype(np.int8)
        p.bias[c] = new_b[ok]
        if p.vw is not None:
            p.vw[idx], p.vb[c] = d[ok], new_vb[ok]
        for ch, sn in zip(c[fits], s_new[ok][fits]):
            p.scale[ch] = sn
            p.mult[ch], p.shift[ch] = fmath.qmult(F(F(s_in * sn) / F(layer.out_scale)))


class GradientRecorder(Backward):
    """The backward pass, recording each kept channel's gradient (real units) instead of applying it."""

    def __init__(self, unit, params, cfg, macs):
        super().__init__(unit, params, cfg, macs)
        self.grads = {}

    def update_rows(self, layer, rows, g, gb, sigma):
        for o, go, gbo in zip(rows, g, gb):
            self.grads[(layer.name, int(o))] = (np.asarray(go, np.float64) * float(F(sigma * F(layer.in_scale))),
                                                int(gbo) * float(sigma))


def unit_gradients(unit, params, acts, target, table, cfg, macs=None):
    """Per trainable layer (by name): the gradient of the unit's cross-entropy w.r.t. its real weights
    (C_out, taps) and biases, as the board computes it before its update (zeros for pruned channels); and the
    loss. `acts`: the unit's input and its personalised head's int8 outputs (TrainerReference.unit_activations)."""
    rec = GradientRecorder(unit, params, cfg, macs if macs is not None else dict(forward=0, backward=0,
                                                                                  backward_dense=0))
    loss = rec.run(acts, target, table)
    out = {}
    for layer in unit.trainable:
        gw, gb = np.zeros((layer.channels, layer.taps)), np.zeros(layer.channels)
        for o in range(layer.channels):
            if (layer.name, o) in rec.grads:
                gw[o], gb[o] = rec.grads[(layer.name, o)]
        out[layer.name] = (gw, gb)
    return out, loss


# ------------------------------------------------------------------------------------------- the trainer

@dataclass
class ExitState:
    threshold: float
    agreement: float = 1.0
    acc_personalised: float = 0.0
    acc_generic: float = 0.0
    labelled: int = 0


@dataclass
class FilterState:
    w: np.ndarray = field(default_factory=lambda: np.zeros(4, F))
    tau: float = 0.0  # 0: not set yet (the first observed loss sets it)
    kept: float = 0.0
    cut: float = 0.0  # predicted hard when the score reaches it


MEMORY_SEED = 0x6D656D30  # the replay memory's PRNG starts from CONFIG's seed XOR this ("mem0")


class ReplayMemory:
    """The replay memory (firmware/trainer.c; layout: codegen.trainer.memory_layout): labelled examples of the
    trainable units' int8 inputs, a pending slot for the window the board asked a label for, and the state of
    its label requests."""

    def __init__(self, layout, classes):
        self.layout, self.slots, self.classes = layout, layout["slots"], classes
        self.prng = fmath.XorShift32(0)
        self.clear()

    def clear(self):
        n = self.slots + 1
        self.credit, self.cut, self.since_ask = F(0), F(ASK_CUT_START), 0
        self.labels, self.masks = [NO_CLASS] * n, [0] * n  # slot `slots` is the pending one
        self.examples = np.zeros((n, self.layout["example_bytes"]), np.int8)

    def seed(self, seed):
        self.prng = fmath.XorShift32((int(seed) ^ MEMORY_SEED) & 0xFFFFFFFF)

    def unit_input(self, slot, u):
        off, n = self.layout["unit_offsets"][u], self.layout["unit_bytes"][u]
        return self.examples[slot, off:off + n]

    def count(self, c):
        return sum(1 for s in range(self.slots) if self.labels[s] == c)

    def store(self, label, mask, inputs):
        """A labelled example (unit u's input: inputs(u) for the units in mask) into a free slot, else over an
        example of the most frequent class (of its own class when that is among the most frequent), chosen at
        random. Returns the slot."""
        free = [s for s in range(self.slots) if self.labels[s] == NO_CLASS]
        if free:
            slot = free[0]
        else:
            counts = [self.count(c) for c in range(self.classes)]
            most = max(counts)
            c = label if counts[label] == most else counts.index(most)
            members = [s for s in range(self.slots) if self.labels[s] == c]
            slot = members[self.prng.next() % len(members)]
        self.labels[slot], self.masks[slot] = label, mask
        for u in range(8):
            if mask >> u & 1:
                self.unit_input(slot, u)[:] = inputs(u)
        return slot

    def pick(self, u, skip):
        """Class-balanced: a random class among the examples unit u can replay (not slot `skip`), then a random
        example of it; None when there is none."""
        cands = [s for s in range(self.slots) if s != skip and self.labels[s] != NO_CLASS and self.masks[s] >> u & 1]
        if not cands:
            return None
        classes = sorted({self.labels[s] for s in cands})
        c = classes[self.prng.next() % len(classes)]
        members = [s for s in cands if self.labels[s] == c]
        return members[self.prng.next() % len(members)]

    def to_bytes(self):
        n = self.slots + 1
        head = struct.pack("<IffI", self.prng.state, self.credit, self.cut, self.since_ask)
        marks = bytes(self.labels) + bytes(self.masks)
        marks += bytes(self.layout["examples_offset"] - MEMORY_HEADER_BYTES - 2 * n)
        return head + marks + self.examples.tobytes()

    def load(self, raw):
        n = self.slots + 1
        self.prng.state, credit, cut, self.since_ask = struct.unpack_from("<IffI", raw)
        self.credit, self.cut = F(credit), F(cut)
        self.labels = list(raw[MEMORY_HEADER_BYTES:MEMORY_HEADER_BYTES + n])
        self.masks = list(raw[MEMORY_HEADER_BYTES + n:MEMORY_HEADER_BYTES + 2 * n])
        off = self.layout["examples_offset"]
        self.examples = np.frombuffer(raw, np.int8, n * self.layout["example_bytes"], off).reshape(n, -1).copy()


class Prototypes:
    """Prototype heads (issue 14, `TrainerReference(..., prototypes=True)`; a compile-time switch for a C port,
    which would plan these sums in the arena): per exit, the running mean of each class's pooled int8 features
    (the input of the exit's last dense layer, from its generic head), updated from labelled windows; the head's
    answer is the nearest class mean. Integer arithmetic per window: int32 sums and counts, means kept with
    `frac` fraction bits (recomputed when a label arrives), squared distances that fit int32 (their sum over
    labels, the spread: int64). The logits are int8 so that the exit's confidence table, thresholds and
    do-no-harm guard work unchanged: the nearest class gets 127, class c gets 127 - round((d_c - d_min) x gain)
    (at least -128), a class without an example -128; gain = D / (2 T V scale): the softmax of an isotropic
    Gaussian per class (V: the mean squared distance of a labelled window to its class mean before it was added,
    in the same units; scale: the exit's logit scale; T: PROTO_TEMPERATURE), one float32 per exit computed when a
    label arrives, applied per window as round(integer x float32) (exact, `fmath.scaled`)."""

    def __init__(self, dims, scales, classes):
        self.dims, self.scales, self.classes = list(dims), [F(s) for s in scales], classes
        # Fraction bits of the means: D x (255 x 2^frac)^2 < 2^31 (a squared distance fits int32 too).
        self.frac = [max(0, (31 - fmath.bit_length(d - 1)) // 2 - 8) for d in self.dims]
        self.sums = [np.zeros((classes, d), np.int64) for d in self.dims]
        self.means = [np.zeros((classes, d), np.int64) for d in self.dims]
        self.counts = np.zeros(classes, np.int64)
        self.spread = [0] * len(self.dims)  # sum over labelled windows of the squared distance to their class mean
        self.spread_n = 0
        self.gain = [F(0)] * len(self.dims)

    def distances(self, k, x):
        v = np.asarray(x, np.int64) << self.frac[k]
        return np.sum((v[None, :] - self.means[k]) ** 2, axis=1)

    def logits(self, k, x, generic):
        """Exit k's prototype logits for pooled features x, or the generic logits while the head cannot answer:
        fewer than two classes with an example, no spread yet, or the generic head's class has no example."""
        have = self.counts > 0
        if np.sum(have) < 2 or self.gain[k] == F(0) or not have[fmath.argmax(generic)]:
            return np.asarray(generic, np.int8)
        d = self.distances(k, x)
        gap = d - int(np.min(d[have]))
        idx = np.minimum(scaled(gap, self.gain[k]), 255)
        return np.where(have, 127 - idx, -128).astype(np.int8)

    def add(self, features, label):
        """A labelled window's pooled features (one array per exit): spread, sums, count, means, gains."""
        if self.counts[label]:
            for k, x in enumerate(features):
                self.spread[k] += int(self.distances(k, x)[label])
            self.spread_n += 1
        self.counts[label] += 1
        n = int(self.counts[label])
        for k, x in enumerate(features):
            self.sums[k][label] += np.asarray(x, np.int64)
            # round(sum x 2^frac / n), ties up (floor division, as the C port must do for negative sums)
            self.means[k][label] = ((self.sums[k][label] << (self.frac[k] + 1)) + n) // (2 * n)
            if self.spread_n and self.spread[k]:
                mean_spread = F(F(self.spread[k]) / F(self.spread_n))
                self.gain[k] = F(F(self.dims[k]) / F(F(F(F(2) * F(PROTO_TEMPERATURE)) * mean_spread)
                                                     * self.scales[k]))


class LabelRefused(Exception):
    """LABEL refused (the board answers BAD_PAYLOAD): no pending request, another window's, or a bad label."""


class Window:
    """What one window has computed so far (firmware/trainer.c: `win`)."""

    def __init__(self, x_q, input_name, num_exits, serve, labelled):
        self.acts = {input_name: np.asarray(x_q, np.int8)}
        self.generic = [None] * num_exits  # int8 logits of each exit's heads, when computed
        self.personal = [None] * num_exits
        self.personal_valid = {}  # unit -> its personalised activations are in the buffers
        self.serve, self.labelled = serve, labelled
        self.ran = set()  # backbone steps run

    def served(self, k):
        return self.personal[k] if self.serve[k] else self.generic[k]


class TrainerReference:
    """The trainer of a compiled model (`codegen.compile.build(..., train=MODE)`), in numpy."""

    def __init__(self, compiled, config=None, model_hash=None, prototypes=False):
        self.steps = compiled.steps
        self.ref = compiled.reference
        self.spec = compiled.train
        self.meta = compiled.meta
        self.input_name = compiled.graph.input
        self.tables = compiled.tables
        self.num_exits = len(compiled.meta["exits"])
        self.model_hash = bytes.fromhex(model_hash or compiled.meta.get("model_hash", "0" * 32))
        self.units = self.spec.units
        self.unit_of_exit = dict(self.spec.unit_of_exit)
        self.params = [UnitParams(u) for u in self.units]
        self.counters = dict.fromkeys(("windows", "trained", "filtered", "no_target", "saturated", "invalid",
                                       "nonfinite", "labelled", "pseudo_labelled", "explored", "macs_forward",
                                       "macs_backward", "macs_backward_dense"), 0)
        self.filter = FilterState()
        self.memory = ReplayMemory(self.spec.memory, self.meta["exits"][-1]["classes"])
        self.exits = []
        self.protos = None
        if prototypes:  # exit k's pooled features: the input of the step that computes its logits
            last = {s.exit_index: s for s in self.steps if s.exit_index >= 0}
            self.pooled = [last[k].inputs[0] for k in range(self.num_exits)]
            self.protos = Prototypes([int(np.prod(last[k].in_dims[1:])) for k in range(self.num_exits)],
                                     [e["scale"] for e in self.meta["exits"]], self.meta["exits"][-1]["classes"])
        self.set_config(config or TrainConfig.default(self.num_exits))

    # --- CONFIG, STATS, CHECKPOINT ---
    def set_config(self, cfg):
        cfg = cfg.rounded()
        self.cfg = cfg
        self.prng = fmath.XorShift32(cfg.seed)
        self.memory.seed(cfg.seed)
        ths = [F(min(max(F(t), F(lo)), F(hi))) for t, lo, hi in zip(cfg.thresholds, cfg.threshold_min,
                                                                   cfg.threshold_max)]
        if not self.exits:
            self.exits = [ExitState(float(t)) for t in ths]
        else:
            for e, t in zip(self.exits, ths):
                e.threshold = float(t)
        return cfg

    def stats(self):
        c = self.counters
        exits = [ExitStats(float(F(e.threshold)), float(F(e.agreement)), float(F(e.acc_personalised)),
                           float(F(e.acc_generic)), e.labelled,
                           (1 if self._serve_personalised(k) else 0)
                           if k in self.unit_of_exit or self.protos is not None else 255)
                 for k, e in enumerate(self.exits)]
        return TrainStats(*(c[k] for k in ("windows", "trained", "filtered", "no_target", "saturated", "invalid",
                                           "nonfinite", "labelled", "pseudo_labelled", "explored", "macs_forward",
                                           "macs_backward", "macs_backward_dense")),
                          float(F(self.filter.tau)), float(F(self.filter.kept)), float(F(self.filter.cut)),
                          [float(v) for v in self.filter.w], exits)

    def _state_bytes(self):
        f = self.filter
        out = struct.pack("<6fIf", *map(float, f.w), f.tau, f.kept, self.prng.state, f.cut)
        for e in self.exits:
            out += struct.pack("<4fI", e.threshold, e.agreement, e.acc_personalised, e.acc_generic, e.labelled)
        return out

    def checkpoint(self):
        state = self._state_bytes()
        head = struct.pack("<IHBB16sII", CHECKPOINT_MAGIC, CHECKPOINT_VERSION, self.num_exits, len(self.units),
                           self.model_hash, self.spec.params_bytes, len(state))
        assert len(head) == CHECKPOINT_HEADER_BYTES
        memory = self.memory.to_bytes() if self.memory.slots else b""
        body = head + b"".join(p.to_bytes() for p in self.params) + state + memory
        return body + struct.pack("<I", checkpoint_crc(body))

    def load_checkpoint(self, image):
        """Validate and apply an image; returns None on success or the reason code (as the board's detail)."""
        reason = check_checkpoint(image, self.model_hash, self.num_exits, self.units, self.spec.memory,
                                  self.memory.classes)
        if reason:
            return reason
        pos = CHECKPOINT_HEADER_BYTES
        for p in self.params:
            p.load(image[pos:pos + p.unit.params_bytes])
            pos += p.unit.params_bytes
        w = struct.unpack_from("<6fIf", image, pos)
        self.filter = FilterState(np.array(w[:4], F), w[4], w[5], w[7])
        self.prng.state = w[6]
        pos += 4 * FILTER_STATE_WORDS
        for e in self.exits:
            t, a, ap, ag, n = struct.unpack_from("<4fI", image, pos)
            e.threshold, e.agreement, e.acc_personalised, e.acc_generic, e.labelled = t, a, ap, ag, n
            pos += 4 * EXIT_STATE_WORDS
        if self.memory.slots:
            self.memory.load(image[pos:pos + self.spec.memory["bytes"]])
        return None

    # --- forward ---
    def _serve_personalised(self, k):
        if k not in self.unit_of_exit and self.protos is None:
            return False
        mode = self.cfg.serve_mode
        if mode == ServeMode.PERSONALISED:
            return True
        if mode == ServeMode.GENERIC:
            return False
        return serves_personalised(self.exits[k], self.cfg, self.memory.slots > 0 and self.cfg.replays > 0)

    def _run_head(self, win, u, personal):
        """Unit u's steps with its generic (flash) or personalised (params) arrays; records the logits. With
        prototype heads the generic head always runs (its pooled features feed the prototypes)."""
        unit = self.units[u]
        personal = personal and self.protos is None
        for layer, i in zip(unit.layers, unit.steps):
            arrays = self.params[u].step_arrays(layer) if personal and layer.trainable else None
            step = self.steps[i]
            if arrays is not None:
                arrays = dict(step.arrays, **arrays)
            win.acts[step.output] = _run_step(step, win.acts, arrays)
        logits = win.acts[self.steps[unit.steps[-1]].output].reshape(-1)
        (win.personal if personal else win.generic)[unit.exit] = logits
        win.personal_valid[u] = personal
        self._prototype(win, unit.exit)

    def _prototype(self, win, k):
        """With prototype heads: exit k's prototype logits, as its personalised head, from its generic head's
        pooled features (just computed)."""
        if self.protos is not None:
            win.personal[k] = self.protos.logits(k, win.acts[self.pooled[k]].reshape(-1), win.generic[k])

    def _run_step(self, win, i):
        step = self.steps[i]
        win.acts[step.output] = _run_step(step, win.acts)
        win.ran.add(i)
        if step.exit_index >= 0:
            win.generic[step.exit_index] = win.acts[step.output].reshape(-1)
            self._prototype(win, step.exit_index)

    def _conf(self, k, logits):
        return confidence_q16(logits, self.tables[k])

    def _predict(self, win, force_exit=None, thresholds_q16=None):
        """The early-exit prediction with the served heads (phase 1). Returns (exit taken, index of the next
        event)."""
        th = thresholds_q16 or self._thresholds_q16()
        for n, (kind, arg) in enumerate(self.spec.events):
            if kind == "step":
                if force_exit is None or self.steps[arg].exits_needing >> force_exit & 1:
                    self._run_step(win, arg)
            elif kind == "head":
                k = self.units[arg].exit
                if force_exit is not None and k != force_exit:
                    continue
                if win.serve[k] and win.labelled:
                    self._run_head(win, arg, False)  # only for the do-no-harm comparison (training cost)
                self._run_head(win, arg, win.serve[k])
            elif kind == "exit":
                k = arg
                if force_exit is not None:
                    if k == force_exit:
                        return k, n + 1
                elif k == self.num_exits - 1 or self._conf(k, win.served(k)) >= th[k]:
                    return k, n + 1
            else:
                break
        raise AssertionError("the schedule ended without reaching an exit")

    def _thresholds_q16(self):
        return [int(F(F(e.threshold) * F(65536))) for e in self.exits]

    def classify(self, x_q, force_exit=None, thresholds_q16=None):
        """CLASSIFY on a trainer build: (exit, int8 logits, confidence Q16). Default thresholds: the board's."""
        serve = [self._serve_personalised(k) for k in range(self.num_exits)]
        win = Window(x_q, self.input_name, self.num_exits, serve, False)
        k, _ = self._predict(win, None if force_exit is None else force_exit % self.num_exits, thresholds_q16)
        logits = win.served(k)
        return k, logits, self._conf(k, logits)

    def exit_records(self, x_q):
        """Every exit's served and generic heads on x_q as the board would run them now, whatever exit its
        prediction takes (the benchmarks' threshold curves); changes no state."""
        serve = [self._serve_personalised(k) for k in range(self.num_exits)]
        x_q = np.asarray(x_q, np.int8).reshape(self.meta["input_dims_nhwc"])
        win = Window(x_q, self.input_name, self.num_exits, serve, False)
        for kind, arg in self.spec.events:
            if kind == "step":
                self._run_step(win, arg)
            elif kind == "head":
                self._run_head(win, arg, False)
                if serve[self.units[arg].exit]:
                    self._run_head(win, arg, True)
        return [dict(served_conf=self._conf(k, win.served(k)), served_pred=fmath.argmax(win.served(k)),
                     serve_personalised=serve[k], generic_conf=self._conf(k, win.generic[k]),
                     generic_pred=fmath.argmax(win.generic[k])) for k in range(self.num_exits)]

    def _complete(self, win, exits, generic, train_units, macs):
        """What a stage of training needs beyond what the window has computed, in schedule order: the backbone
        steps the `exits` need, the generic heads of the exits in `generic`, and the personalised head of every
        unit in `train_units` whose buffers do not hold it (its MACs count as macs_forward)."""
        mask = 0
        for k in exits | generic:
            mask |= 1 << k
        for kind, arg in self.spec.events:
            if kind == "step":
                if arg not in win.ran and self.steps[arg].exits_needing & mask:
                    self._run_step(win, arg)
            elif kind == "head":
                k = self.units[arg].exit
                if k in generic and win.generic[k] is None:
                    self._run_head(win, arg, False)
                if arg in train_units and not win.personal_valid.get(arg):
                    self._run_head(win, arg, True)
                    macs["forward"] += self.units[arg].forward_macs

    # --- TRAIN ---
    def train(self, x_q, label=None, invalid=False):
        with np.errstate(all="ignore"):  # IEEE overflow to inf is part of the arithmetic (and guarded)
            return self._train(x_q, label, invalid)

    def _note_window(self):
        """Every TRAIN: the label credit grows by label_budget; a pending request ages."""
        mem = self.memory
        if mem.masks[mem.slots]:
            mem.since_ask = min(mem.since_ask + 1, 0xFFFFFFFF)
        mem.credit = F(min(F(mem.credit + F(self.cfg.label_budget)), F(ASK_CREDIT_MAX)))

    def _ask(self, step, win):
        """An unlabelled window, filtered or not, before any training (which reuses the arena): the board asks
        for its label when a credit is there, no recent request waits, and its uncertainty score reaches the
        adaptive cut. Its units' inputs go to the pending slot."""
        mem = self.memory
        pending = self.memory.slots
        if not pending or not mem.credit >= F(1) or (mem.masks[pending] and mem.since_ask < ASK_SPACING):
            return
        score = F(F(1) - F(F(step.confidence_q16) * F(2.0 ** -16)))
        if mem.count(step.prediction) * mem.classes < mem.slots:  # a class the memory has few examples of
            score = F(score + F(0.5))
        if any(win.served(k) is not None and fmath.argmax(win.served(k)) != step.prediction
               for k in range(self.num_exits)):  # the exits computed disagree
            score = F(score + F(0.5))
        asked = score >= mem.cut
        mem.cut = F(mem.cut + F(F(ASK_STEP) * F(3 if asked else -1)))
        if not asked:
            return
        mem.credit = F(mem.credit - F(1))
        mask = sum(1 << u for u, unit in enumerate(self.units) if unit.exit <= step.exit)
        for u in range(len(self.units)):
            if mask >> u & 1:
                mem.unit_input(pending, u)[:] = win.acts[self.units[u].input].reshape(-1)
        mem.masks[pending], mem.since_ask = mask, 0
        step.flags |= STEP_ASKED

    def _replay(self, mask, new_slot, macs):
        """After training on a labelled example: per unit in mask, cfg.replays examples of the memory (not the
        new one, in slot new_slot) through both heads, as do-no-harm evidence, and the same backward. Returns
        the skipped updates."""
        skipped = 0
        for u, unit in enumerate(self.units):
            if not mask >> u & 1:
                continue
            for _ in range(self.cfg.replays):
                slot = self.memory.pick(u, new_slot)
                if slot is None:
                    break
                win = self._unit_window(u, self.memory.unit_input(slot, u))
                self._run_head(win, u, False)
                self._run_head(win, u, True)
                macs["forward"] += 2 * unit.forward_macs
                self._note_evidence(win, unit.exit, self.memory.labels[slot], True)
                back = Backward(unit, self.params[u], self.cfg, macs)
                back.run(win.acts, self.memory.labels[slot], self.tables[unit.exit])
                skipped += back.skipped
        return skipped

    def _unit_window(self, u, x):
        win = Window(np.zeros(0, np.int8), self.input_name, self.num_exits, [False] * self.num_exits, True)
        unit = self.units[u]
        win.acts[unit.input] = np.asarray(x, np.int8).reshape(unit.layers[0].in_dims[1:])
        return win

    def label(self, label, age):
        """LABEL: the label of the window the board asked about, `age` TRAIN requests ago. Trains each unit on
        it (after its generic head for do no harm), stores it, replays. Raises LabelRefused."""
        with np.errstate(all="ignore"):
            return self._label(label, age)

    def _label(self, label, age):
        mem, cfg = self.memory, self.cfg
        pending = mem.slots
        if not mem.slots or not mem.masks[pending]:
            raise LabelRefused("no label request is pending")
        if age != mem.since_ask:
            raise LabelRefused(f"the pending request is {mem.since_ask} windows old, not {age}")
        if not 0 <= label < mem.classes:
            raise LabelRefused(f"label {label} is not a class")
        mask = mem.masks[pending]
        macs = dict(forward=0, backward=0, backward_dense=0)
        step = TrainStep(Outcome.TRAINED, NO_CLASS, NO_CLASS, label, STEP_LABEL, 0, 0.0, 0.0, 0, 0, 0, 0, 0)
        self.counters["labelled"] += 1
        loss_sum, skipped, n = F(0), 0, 0
        rate = F(cfg.dnh_rate)
        for u, unit in enumerate(self.units):
            if not mask >> u & 1:
                continue
            win = self._unit_window(u, mem.unit_input(pending, u))
            self._run_head(win, u, False)
            self._run_head(win, u, True)
            macs["forward"] += 2 * unit.forward_macs
            self._note_evidence(win, unit.exit, label, True)
            back = Backward(unit, self.params[u], cfg, macs)
            loss_sum = F(loss_sum + back.run(win.acts, label, self.tables[unit.exit]))
            skipped += back.skipped
            n += 1
        slot = mem.store(label, mask, lambda u: mem.unit_input(pending, u))
        mem.masks[pending] = 0
        skipped += self._replay(mask, slot, macs)
        return self._finish(step, F(loss_sum / F(n)), skipped, macs)

    def _finish(self, step, loss, skipped, macs):
        """A trained step's loss, MACs and outcome, and the counters."""
        c = self.counters
        step.loss = float(loss)
        step.macs_forward, step.macs_backward = macs["forward"], macs["backward"]
        step.macs_backward_dense = macs["backward_dense"]
        for key in ("forward", "backward", "backward_dense"):
            c[f"macs_{key}"] += macs[key]
        c["nonfinite"] += skipped
        if skipped:
            step.outcome = Outcome.SKIPPED
        else:
            c["trained"] += 1
        return step

    def _train(self, x_q, label, invalid):
        cfg, c, flt = self.cfg, self.counters, self.filter
        c["windows"] += 1
        if self.memory.slots:
            self._note_window()
        x_q = np.asarray(x_q, np.int8).reshape(-1)
        labelled = label is not None
        serve = [self._serve_personalised(k) for k in range(self.num_exits)]
        win = Window(x_q.reshape(self.meta["input_dims_nhwc"]), self.input_name, self.num_exits, serve, labelled)
        k, _ = self._predict(win)
        served = win.served(k)
        step = TrainStep(Outcome.TRAINED, k, fmath.argmax(served), NO_CLASS, STEP_PERSONALISED if serve[k] else 0,
                         self._conf(k, served), 0.0, 0.0, 0, 0, 0, 0, 0)
        if invalid:
            c["invalid"] += 1
            step.outcome = Outcome.INVALID
            return step
        if int(np.sum((x_q == -128) | (x_q == 127))) > cfg.max_saturated:
            c["saturated"] += 1
            step.outcome = Outcome.SATURATED
            return step
        # Instance filter on exit 0's served logits.
        features, score = None, F(0)
        scored = cfg.filter_mode in (FilterMode.LEARNED, FilterMode.GRADNORM)
        if scored:
            features = filter_features(win.served(0), self.tables[0])
            score = filter_score(flt.w, features) if cfg.filter_mode == FilterMode.LEARNED else \
                gradient_bound(features)
            step.filter_score = float(score)
            if score >= F(flt.cut):
                step.flags |= STEP_PREDICTED_HARD
        if not labelled and cfg.filter_mode != FilterMode.OFF:
            if scored:
                keep = bool(score >= F(flt.cut))
                if not keep and (self.prng.next() >> 8) < fmath.q24(cfg.filter_epsilon):
                    keep = True
                    step.flags |= STEP_EXPLORED
                    c["explored"] += 1
            else:
                keep = (self.prng.next() >> 8) < fmath.q24(cfg.filter_keep)
            kept = F(1 if keep else 0)
            flt.kept = F(F(flt.kept) + F(cfg.filter_rate) * F(kept - F(flt.kept)))
            if scored:
                flt.cut = F(F(flt.cut) + F(cfg.filter_step) * F(kept - F(cfg.filter_keep)))
            if not keep:
                c["filtered"] += 1
                self._ask(step, win)
                step.outcome = Outcome.FILTERED
                return step
        # The target: the label, or the generic final exit's confident prediction (the teacher).
        macs = dict(forward=0, backward=0, backward_dense=0)
        final = self.num_exits - 1
        if labelled:
            target = int(label)
            c["labelled"] += 1
            step.flags |= STEP_LABEL
        else:  # the rest of the network with every exit's served head (the teacher, and step 7's agreements)
            served_units = [u for u, unit in enumerate(self.units) if win.serve[unit.exit]]
            generic = {final} | {kk for kk in range(self.num_exits) if not win.serve[kk]}
            self._complete(win, set(range(self.num_exits)), generic, served_units, macs)
            if self._conf(final, win.generic[final]) >= cfg.pseudo_threshold_q16:
                target = fmath.argmax(win.generic[final])
                c["pseudo_labelled"] += 1
                step.flags |= STEP_PSEUDO
            else:
                target = None
        if self.protos is not None:
            return self._train_prototypes(win, step, target if labelled else None, macs)
        # Every unit trains, with its personalised head (and the generic heads the do-no-harm comparison
        # needs): a label is rare, so it teaches every exit and is evidence for every exit's guard.
        train_units = list(range(len(self.units)))
        early = labelled and k < final and FINAL_UNIT_RULE != "all"  # the study's rules
        if early and FINAL_UNIT_RULE.endswith("-or-wrong"):
            early = fmath.argmax(served) == int(label)
        if early and FINAL_UNIT_RULE.startswith("reached"):
            train_units = [u for u in train_units if self.units[u].exit != final]
        # Do-no-harm evidence: labelled windows; on exits that never saw a label, the confident teacher's
        # pseudo-labels (label-free: the generic final exit always agrees with itself, so it keeps serving).
        evidence = [u for u in train_units if labelled or self.exits[self.units[u].exit].labelled == 0]
        if early and FINAL_UNIT_RULE.startswith("evidence-reached"):
            evidence = [u for u in evidence if self.units[u].exit != final]
        if target is not None:
            exits = {self.units[u].exit for u in train_units}
            self._complete(win, exits, {self.units[u].exit for u in evidence}, train_units, macs)
            for u in evidence:
                self._note_evidence(win, self.units[u].exit, target, labelled)
        self._adapt_thresholds(win)
        if target is None:
            c["no_target"] += 1
            self._ask(step, win)
            step.outcome = Outcome.NO_TARGET
            step.macs_forward = macs["forward"]
            c["macs_forward"] += macs["forward"]
            return step
        step.target = target
        slot = None
        if not labelled:
            self._ask(step, win)
        elif self.memory.slots:  # remember the example (replayed after training)
            slot = self.memory.store(target, sum(1 << u for u in train_units),
                                     lambda u: win.acts[self.units[u].input].reshape(-1))
        loss_sum, skipped = F(0), 0
        for u in train_units:
            unit = self.units[u]
            back = Backward(unit, self.params[u], cfg, macs)
            loss_sum = F(loss_sum + back.run(win.acts, target, self.tables[unit.exit]))
            skipped += back.skipped
        loss = F(loss_sum / F(len(train_units))) if train_units else F(0)
        if slot is not None:
            skipped += self._replay(sum(1 << u for u in train_units), slot, macs)
        self._finish(step, loss, skipped, macs)
        if not skipped and cfg.filter_mode == FilterMode.LEARNED:
            self._filter_feedback(features, score, loss)
        return step

    def _train_prototypes(self, win, step, label, macs):
        """The rest of a window with prototype heads: a labelled window runs every exit (its generic heads, and
        the prototype heads from their pooled features), is do-no-harm evidence for every exit, and is added to
        the class means; nothing else learns (no SGD, no pseudo-labels, no label requests)."""
        c = self.counters
        if label is not None:
            every = set(range(self.num_exits))
            self._complete(win, every, every, [], macs)
            for k in every:
                self._note_evidence(win, k, label, True)
        self._adapt_thresholds(win)
        if label is None:
            c["no_target"] += 1
            step.outcome = Outcome.NO_TARGET
            return step
        step.target = label
        self.protos.add([win.acts[name].reshape(-1) for name in self.pooled], label)
        return self._finish(step, F(0), 0, macs)

    def _note_evidence(self, win, k, target, labelled):
        """Do-no-harm bookkeeping of exit k: is each head's prediction the target? A pseudo-label is evidence only
        until the exit's first label, which replaces that label-free estimate."""
        e, rate = self.exits[k], F(self.cfg.dnh_rate)
        if labelled and e.labelled == 0:
            e.acc_personalised = e.acc_generic = 0.0
        cp = F(1 if fmath.argmax(win.personal[k]) == target else 0)
        cg = F(1 if fmath.argmax(win.generic[k]) == target else 0)
        e.acc_personalised = float(F(F(e.acc_personalised) + rate * F(cp - F(e.acc_personalised))))
        e.acc_generic = float(F(F(e.acc_generic) + rate * F(cg - F(e.acc_generic))))
        e.labelled += 1 if labelled else 0

    def _adapt_thresholds(self, win):
        """Per early exit: agreement of its served head with the final exit's, when both were computed."""
        cfg = self.cfg
        final = win.served(self.num_exits - 1)
        if final is None:
            return
        final_pred = fmath.argmax(final)
        for k in range(self.num_exits - 1):
            mine = win.served(k)
            if mine is None:
                continue
            e = self.exits[k]
            agree = F(1 if fmath.argmax(mine) == final_pred else 0)
            e.agreement = float(F(F(e.agreement) + F(cfg.agree_rate) * F(agree - F(e.agreement))))
            if cfg.adapt_thresholds:
                t = F(e.threshold)
                t = F(t - F(cfg.threshold_step)) if F(e.agreement) >= F(cfg.agree_target) else \
                    F(t + F(cfg.threshold_step))
                lo, hi = F(cfg.threshold_min[k]), F(cfg.threshold_max[k])
                e.threshold = float(lo if t < lo else hi if t > hi else t)

    def _filter_feedback(self, features, score, loss):
        cfg, flt = self.cfg, self.filter
        if not F(flt.tau) > F(0):
            flt.tau = float(loss)
        y = F(1) if F(loss) > F(flt.tau) else F(0)
        err = F(fmath.sigmoid(score) - y)
        lr = F(cfg.filter_lr)
        flt.w = np.array([F(flt.w[i] - F(lr * F(err * features[i]))) for i in range(4)], F)
        step, target = F(cfg.filter_step), F(cfg.filter_keep)
        factor = F(F(1) + F(step * F(F(1) - target))) if y != F(0) else F(F(1) - F(step * target))
        flt.tau = float(F(F(flt.tau) * factor))

    def config(self):
        """What CONFIG answers: the configuration with the current (adapted) thresholds."""
        cfg = TrainConfig(**{**self.cfg.__dict__, "thresholds": [e.threshold for e in self.exits]})
        return cfg.rounded()

    def unit_activations(self, x_q, u):
        """The int8 tensors unit u's backward reads for input x_q (its input and personalised head)."""
        win = Window(np.asarray(x_q, np.int8).reshape(self.meta["input_dims_nhwc"]), self.input_name,
                     self.num_exits, [False] * self.num_exits, False)
        for i in range(self.units[u].steps[0]):
            if self.steps[i].exits_needing >> self.units[u].exit & 1:
                self._run_step(win, i)
        self._run_head(win, u, True)
        return win.acts


def serves_personalised(e, cfg, replay=False):
    """The do-no-harm rule: an exit serves its personalised head only when its moving accuracy beats the generic
    head's by DNH_WINS (DNH_WINS_REPLAY when replayed examples are evidence too) steps of the moving average
    (about that many more windows won than lost lately), on labelled evidence once it has dnh_min_labels labels,
    or before its first label on the label-free evidence."""
    if 0 < e.labelled < cfg.dnh_min_labels:
        return False
    wins = DNH_WINS_REPLAY if replay else DNH_WINS
    return F(F(e.acc_personalised) - F(e.acc_generic)) >= F(F(wins) * F(cfg.dnh_rate))


def filter_features(z_q, table):
    """(1, top probability, margin to the second, sum of squared probabilities) of exit 0's int8 logits, with
    the probabilities from the exit's confidence table (p_j = T_j / S)."""
    z = np.asarray(z_q, np.int32)
    t = table[int(np.max(z)) - z].astype(np.int64)
    s = F(int(np.sum(t)))
    p = np.array([F(F(int(v)) / s) for v in t], F)
    i1 = fmath.argmax(p)
    p2 = F(-1)
    for j in range(len(p)):
        if j != i1 and p[j] > p2:
            p2 = p[j]
    return np.array([F(1), p[i1], F(p[i1] - p2), fmath.seq_sum(p * p)], F)


def gradient_bound(f):
    """|p - onehot(argmax p)|^2 = 1 - 2 p1 + sum p^2 from filter_features: the squared norm of the cross-entropy's
    gradient at exit 0's logits with its own prediction as target, a cheap bound on the window's gradient norm
    (Katharopoulos & Fleuret 2018)."""
    return F(F(F(1) - F(F(2) * f[1])) + f[3])


def filter_score(w, f):
    s = F(w[0])
    for i in range(1, 4):
        s = F(s + F(w[i] * f[i]))
    return s


CHECKPOINT_REASONS = {1: "size", 2: "format", 3: "model hash", 4: "CRC", 5: "value out of range", 6: "chunk order",
                      7: "commit pass differs from the verified image"}


def check_checkpoint(image, model_hash, num_exits, units, memory=None, classes=0):
    """0 when the image is valid for this model, else the BAD_CHECKPOINT detail code (CHECKPOINT_REASONS).
    `memory`: the replay memory's layout (codegen.trainer.memory_layout), `classes` the labels it may hold."""
    params = sum(u.params_bytes for u in units)
    state = 4 * (FILTER_STATE_WORDS + EXIT_STATE_WORDS * num_exits)
    mem_bytes = memory["bytes"] if memory else 0
    if len(image) != CHECKPOINT_HEADER_BYTES + params + state + mem_bytes + 4:
        return 1
    magic, version, ne, nu, h, npar, nstate = struct.unpack_from("<IHBB16sII", image)
    if (magic, version, ne, nu, npar, nstate) != (CHECKPOINT_MAGIC, CHECKPOINT_VERSION, num_exits, len(units),
                                                 params, state):
        return 2
    if h != model_hash:
        return 3
    if checkpoint_crc(image[:-4]) != struct.unpack_from("<I", image, len(image) - 4)[0]:
        return 4
    pos = CHECKPOINT_HEADER_BYTES
    for unit in units:
        p = UnitParams(unit)
        p.load(image[pos:pos + unit.params_bytes])
        pos += unit.params_bytes
        bounds = np.concatenate([[l.bound] * l.channels for l in unit.trainable]).astype(F)
        ok_mult = (p.mult == 0) | ((p.mult >= 2**30) & (p.mult <= INT32_MAX))
        if not (np.all(np.isfinite(p.scale)) and np.all(p.scale > 0) and np.all(F(127) * p.scale <= bounds)
                and np.all(ok_mult) and np.all((p.shift >= -31) & (p.shift <= 30)) and np.all(p.w != -128)):
            return 5
    fstate = np.frombuffer(image, "<f4", 8, pos)[[0, 1, 2, 3, 4, 5, 7]]
    ex = np.frombuffer(image, "<u4", EXIT_STATE_WORDS * num_exits, pos + 4 * FILTER_STATE_WORDS).reshape(num_exits, -1)
    exf = ex[:, :4].copy().view("<f4")
    if not (np.all(np.isfinite(fstate)) and np.all(np.isfinite(exf))):
        return 5
    if mem_bytes:  # label credit and cut finite, each label a class or none, each mask a set of units
        pos += state
        n = memory["slots"] + 1
        marks = image[pos + MEMORY_HEADER_BYTES:pos + MEMORY_HEADER_BYTES + 2 * n]
        if not (np.all(np.isfinite(np.frombuffer(image, "<f4", 2, pos + 4)))
                and all(v < classes or v == NO_CLASS for v in marks[:n]) and all(v >> len(units) == 0
                                                                                 for v in marks[n:])):
            return 5
    return 0

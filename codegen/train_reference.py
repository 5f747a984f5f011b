"""The golden model of the on-device trainer: the same algorithm as firmware/trainer.c, instance_filter.c and
train_layers.c, in the same float32 operation order (codegen/fmath.py), so a board and this reference make
the same decisions on every window and end with the same weights. docs/training.md is the specification.

Shapes are NHWC without the batch dimension: (H, W, C). Loop orders that decide rounding are spelled out and
the C loops follow them: conv forward accumulates over (kh, kw, c_in) from 0 and adds the bias last; weight
gradients accumulate over output positions (row-major); input gradients gather, per input element, over
(kh, kw) then the kept output channels in ascending order.
"""
import struct
from dataclasses import dataclass, field

import numpy as np

from codegen import fmath
from codegen.fmath import F
from codegen.reference import confidence_q16
from codegen.trainer import (CHECKPOINT_HEADER_BYTES, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, EXIT_STATE_WORDS,
                             FILTER_STATE_WORDS)
from codegen.trainer_abi import (NO_CLASS, STEP_EXPLORED, STEP_LABEL, STEP_PERSONALISED, STEP_PREDICTED_HARD,
                                 STEP_PSEUDO, ExitStats, FilterMode, Outcome, ServeMode, TrainConfig, TrainStats,
                                 TrainStep, checkpoint_crc)

# ------------------------------------------------------------------------------------------- float layers

def gate(act, y, v):
    """v where the activation that produced y lets the gradient through, else 0."""
    kind = act[0]
    if kind == "none":
        return v
    if kind == "relu":
        return np.where(y > F(0), v, F(0)).astype(F)
    lo, hi = F(act[1]), F(act[2])
    return np.where((y > lo) & (y < hi), v, F(0)).astype(F)


def activate(act, y):
    kind = act[0]
    if kind == "none":
        return y
    if kind == "relu":
        return np.where(y > F(0), y, F(0)).astype(F)
    lo, hi = F(act[1]), F(act[2])
    return np.where(y < lo, lo, np.where(y > hi, hi, y)).astype(F)


def _pad(x, padding):
    t, l, b, r = padding
    return np.pad(x, ((t, b), (l, r), (0, 0)))


def forward(layer, params, x):
    """x: float32 (H, W, C) -> (OH, OW, C_out)."""
    _, oh, ow, co = layer.out_dims
    if layer.kind == "conv":
        kh, kw = layer.kernel
        sh, sw = layer.stride
        ci = layer.in_dims[3]
        w = params[layer.w_offset:layer.w_offset + co * kh * kw * ci].reshape(co, kh, kw, ci)
        b = params[layer.b_offset:layer.b_offset + co]
        xp = _pad(x.reshape(layer.in_dims[1:]), layer.padding)
        acc = np.zeros((oh, ow, co), F)
        for i in range(kh):
            for j in range(kw):
                patch = xp[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                for c in range(ci):
                    acc = acc + patch[:, :, c:c + 1] * w[:, i, j, c]
        return activate(layer.act, acc + b)
    if layer.kind == "avgpool":
        h, w_, c = layer.in_dims[1:]
        x = x.reshape(h, w_, c)
        acc = np.zeros(c, F)
        for i in range(h):
            for j in range(w_):
                acc = acc + x[i, j]
        return (acc * (F(1) / F(h * w_))).reshape(1, 1, c).astype(F)
    if layer.kind == "maxpool":
        kh, kw = layer.kernel
        x = x.reshape(layer.in_dims[1:])
        out = None
        for i in range(kh):
            for j in range(kw):
                v = x[i:i + kh * oh:kh, j:j + kw * ow:kw, :]
                out = v if out is None else np.where(v > out, v, out)
        return out.astype(F)
    if layer.kind == "act":
        return activate(layer.act, x.reshape(layer.out_dims[1:]))
    raise ValueError(layer.kind)


def kept_channels(scores, keep):
    """Channels kept by error-map pruning: the ceil(keep * C) highest scores, ties to the lower index."""
    c = len(scores)
    kf = F(F(keep) * F(c))
    k = int(kf)
    if F(k) < kf:
        k += 1
    k = max(1, min(c, k))
    kept = np.zeros(c, bool)
    for o in range(c):
        rank = sum(1 for j in range(c) if scores[j] > scores[o] or (scores[j] == scores[o] and j < o))
        kept[o] = rank < k
    return kept


def backward(layer, params, x, e, grad, need_dx, prev_act, cfg, macs):
    """e: error at the layer's output (already gated by its activation). Adds this layer's weight gradients
    into `grad` and returns the error at its input, gated by the previous layer's activation (whose output is
    x), or None when not needed. `macs` (dict) counts executed and dense-equivalent backward MACs."""
    _, oh, ow, co = layer.out_dims
    x = x.reshape(layer.in_dims[1:])
    if layer.kind == "conv":
        kh, kw = layer.kernel
        sh, sw = layer.stride
        ci = layer.in_dims[3]
        w = params[layer.w_offset:layer.w_offset + co * kh * kw * ci].reshape(co, kh, kw, ci)
        e = e.reshape(oh, ow, co)
        prune = not layer.dense or cfg.prune_dense
        if prune:
            scores = np.zeros(co, F)
            for p in range(oh):
                for q in range(ow):
                    scores = scores + np.abs(e[p, q])
            if cfg.prune_weight_l1 != 0:
                wl1 = np.zeros(co, F)
                for i in range(kh):
                    for j in range(kw):
                        for c in range(ci):
                            wl1 = wl1 + np.abs(w[:, i, j, c])
                scores = scores + F(cfg.prune_weight_l1) * wl1
            kept = kept_channels(scores, cfg.prune_keep)
        else:
            kept = np.ones(co, bool)
        n_kept = int(kept.sum())
        per_channel = oh * ow * kh * kw * ci
        macs["backward"] += n_kept * per_channel * (2 if need_dx else 1)
        macs["backward_dense"] += co * per_channel * (2 if need_dx else 1)
        xp = _pad(x, layer.padding)
        dw = np.zeros((co, kh, kw, ci), F)
        db = np.zeros(co, F)
        for p in range(oh):
            for q in range(ow):
                patch = xp[p * sh:p * sh + kh, q * sw:q * sw + kw, :]
                dw = dw + e[p, q][:, None, None, None] * patch[None]
                db = db + e[p, q]
        dw[~kept] = F(0)
        db[~kept] = F(0)
        grad[layer.w_offset:layer.w_offset + dw.size] = dw.reshape(-1)
        grad[layer.b_offset:layer.b_offset + co] = db
        if not need_dx:
            return None
        t, l, _, _ = layer.padding
        h, wd = layer.in_dims[1:3]
        dx = np.zeros((h, wd, ci), F)
        ih, iw = np.arange(h), np.arange(wd)
        for i in range(kh):
            ph = ih + t - i
            okh = (ph >= 0) & (ph % sh == 0) & (ph // sh < oh)
            for j in range(kw):
                pw = iw + l - j
                okw = (pw >= 0) & (pw % sw == 0) & (pw // sw < ow)
                if not okh.any() or not okw.any():
                    continue
                rows, cols = ih[okh], iw[okw]
                eh, ew = (ph[okh] // sh), (pw[okw] // sw)
                for o in np.flatnonzero(kept):
                    ev = e[np.ix_(eh, ew)][:, :, o]
                    dx[np.ix_(rows, cols)] = dx[np.ix_(rows, cols)] + ev[:, :, None] * w[o, i, j]
        return gate(prev_act, x, dx)
    if layer.kind == "avgpool":
        if not need_dx:
            return None
        h, wd, c = layer.in_dims[1:]
        g = e.reshape(c) * (F(1) / F(h * wd))
        return gate(prev_act, x, np.broadcast_to(g, (h, wd, c)).astype(F))
    if layer.kind == "maxpool":
        if not need_dx:
            return None
        kh, kw = layer.kernel
        e = e.reshape(oh, ow, co)
        dx = np.zeros_like(x)
        best = x[0:kh * oh:kh, 0:kw * ow:kw, :]
        bi = np.zeros(best.shape, np.int32)
        bj = np.zeros(best.shape, np.int32)
        for i in range(kh):
            for j in range(kw):
                v = x[i:i + kh * oh:kh, j:j + kw * ow:kw, :]
                better = v > best
                best = np.where(better, v, best)
                bi = np.where(better, i, bi)
                bj = np.where(better, j, bj)
        p, q, c = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(co), indexing="ij")
        rows, cols = p * kh + bi, q * kw + bj
        dx[rows, cols, c] = gate(prev_act, x[rows, cols, c], e)
        return dx
    if layer.kind == "act":
        return gate(prev_act, x, e.reshape(x.shape)) if need_dx else None
    raise ValueError(layer.kind)


def unit_forward(unit, params, x_q):
    """Every layer's output for the unit's int8 input; the last is the logits."""
    x = fmath.dequantize(x_q, unit.in_scale, unit.in_zero_point).reshape(unit.in_dims[1:])
    outs = []
    for layer in unit.layers:
        x = forward(layer, params, x)
        outs.append(x)
    return outs


def sgd(w, v, grad, cfg):
    """The update of one exit: (new weights, new momentum), or None if any value would not be finite."""
    g = grad
    norm2 = fmath.seq_sum(g * g) if g.size else F(0)
    clip = F(cfg.clip_norm)
    if clip > F(0) and norm2 > F(clip * clip):
        g = (g * F(clip / np.sqrt(norm2))).astype(F)
    g = (g + F(cfg.weight_decay) * w).astype(F)
    v_new = (F(cfg.momentum) * v + g).astype(F)
    w_new = (w - F(cfg.lr) * v_new).astype(F)
    if not fmath.is_finite(v_new, w_new):
        return None
    return w_new, v_new


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


class TrainerReference:
    """The trainer of a compiled model (`codegen.compile.build(..., train=MODE)`), in numpy."""

    def __init__(self, compiled, config=None, model_hash=None):
        self.steps = compiled.steps
        self.ref = compiled.reference
        self.spec = compiled.train
        self.meta = compiled.meta
        self.num_exits = len(compiled.meta["exits"])
        self.model_hash = bytes.fromhex(model_hash or compiled.meta.get("model_hash", "0" * 32))
        self.units = self.spec.units
        self.unit_of_exit = dict(self.spec.unit_of_exit)
        self.exit_tensor = {s.exit_index: s.output for s in self.steps if s.exit_index >= 0}
        self.params = [u.init.astype(F).copy() for u in self.units]
        self.momentum = [np.zeros_like(p) for p in self.params]
        self.counters = dict.fromkeys(("windows", "trained", "filtered", "no_target", "saturated", "invalid",
                                       "nonfinite", "labelled", "pseudo_labelled", "explored", "macs_forward",
                                       "macs_backward", "macs_backward_dense"), 0)
        self.filter = FilterState()
        self.exits = []
        self.set_config(config or TrainConfig.default(self.num_exits))

    # --- CONFIG, STATS, CHECKPOINT ---
    def set_config(self, cfg):
        cfg = cfg.rounded()
        self.cfg = cfg
        self.prng = fmath.XorShift32(cfg.seed)
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
                           (1 if self._serve_personalised(k) else 0) if k in self.unit_of_exit else 255)
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
        n_params = sum(p.size for p in self.params)
        state = self._state_bytes()
        head = struct.pack("<IHBB16sII", CHECKPOINT_MAGIC, CHECKPOINT_VERSION, self.num_exits, len(self.units),
                           self.model_hash, n_params, len(state))
        assert len(head) == CHECKPOINT_HEADER_BYTES
        body = head + b"".join(p.astype("<f4").tobytes() for p in self.params) + state
        return body + struct.pack("<I", checkpoint_crc(body))

    def load_checkpoint(self, image):
        """Validate and apply an image; returns None on success or the reason code (as the board's detail)."""
        reason = check_checkpoint(image, self.model_hash, self.num_exits, len(self.units),
                                  [p.size for p in self.params])
        if reason:
            return reason
        pos = CHECKPOINT_HEADER_BYTES
        for i, p in enumerate(self.params):
            self.params[i] = np.frombuffer(image, "<f4", p.size, pos).astype(F).copy()
            self.momentum[i] = np.zeros_like(p)
            pos += 4 * p.size
        w = struct.unpack_from("<6fIf", image, pos)
        self.filter = FilterState(np.array(w[:4], F), w[4], w[5], w[7])
        self.prng.state = w[6]
        pos += 4 * FILTER_STATE_WORDS
        for e in self.exits:
            t, a, ap, ag, n = struct.unpack_from("<4fI", image, pos)
            e.threshold, e.agreement, e.acc_personalised, e.acc_generic, e.labelled = t, a, ap, ag, n
            pos += 4 * EXIT_STATE_WORDS
        return None

    # --- forward ---
    def _serve_personalised(self, k):
        if k not in self.unit_of_exit:
            return False
        mode = self.cfg.serve_mode
        if mode == ServeMode.PERSONALISED:
            return True
        if mode == ServeMode.GENERIC:
            return False
        e = self.exits[k]
        return e.labelled >= self.cfg.dnh_min_labels and F(e.acc_personalised) >= F(e.acc_generic)

    def evaluate(self, x_q):
        """Everything the board may compute for one input: per exit the generic int8 logits and confidence,
        the personalised float logits and confidence, and which one serves."""
        buffers = self.ref.run_all(np.asarray(x_q, np.int8).reshape(self.meta["input_dims_nhwc"]))
        out = []
        for k in range(self.num_exits):
            e = self.meta["exits"][k]
            g_q = buffers[self.exit_tensor[k]].reshape(-1)
            rec = dict(generic_q=g_q, generic_conf=confidence_q16(g_q, self.ref.exit_tables[k]),
                       generic_float=fmath.dequantize(g_q, e["scale"], e["zero_point"]),
                       generic_pred=fmath.argmax(g_q), personalised=None)
            if k in self.unit_of_exit:
                u = self.unit_of_exit[k]
                z = unit_forward(self.units[u], self.params[u], buffers[self.units[u].input])[-1].reshape(-1)
                _, _, conf = fmath.softmax_ce(z)
                rec.update(personalised=z, personal_conf=conf, personal_pred=fmath.argmax(z))
            serve = self._serve_personalised(k)
            rec["serve_personalised"] = serve
            rec["served"] = rec["personalised"] if serve else rec["generic_float"]
            rec["served_conf"] = rec["personal_conf"] if serve else rec["generic_conf"]
            rec["served_pred"] = rec["personal_pred"] if serve else rec["generic_pred"]
            rec["served_q"] = fmath.quantize_logits(rec["personalised"], e["scale"], e["zero_point"]) \
                if serve else g_q
            out.append(rec)
        return out, buffers

    def _thresholds_q16(self):
        return [int(F(F(e.threshold) * F(65536))) for e in self.exits]

    def classify(self, x_q, force_exit=None, thresholds_q16=None):
        """CLASSIFY on a trainer build: (exit, int8 logits, confidence Q16). Default thresholds: the board's."""
        with np.errstate(all="ignore"):
            recs, _ = self.evaluate(x_q)
        k = self._exit_taken(recs, force_exit, thresholds_q16)
        return k, recs[k]["served_q"], recs[k]["served_conf"]

    def _exit_taken(self, recs, force_exit=None, thresholds_q16=None):
        if force_exit is not None:
            return force_exit % self.num_exits
        th = thresholds_q16 or self._thresholds_q16()
        for k, r in enumerate(recs):
            if k == self.num_exits - 1 or r["served_conf"] >= th[k]:
                return k
        raise AssertionError

    # --- TRAIN ---
    def train(self, x_q, label=None, invalid=False):
        with np.errstate(all="ignore"):  # IEEE overflow to inf / NaN is part of the arithmetic (and guarded)
            return self._train(x_q, label, invalid)

    def _train(self, x_q, label, invalid):
        cfg, c, flt = self.cfg, self.counters, self.filter
        c["windows"] += 1
        x_q = np.asarray(x_q, np.int8).reshape(-1)
        recs, buffers = self.evaluate(x_q)
        k = self._exit_taken(recs)
        flags = STEP_PERSONALISED if recs[k]["serve_personalised"] else 0
        step = TrainStep(Outcome.TRAINED, k, recs[k]["served_pred"], NO_CLASS, flags, recs[k]["served_conf"],
                         0.0, 0.0, 0, 0, 0, 0, 0)
        if invalid:
            c["invalid"] += 1
            step.outcome = Outcome.INVALID
            return step
        if int(np.sum((x_q == -128) | (x_q == 127))) > cfg.max_saturated:
            c["saturated"] += 1
            step.outcome = Outcome.SATURATED
            return step
        labelled = label is not None
        # Instance filter on exit 0's served logits.
        features, score = None, F(0)
        if cfg.filter_mode == FilterMode.LEARNED:
            features = filter_features(recs[0]["served"])
            score = filter_score(flt.w, features)
            step.filter_score = float(score)
            if score >= F(flt.cut):
                step.flags |= STEP_PREDICTED_HARD
        if not labelled and cfg.filter_mode != FilterMode.OFF:
            if cfg.filter_mode == FilterMode.LEARNED:
                keep = bool(score >= F(flt.cut))
                if not keep and (self.prng.next() >> 8) < fmath.q24(cfg.filter_epsilon):
                    keep = True
                    step.flags |= STEP_EXPLORED
                    c["explored"] += 1
            else:
                keep = (self.prng.next() >> 8) < fmath.q24(cfg.filter_keep)
            k = F(1 if keep else 0)
            flt.kept = F(F(flt.kept) + F(cfg.filter_rate) * F(k - F(flt.kept)))
            if cfg.filter_mode == FilterMode.LEARNED:
                flt.cut = F(F(flt.cut) + F(cfg.filter_step) * F(k - F(cfg.filter_keep)))
            if not keep:
                c["filtered"] += 1
                step.outcome = Outcome.FILTERED
                return step
        # The whole forward has run (phase C): target, do-no-harm, agreement.
        final = recs[-1]
        if labelled:
            target = int(label)
            c["labelled"] += 1
            step.flags |= STEP_LABEL
        elif final["generic_conf"] >= cfg.pseudo_threshold_q16:
            target = final["generic_pred"]
            c["pseudo_labelled"] += 1
            step.flags |= STEP_PSEUDO
        else:
            target = None
        if labelled:
            rate = F(cfg.dnh_rate)
            for kk in sorted(self.unit_of_exit):
                e, r = self.exits[kk], recs[kk]
                cp, cg = F(1 if r["personal_pred"] == target else 0), F(1 if r["generic_pred"] == target else 0)
                e.acc_personalised = float(F(F(e.acc_personalised) + rate * F(cp - F(e.acc_personalised))))
                e.acc_generic = float(F(F(e.acc_generic) + rate * F(cg - F(e.acc_generic))))
                e.labelled += 1
        self._adapt_thresholds(recs)
        if target is None:
            c["no_target"] += 1
            step.outcome = Outcome.NO_TARGET
            return step
        step.target = target
        # Training: each exit's layers, forward with saved activations, backward with pruning, update.
        macs = dict(forward=0, backward=0, backward_dense=0)
        loss_sum, n_loss, skipped = F(0), 0, False
        for u, unit in enumerate(self.units):
            loss = self._train_unit(u, buffers[unit.input], target, macs)
            if loss is None:
                skipped = True
                c["nonfinite"] += 1
            else:
                loss_sum = F(loss_sum + loss)
                n_loss += 1
        loss = F(loss_sum / F(n_loss)) if n_loss else F(0)
        step.loss = float(loss)
        step.macs_forward, step.macs_backward = macs["forward"], macs["backward"]
        step.macs_backward_dense = macs["backward_dense"]
        for key in ("forward", "backward", "backward_dense"):
            c[f"macs_{key}"] += macs[key]
        c["trained"] += 1
        step.outcome = Outcome.NONFINITE if skipped else Outcome.TRAINED
        if cfg.filter_mode == FilterMode.LEARNED and not skipped:
            self._filter_feedback(features, score, loss)
        return step

    def _adapt_thresholds(self, recs):
        cfg = self.cfg
        final_pred = recs[-1]["served_pred"]
        for k in range(self.num_exits - 1):
            e = self.exits[k]
            agree = F(1 if recs[k]["served_pred"] == final_pred else 0)
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

    def _train_unit(self, u, x_q, target, macs):
        out = unit_gradients(self.units[u], self.params[u], x_q, target, self.cfg, macs)
        if out is None:
            return None
        grad, loss = out
        new = sgd(self.params[u], self.momentum[u], grad, self.cfg)
        if new is None:
            return None
        self.params[u], self.momentum[u] = new
        return loss

    def config(self):
        """What CONFIG answers: the configuration with the current (adapted) thresholds."""
        cfg = TrainConfig(**{**self.cfg.__dict__, "thresholds": [e.threshold for e in self.exits]})
        return cfg.rounded()


def unit_gradients(unit, params, x_q, target, cfg, macs=None):
    """(gradient of the unit's cross-entropy w.r.t. its parameters after error-map pruning, loss), or None
    when the logits or the loss are not finite."""
    macs = macs if macs is not None else dict(forward=0, backward=0, backward_dense=0)
    outs = unit_forward(unit, params, x_q)
    macs["forward"] += unit.forward_macs
    z = outs[-1].reshape(-1)
    if not fmath.is_finite(z):
        return None
    p, loss, _ = fmath.softmax_ce(z, target)
    if not fmath.is_finite(loss):
        return None
    e = p.copy()
    e[target] = F(e[target] - F(1))
    e = gate(unit.layers[-1].act, z, e)
    grad = np.zeros_like(params)
    x_in = fmath.dequantize(x_q, unit.in_scale, unit.in_zero_point)
    for j in range(len(unit.layers) - 1, -1, -1):
        layer = unit.layers[j]
        x = outs[j - 1] if j > 0 else x_in
        prev_act = unit.layers[j - 1].act if j > 0 else ("none",)
        e = backward(layer, params, x, e, grad, j > 0, prev_act, cfg, macs)
    return grad, loss


def filter_features(z):
    """(1, top probability, margin to the second, sum of squared probabilities) of exit 0's logits."""
    p, _, _ = fmath.softmax_ce(z)
    i1 = fmath.argmax(p)
    p2 = F(-1)
    for j in range(len(p)):
        if j != i1 and p[j] > p2:
            p2 = p[j]
    return np.array([F(1), p[i1], F(p[i1] - p2), fmath.seq_sum(p * p)], F)


def filter_score(w, f):
    s = F(w[0])
    for i in range(1, 4):
        s = F(s + F(w[i] * f[i]))
    return s


CHECKPOINT_REASONS = {1: "size", 2: "format", 3: "model hash", 4: "CRC", 5: "non-finite value", 6: "chunk order"}


def check_checkpoint(image, model_hash, num_exits, num_units, unit_params):
    """0 when the image is valid for this model, else the BAD_CHECKPOINT detail code (CHECKPOINT_REASONS)."""
    n_params = sum(unit_params)
    state = 4 * (FILTER_STATE_WORDS + EXIT_STATE_WORDS * num_exits)
    if len(image) != CHECKPOINT_HEADER_BYTES + 4 * n_params + state + 4:
        return 1
    magic, version, ne, nu, h, npar, nstate = struct.unpack_from("<IHBB16sII", image)
    if (magic, version, ne, nu, npar, nstate) != (CHECKPOINT_MAGIC, CHECKPOINT_VERSION, num_exits, num_units,
                                                 n_params, state):
        return 2
    if h != model_hash:
        return 3
    if checkpoint_crc(image[:-4]) != struct.unpack_from("<I", image, len(image) - 4)[0]:
        return 4
    floats = np.frombuffer(image, "<f4", n_params, CHECKPOINT_HEADER_BYTES)
    fstate = np.frombuffer(image, "<f4", 8, CHECKPOINT_HEADER_BYTES + 4 * n_params)[[0, 1, 2, 3, 4, 5, 7]]
    ex = np.frombuffer(image, "<u4", EXIT_STATE_WORDS * num_exits,
                       CHECKPOINT_HEADER_BYTES + 4 * n_params + 4 * FILTER_STATE_WORDS).reshape(num_exits, -1)
    exf = ex[:, :4].copy().view("<f4")
    if not (np.all(np.isfinite(floats)) and np.all(np.isfinite(fstate)) and np.all(np.isfinite(exf))):
        return 5
    return 0

"""The on-device trainer (issue 5) on the host board: the C trainer makes the same decisions as the numpy
reference on every window and ends with the same weights; its gradients equal dense backprop (tinygrad);
every path (label, pseudo-label, no target, filter, guards), the filter's keep ratio, error-map pruning,
exit thresholds, do-no-harm, checkpoints and CONFIG validation."""
import os
import struct

import numpy as np
import pytest
import train_helpers as th

from codegen import fmath
from codegen.ir import CompileError
from codegen.train_reference import CHECKPOINT_REASONS, TrainerReference, unit_gradients
from codegen.trainer import CHECKPOINT_HEADER_BYTES
from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.link import BoardError
from mcu_train.link.protocol import Reason
from mcu_train.link.trainer_client import (STEP_LABEL, STEP_PERSONALISED, STEP_PREDICTED_HARD, STEP_PSEUDO,
                                           FilterMode, Outcome, ServeMode, TrainConfig, Trainer, TrainStats,
                                           TrainStep, checkpoint_crc)

HOST = get_board("host")


@pytest.fixture(scope="module")
def har(tmp_path_factory):
    """The default HAR model compiled with `--train exits` for the host board: (compiled, out, elf, meta)."""
    tmp = tmp_path_factory.mktemp("trainer")
    compiled, out, elf = th.compile_trainer(tmp, HOST, "exits")
    return compiled, out, elf, th.load_meta(out)


@pytest.fixture
def board(har):
    compiled, out, elf, meta = har
    with session(HOST, elf) as (running, link):
        yield Trainer(link, meta)


def new_reference(har, cfg=None):
    ref = TrainerReference(har[0])
    if cfg is not None:
        ref.set_config(cfg)
    return ref


def configure(board, ref, **changes):
    cfg = TrainConfig.default(board.num_exits)
    for k, v in changes.items():
        setattr(cfg, k, v)
    got = board.config(cfg)
    ref.set_config(cfg)
    assert got == ref.config()
    return cfg


def assert_same(got, want):
    bad = th.first_mismatch(got, want)
    assert bad is None, f"window {bad[0]}: board {bad[1]} != reference {bad[2]}"


# --- the board equals the reference --------------------------------------------------------------------------

def test_300_hapt_windows_match_the_reference(har, board):
    """Default parameters (learned filter, pruning at 0.5) with pseudo-labels at 0.9 (off by default), 10%
    labels, one person's real windows."""
    ref = new_reference(har)
    configure(board, ref, pseudo_threshold_q16=58982)
    rows, y, mask = th.hapt_stream(board.meta, 300, person=25)
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    image = board.checkpoint_get()
    assert image == ref.checkpoint()  # every weight, scale and bias, bit for bit
    assert board.stats() == ref.stats()
    outcomes = {s.outcome for s in got}
    assert {Outcome.TRAINED, Outcome.FILTERED} <= outcomes
    assert any(s.flags & STEP_LABEL for s in got)
    if th.HAR.is_file():  # the pretrained model is confident enough for pseudo-labels (the zoo stand-in is not)
        assert any(s.flags & STEP_PSEUDO for s in got)
    trained = [s for s in got if s.outcome == Outcome.TRAINED]
    assert all(s.cost_training > 0 and s.macs_backward < s.macs_backward_dense for s in trained)
    assert all(s.cost_inference > 0 for s in got)
    # The training reused the prediction's activations wherever the window computed them: a labelled window
    # answered at exit 0 runs the deeper units' personalised heads for training, and exit 0's own only when
    # its generic head answered (the do-no-harm guard's choice).
    macs = [u["forward_macs"] for u in board.meta["train"]["units"]]
    first = [s for s in trained if s.flags & STEP_LABEL and s.exit == 0]
    assert first and all(s.macs_forward == sum(macs[1:]) + (0 if s.flags & STEP_PERSONALISED else macs[0])
                         for s in first)
    assert image != TrainerReference(har[0]).checkpoint()  # the heads did change


def test_momentum_decay_clipping_pruning_and_last_block_match(tmp_path):
    """`--train exits+last-block --momentum`: every optional part of the update (momentum, weight decay,
    clipping, L1 channel scores, dense pruning, the random filter) on the board equals the reference."""
    compiled, out, elf = th.compile_trainer(tmp_path, HOST, "exits+last-block", momentum=True)
    meta = th.load_meta(out)
    assert [u["exit"] for u in meta["train"]["units"]] == list(range(len(meta["exits"])))
    ref = TrainerReference(compiled)
    rows, y, mask = th.hapt_stream(meta, 150, person=27, label_fraction=0.3, shift=True)
    with session(HOST, elf) as (running, link):
        board = Trainer(link, meta)
        configure(board, ref, momentum=0.9, weight_decay=1e-3, clip_norm=0.2, prune_keep=0.3, prune_weight_l1=0.1,
                  prune_dense=1, filter_mode=FilterMode.RANDOM, filter_keep=0.5, seed=1234, lr=0.05,
                  serve_mode=ServeMode.PERSONALISED, pseudo_threshold_q16=45000)
        got, want = th.run_both(board, ref, rows, y, mask)
        assert_same(got, want)
        assert board.checkpoint_get() == ref.checkpoint()
    kept = sum(s.outcome != Outcome.FILTERED for s, m in zip(got, mask) if not m) / max(1, int((~mask).sum()))
    assert 0.35 < kept < 0.65  # random subsampling at filter_keep = 0.5
    assert any(s.flags & STEP_PSEUDO and s.outcome == Outcome.TRAINED for s in got)


def test_block_keep_caps_the_last_blocks_channels_on_board_and_reference(tmp_path):
    """`--block-keep 0.25`: the last block's conv updates at most a quarter of its channels a window (CONFIG
    prune_keep 1 still trains them all), the exits' heads keep prune_keep; the board equals the reference."""
    compiled, out, elf = th.compile_trainer(tmp_path, HOST, "exits+last-block", block_keep=0.25)
    meta = th.load_meta(out)
    block = meta["train"]["units"][-1]["layers"][0]
    assert block["keep_max"] == 0.25 and all(l["keep_max"] == 1.0 for u in meta["train"]["units"][:-1]
                                             for l in u["layers"])
    ref = TrainerReference(compiled)
    rows, y, mask = th.hapt_stream(meta, 120, person=27, label_fraction=0.3, shift=True)
    unit = ref.units[-1]
    layer = unit.layers[0]
    for prune_keep, kept in ((0.5, layer.channels // 4), (1.0, layer.channels)):
        cfg = TrainConfig.default(ref.num_exits)
        cfg.prune_keep = prune_keep
        macs = dict(forward=0, backward=0, backward_dense=0)
        unit_gradients(unit, ref.params[-1], ref.unit_activations(rows[0], len(ref.units) - 1), int(y[0]),
                       compiled.tables[unit.exit], cfg, macs)
        dense = unit.layers[-1]
        assert macs["backward"] == kept * layer.macs // layer.channels + dense.macs * 2
    with session(HOST, elf) as (running, link):
        board = Trainer(link, meta)
        configure(board, ref, lr=0.3, serve_mode=ServeMode.PERSONALISED)
        got, want = th.run_both(board, ref, rows, y, mask)
        assert_same(got, want)
        assert board.checkpoint_get() == ref.checkpoint()
    with pytest.raises(CompileError, match="--block-keep needs --train exits\\+last-block"):
        th.compile_trainer(tmp_path, HOST, "exits", block_keep=0.25)
    with pytest.raises(CompileError, match="in \\(0, 1\\]"):
        th.compile_trainer(tmp_path, HOST, "exits+last-block", name="zero", block_keep=0)


# --- gradients -----------------------------------------------------------------------------------------------

def tinygrad_gradients(compiled, unit, params, acts, target):
    """The gradient of the unit's cross-entropy by tinygrad autograd (dense backprop) through the float graph
    of its int8 head, straight-through: the weights are the served int8 weights times their scales, every
    layer's output takes the int8 head's (dequantised) value, and its activation passes the gradient where the
    int8 output does. Returns {layer name: (dW (C_out, taps), db)} and the loss."""
    os.environ.setdefault("DEV", "CPU")
    from tinygrad import Tensor

    from codegen.train_reference import gate

    def nchw(name, dims):
        scale, zp = compiled.graph.qparams[name]
        v = (acts[name].astype(np.float32) - zp) * np.float32(scale)
        return np.ascontiguousarray(v.reshape(dims[1:]).transpose(2, 0, 1)[None])
    h = Tensor(nchw(unit.input, unit.layers[0].in_dims))
    params_t = {}
    for layer in unit.layers:
        if layer.kind == "conv":
            w, b = params.real(layer)
            co, ci, (kh, kw) = layer.channels, layer.in_dims[3], layer.kernel
            weight = Tensor(np.ascontiguousarray(w.reshape(co, kh, kw, ci).transpose(0, 3, 1, 2)).astype(np.float32))
            bias = Tensor(b.astype(np.float32))
            params_t[layer.name] = (weight, bias)
            if layer.dense:
                h = h.permute(0, 2, 3, 1).reshape(1, -1, 1, 1)  # flatten in NHWC order, as our layout does
            t, l, bo, r = layer.padding
            pre = h.conv2d(weight, bias, stride=layer.stride, padding=(l, r, t, bo))
        elif layer.kind == "avgpool":
            pre = h.mean(axis=(2, 3), keepdim=True)
        elif layer.kind == "maxpool":  # the gradient goes to each window's first largest input
            (kh, kw), (_, oh, ow, c) = layer.kernel, layer.out_dims
            x = acts[layer.input].reshape(layer.in_dims[1:])[:oh * kh, :ow * kw]
            win = x.reshape(oh, kh, ow, kw, c).transpose(4, 0, 2, 1, 3).reshape(c, oh, ow, kh * kw)
            first = np.eye(kh * kw, dtype=np.float32)[np.argmax(win, axis=-1)].reshape(1, c, oh, ow, kh, kw)
            pre = (h[:, :, :oh * kh, :ow * kw].reshape(1, c, oh, kh, ow, kw).permute(0, 1, 2, 4, 3, 5)
                   * Tensor(first)).sum(axis=(4, 5))
        else:
            pre = h
        mask = gate(layer, acts[layer.output].reshape(layer.out_dims[1:])).astype(np.float32)
        h = Tensor(nchw(layer.output, layer.out_dims)) + (pre - pre.detach()) * Tensor(
            np.ascontiguousarray(mask.transpose(2, 0, 1)[None]))
    loss = h.reshape(1, -1).sparse_categorical_crossentropy(Tensor([target]))
    grads = loss.gradient(*[t for pair in params_t.values() for t in pair])
    out = {}
    for i, (name, (weight, _)) in enumerate(params_t.items()):
        gw = grads[2 * i].numpy().transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
        out[name] = (gw, grads[2 * i + 1].numpy())
    return out, float(loss.numpy())


@pytest.mark.parametrize("mode", ["exits", "exits+last-block"])
def test_gradients_at_keep_1_equal_tinygrad(har, tmp_path, mode):
    """Error-map pruning at keep ratio 1.0: the integer backward (int16 error maps, int32 sums, softmax through
    the exit's Q16 confidence table) gives the gradient of the int8 head's straight-through graph, within its
    rounding."""
    compiled = har[0] if mode == "exits" else th.compile_trainer(tmp_path, HOST, mode)[0]
    ref = TrainerReference(compiled)
    cfg = TrainConfig.default(ref.num_exits)
    cfg.prune_keep = 1.0
    rows, y, _ = th.hapt_stream(compiled.meta, 40, person=29)
    for row, target in list(zip(rows, y))[::20]:
        for u, unit in enumerate(ref.units):
            acts = ref.unit_activations(row, u)
            ours, loss = unit_gradients(unit, ref.params[u], acts, int(target), compiled.tables[unit.exit], cfg)
            theirs, their_loss = tinygrad_gradients(compiled, unit, ref.params[u], acts, int(target))
            for name, (gw, gb) in theirs.items():  # the Q16 table's probabilities: ~1e-3 on confident windows
                scale = max(np.max(np.abs(gw)), np.max(np.abs(gb)))
                assert np.max(np.abs(ours[name][0] - gw)) <= 2e-3 * scale, f"unit {u} {name} weights"
                assert np.max(np.abs(ours[name][1] - gb)) <= 2e-3 * scale, f"unit {u} {name} biases"
            assert abs(float(loss) - their_loss) <= 2e-3 * max(1.0, their_loss)


def all_exits(board, ref, **changes):
    """No early exit (thresholds at 1.0): every labelled window reaches, and trains, every exit."""
    k = board.num_exits
    return configure(board, ref, thresholds=[1.0] * k, threshold_min=[1.0] * k, threshold_max=[1.0] * k, **changes)


def test_board_update_equals_lr_times_tinygrad_gradient(har, board):
    """One labelled step without momentum, decay, clipping or pruning: each weight moves by lr times tinygrad's
    gradient, to within the int8 rounding (half a step of its channel's scale)."""
    compiled, _, _, meta = har
    ref = new_reference(har)
    lr = 0.02
    all_exits(board, ref, lr=lr, clip_norm=0.0, prune_keep=1.0, filter_mode=FilterMode.OFF)
    rows, y, _ = th.hapt_stream(meta, 5, person=30)
    before = th.params_of(board.checkpoint_get(), compiled)
    step = board.train(rows[0], int(y[0]))
    assert step.outcome == Outcome.TRAINED and step.macs_backward == step.macs_backward_dense
    assert step.exit == board.num_exits - 1
    after = th.params_of(board.checkpoint_get(), compiled)
    moved = 0
    for u, unit in enumerate(ref.units):
        theirs, _ = tinygrad_gradients(compiled, unit, before[u], ref.unit_activations(rows[0], u), int(y[0]))
        for layer in unit.trainable:
            c0, co = layer.ch_offset, layer.channels
            same_scale = before[u].scale[c0:c0 + co] == after[u].scale[c0:c0 + co]  # no refit in this row
            (w0, b0), (w1, b1) = before[u].real(layer), after[u].real(layer)
            step_w = before[u].scale[c0:c0 + co].astype(np.float64)[:, None]
            gw, gb = theirs[layer.name]
            err_w = np.abs((w0 - w1) - lr * gw) / step_w
            assert np.all(err_w[same_scale] <= 0.5 + 1e-2), f"unit {u} {layer.name}"
            err_b = np.abs((b0 - b1) - lr * gb) / (step_w[:, 0] * layer.in_scale)
            assert np.all(err_b[same_scale] <= 0.5 + 1e-2), f"unit {u} {layer.name} bias"
            moved += int(np.count_nonzero(w0 != w1))
    assert moved > 500


# --- paths, filter, pruning, thresholds, do no harm ----------------------------------------------------------

def test_label_pseudo_label_and_no_target_paths(har, board):
    compiled, _, _, meta = har
    ref = new_reference(har)
    configure(board, ref, filter_mode=FilterMode.OFF, pseudo_threshold_q16=int(0.95 * 65536))
    rows, y, mask = th.hapt_stream(meta, 80, person=26, label_fraction=0.25)
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    finals = [compiled.reference.run(r.reshape(meta["input_dims_nhwc"]), force_exit=-1) for r in rows]
    seen = set()
    for s, label, m, (_, logits, conf) in zip(got, y, mask, finals):
        if m:
            assert s.outcome == Outcome.TRAINED and s.flags & STEP_LABEL and s.target == label
            seen.add("label")
        elif conf >= int(0.95 * 65536):
            assert s.outcome == Outcome.TRAINED and s.flags & STEP_PSEUDO and s.target == fmath.argmax(logits)
            seen.add("pseudo")
        else:
            assert s.outcome == Outcome.NO_TARGET and s.target == 255 and s.loss == 0.0
            seen.add("none")
    assert seen == {"label", "pseudo", "none"}
    stats = board.stats()
    assert stats.no_target == sum(s.outcome == Outcome.NO_TARGET for s in got)
    assert stats.labelled == int(mask.sum()) and stats.filtered == 0


def stream_outcomes(ref, rows):
    return [ref.train(r) for r in rows]


def test_filter_keep_ratio_converges_to_target(har):
    """The reference (which the boards equal) on 700 unlabelled windows of six people: the fraction of windows
    the filter keeps settles at its target. (docs/RESULTS.md compares the filter with random subsampling.)"""
    compiled = har[0]
    from mcu_train import data
    from mcu_train.link.model_client import to_wire
    w = data.split_windows("personalise")
    order = np.random.default_rng(0).permutation(len(w))[:700]
    rows = to_wire(compiled.meta, w.x[order])
    for target in (0.3, 0.5):
        ref = TrainerReference(compiled)
        cfg = TrainConfig.default(ref.num_exits)
        cfg.filter_keep, cfg.pseudo_threshold_q16 = target, 0
        ref.set_config(cfg)
        steps = stream_outcomes(ref, rows)
        kept = np.array([s.outcome != Outcome.FILTERED for s in steps])
        late = kept[350:].mean()
        assert abs(late - target) < 0.07, f"target {target}: kept {late:.3f} of the last 350 windows"
        assert ref.stats().explored > 0


def test_gradient_norm_filter_matches_the_reference(har, board):
    """filter_mode gradnorm: the board keeps the windows whose gradient-norm bound at exit 0 reaches the adapted
    cut, exactly as the reference, and ends near its keep target."""
    _, _, _, meta = har
    ref = new_reference(har)
    configure(board, ref, filter_mode=FilterMode.GRADNORM, filter_keep=0.4, pseudo_threshold_q16=0)
    rows, y, mask = th.hapt_stream(meta, 200, person=26, shift=True)
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    assert board.stats() == ref.stats()
    kept = np.array([s.outcome != Outcome.FILTERED for s, m in zip(got, mask) if not m])
    assert abs(kept[len(kept) // 2:].mean() - 0.4) < 0.15
    hard = [s.filter_score for s in got if s.flags & STEP_PREDICTED_HARD]
    easy = [s.filter_score for s in got if not s.flags & STEP_PREDICTED_HARD]
    assert hard and easy and 0 <= min(easy) and max(hard) <= 2


def test_pruning_keeps_the_asked_fraction_of_channels(har):
    compiled = har[0]
    ref = TrainerReference(compiled)
    rows, y, _ = th.hapt_stream(compiled.meta, 3, person=25)
    for keep in (0.1, 0.25, 0.5, 1.0):
        cfg = TrainConfig.default(ref.num_exits)
        cfg.prune_keep = keep
        for u, unit in enumerate(ref.units):
            macs = dict(forward=0, backward=0, backward_dense=0)
            grad, _ = unit_gradients(unit, ref.params[u], ref.unit_activations(rows[0], u), int(y[0]),
                                     compiled.tables[unit.exit], cfg, macs)
            expected = expected_dense = 0
            for j, layer in enumerate(unit.layers):
                if layer.kind != "conv":
                    continue
                co = layer.out_dims[3]
                kept = co if layer.dense else max(1, int(np.ceil(np.float32(keep) * np.float32(co))))
                passes = 2 if j > 0 else 1
                expected += kept * layer.macs // co * passes
                expected_dense += layer.macs * passes
                rows_nonzero = np.count_nonzero(np.any(grad[layer.name][0] != 0, axis=1))
                assert rows_nonzero <= kept  # a channel whose ReLU is off everywhere has a zero row anyway
            assert (macs["backward"], macs["backward_dense"]) == (expected, expected_dense)


def test_reported_pruning_ratio_on_the_board(har, board):
    ref = new_reference(har)
    all_exits(board, ref, prune_keep=0.25, filter_mode=FilterMode.OFF)
    rows, y, _ = th.hapt_stream(board.meta, 10, person=25)
    steps = [board.train(r, int(label)) for r, label in zip(rows, y)]
    ratios = {round(s.macs_backward / s.macs_backward_dense, 4) for s in steps}
    assert len(ratios) == 1 and ratios.pop() < 0.5
    stats = board.stats()
    assert stats.macs_backward == sum(s.macs_backward for s in steps)


def test_thresholds_adapt_within_host_bounds(har, board):
    ref = new_reference(har)
    k = board.num_exits
    cfg = configure(board, ref, filter_mode=FilterMode.OFF, agree_target=0.0, threshold_step=0.05,
                    thresholds=[0.8] * k, threshold_min=[0.7] * k, threshold_max=[0.95] * k)
    rows, y, mask = th.hapt_stream(board.meta, 10, person=25)
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    low = board.stats().exits
    assert all(abs(e.threshold - 0.7) < 1e-6 for e in low[:-1])  # agreement >= 0: always down, to the minimum
    cfg.agree_target = 1.0
    cfg.thresholds = [0.8] * k
    board.config(cfg)
    ref.set_config(cfg)
    rows, y, mask = th.hapt_stream(board.meta, 60, person=27, shift=True)  # a rotated phone: exits disagree
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    high = board.stats()
    assert high == ref.stats()
    assert all(0.7 - 1e-6 <= e.threshold <= 0.95 + 1e-6 for e in high.exits[:-1])
    disagreeing = [e for e in high.exits[:-1] if e.agreement < 1.0]
    assert disagreeing and all(e.threshold > 0.8 for e in disagreeing)  # agreement below target: up


def test_do_no_harm_serves_the_generic_head_when_personalisation_goes_wrong(har, board):
    """Heads trained on wrong labels (as confidently wrong pseudo-labels would) lose to the generic heads on
    the true labels that come later: the board switches those exits back to their generic heads, so it
    answers exactly as the generic int8 model does."""
    compiled, _, _, meta = har
    ref = new_reference(har)
    all_exits(board, ref, filter_mode=FilterMode.OFF, lr=0.2, dnh_rate=0.2)
    rows, y, _ = th.hapt_stream(meta, 120, person=25)
    for r, label in zip(rows[:60], y[:60]):
        board.train(r, int((label + 1) % 6))  # systematically wrong
        ref.train(r, int((label + 1) % 6))
    cfg = board.config()
    cfg.lr = 0.0  # evaluate only: labelled windows update the accuracies, not the heads
    board.config(cfg)
    ref.set_config(cfg)
    got, want = th.run_both(board, ref, rows[60:], y[60:], np.ones(60, bool))
    assert_same(got, want)
    stats = board.stats()
    assert stats == ref.stats()
    trainable = [k for k, e in enumerate(stats.exits) if e.serving != 255]
    assert trainable and all(stats.exits[k].serving == 0 for k in trainable)
    assert all(stats.exits[k].acc_personalised < stats.exits[k].acc_generic for k in trainable)
    from mcu_train.link.model_client import ModelClient
    client = ModelClient(board.link, meta)
    for r in rows[60:70]:
        for k in trainable:
            got_c = client.classify(r, force_exit=k)
            want_c = compiled.reference.run(r.reshape(meta["input_dims_nhwc"]), force_exit=k)
            assert (got_c.exit, got_c.logits_q.tolist(), got_c.confidence_q16) == \
                (want_c[0], want_c[1].tolist(), want_c[2])


def test_do_no_harm_without_labels_uses_the_teachers_pseudo_labels(har, board):
    """With no labels at all the guard's evidence is the confident generic final exit (the teacher): the
    board gathers it and decides which head serves exactly as the reference does."""
    _, _, _, meta = har
    ref = new_reference(har)
    configure(board, ref, filter_mode=FilterMode.OFF, lr=0.3, pseudo_threshold_q16=58982)
    rows, y, _ = th.hapt_stream(meta, 120, person=27, shift=True)
    got, want = th.run_both(board, ref, rows, y, np.zeros(len(rows), bool))
    assert_same(got, want)
    stats = board.stats()
    assert stats == ref.stats()
    assert any(s.flags & STEP_PSEUDO for s in got)
    trainable = [e for e in stats.exits if e.serving != 255]
    assert trainable and all(e.labelled == 0 and e.acc_generic > 0 for e in trainable)


def test_classify_serves_personalised_heads(har, board):
    compiled, _, _, meta = har
    ref = new_reference(har)
    configure(board, ref, serve_mode=ServeMode.PERSONALISED, filter_mode=FilterMode.OFF)
    rows, y, mask = th.hapt_stream(meta, 30, person=27, label_fraction=1.0)
    got, want = th.run_both(board, ref, rows, y, mask)
    assert_same(got, want)
    from mcu_train.link.model_client import ModelClient
    client = ModelClient(board.link, meta)
    for r in rows[:10]:
        for force in (None, 0, 1, -1):
            c = client.classify(r, force_exit=force)
            e, logits, conf = ref.classify(r, force_exit=force)
            assert (c.exit, c.logits_q.tolist(), c.confidence_q16) == (e, logits.tolist(), conf)


# --- guards --------------------------------------------------------------------------------------------------

def weights(board):
    """The trained heads' bytes (every unit's params buffer) of the board's checkpoint image."""
    return board.checkpoint_get()[CHECKPOINT_HEADER_BYTES:CHECKPOINT_HEADER_BYTES + board.meta["train"]["params_bytes"]]


def test_nan_input_is_not_trained_on(har, board):
    from mcu_train import data
    x = data.person_windows(25).x[0].copy()
    x[1, 10] = np.nan
    before = weights(board)
    step = board.train_window(x, label=3)
    assert step.outcome == Outcome.INVALID and step.target == 255
    x[1, 10] = np.inf
    assert board.train_window(x).outcome == Outcome.INVALID
    assert weights(board) == before
    assert board.stats().invalid == 2


def test_all_zero_input_trains(har, board):
    ref = new_reference(har)
    x = np.zeros(tuple(board.meta["input_shape"][1:]), np.float32)
    from mcu_train.link.trainer_client import window_to_wire
    row, invalid = window_to_wire(board.meta, x)
    assert not invalid
    got = [board.train(row, 2) for _ in range(3)]
    want = [ref.train(row, 2) for _ in range(3)]
    assert_same(got, want)
    assert all(s.outcome == Outcome.TRAINED and np.isfinite(s.loss) for s in got)


def test_saturated_input_is_not_trained_on(har, board):
    from mcu_train import data
    x = data.person_windows(25).x[0] * 50.0  # far outside the calibrated range: clipped at the int8 limits
    before = weights(board)
    step = board.train_window(x, label=1)
    assert step.outcome == Outcome.SATURATED
    assert weights(board) == before and board.stats().saturated == 1


@pytest.mark.parametrize("lr", [3e38, 1e30])
def test_a_bad_config_cannot_brick_training(har, board, lr):
    """An absurd learning rate (the issue's: 1e30, no momentum, no clipping; or one that overflows float):
    every update that would take a weight beyond its layer's bound is skipped and counted, the weights stay
    as they were, STATS counts no window as trained, and with a sane learning rate training resumes."""
    ref = new_reference(har)
    cfg = configure(board, ref, lr=lr, momentum=0.0, clip_norm=0.0, filter_mode=FilterMode.OFF)
    rows, y, _ = th.hapt_stream(board.meta, 12, person=25)
    before = weights(board)
    got, want = th.run_both(board, ref, rows[:6], y[:6], np.ones(6, bool))
    assert_same(got, want)
    assert all(s.outcome == Outcome.SKIPPED for s in got)
    assert weights(board) == before and board.checkpoint_get() == ref.checkpoint()
    stats = board.stats()
    assert stats.trained == 0 and stats.nonfinite >= 6 * 6 and stats == ref.stats()  # >= 6 channels a window
    cfg.lr = TrainConfig.default(board.num_exits).lr
    board.config(cfg)
    ref.set_config(cfg)
    got, want = th.run_both(board, ref, rows[6:], y[6:], np.ones(6, bool))
    assert_same(got, want)
    assert all(s.outcome == Outcome.TRAINED for s in got) and board.stats().trained == 6
    assert weights(board) != before


# --- checkpoints and CONFIG ----------------------------------------------------------------------------------

def test_checkpoint_round_trip_restores_predictions_after_restart(har):
    compiled, out, elf, meta = har
    rows, y, mask = th.hapt_stream(meta, 120, person=26, label_fraction=0.3)
    cfg = TrainConfig.default(len(meta["exits"]))
    cfg.serve_mode, cfg.filter_mode = ServeMode.PERSONALISED, FilterMode.OFF
    with session(HOST, elf) as (running, link):
        board = Trainer(link, meta)
        board.config(cfg)
        for r, label, m in zip(rows[:80], y[:80], mask[:80]):
            board.train(r, int(label) if m else None)
        image = board.checkpoint_get()
        from mcu_train.link.model_client import ModelClient
        before = [ModelClient(link, meta).classify(r) for r in rows[80:]]
        stats = board.stats()
    with session(HOST, elf) as (running, link):  # a restart: the board boots with the generic weights
        board = Trainer(link, meta)
        board.config(cfg)
        assert board.checkpoint_get() != image
        board.checkpoint_put(image)
        assert board.checkpoint_get() == image
        after = [ModelClient(link, meta).classify(r) for r in rows[80:]]
        assert [(c.exit, c.logits_q.tolist(), c.confidence_q16) for c in after] == \
            [(c.exit, c.logits_q.tolist(), c.confidence_q16) for c in before]
        assert board.stats().exits == stats.exits


def put_error(board, image):
    with pytest.raises(BoardError) as e:
        board.checkpoint_put(image)
    assert e.value.info.reason == Reason.BAD_CHECKPOINT
    return e.value.info.detail


def with_crc(body):
    return body + struct.pack("<I", checkpoint_crc(body))


def test_bad_checkpoints_are_rejected_and_change_nothing(har, board):
    rows, y, _ = th.hapt_stream(board.meta, 5, person=25)
    board.train(rows[0], int(y[0]))
    image = board.checkpoint_get()
    params = board.meta["train"]["params_bytes"]
    assert len(image) == board.meta["train"]["checkpoint_bytes"]
    corrupted = bytearray(image)
    corrupted[CHECKPOINT_HEADER_BYTES + 100] ^= 0x40
    assert put_error(board, bytes(corrupted)) == 4  # CRC
    other_model = bytearray(image[:-4])
    other_model[8:24] = bytes(16)
    assert put_error(board, with_crc(bytes(other_model))) == 3  # model hash
    assert put_error(board, image[:-8]) == 1  # size
    unit = har[0].train.units[0]
    c, head = unit.num_channels, CHECKPOINT_HEADER_BYTES
    for at, value in [(head, struct.pack("<f", np.nan)), (head, struct.pack("<f", -1.0)),  # a channel's scale
                      (head + 8 * c, struct.pack("<i", 12345)), (head + 12 * c, struct.pack("<i", 31)),  # mult, shift
                      (head + 16 * c + 3, b"\x80")]:  # a weight of -128
        bad = bytearray(image[:-4])
        bad[at:at + len(value)] = value
        assert put_error(board, with_crc(bytes(bad))) == 5, at  # values
    bad_format = bytearray(image[:-4])
    bad_format[24:28] = struct.pack("<I", params + 4)
    assert put_error(board, with_crc(bytes(bad_format))) == 2
    # A chunk that does not follow the previous ones.
    from mcu_train.link.protocol import Msg
    with pytest.raises(BoardError) as e:
        board.link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), 1016) + image[1016:2032])
    assert e.value.info.detail == 6
    assert board.checkpoint_get() == image
    assert set(CHECKPOINT_REASONS) == set(range(1, 8))


def put_pass(board, image, offsets=None):
    """One pass of CHECKPOINT_PUT chunks; returns the last reply's state."""
    from mcu_train.link.protocol import Msg
    from mcu_train.link.trainer_client import CHECKPOINT_CHUNK
    state = None
    for offset in offsets or range(0, len(image), CHECKPOINT_CHUNK):
        reply = board.link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), offset) +
                                   image[offset:offset + CHECKPOINT_CHUNK])
        state = struct.unpack("<IB", reply)[1]
    return state


def test_a_put_writes_only_a_verified_image_and_a_broken_commit_falls_back_to_boot_weights(har, board):
    """No staging buffer: the first pass only checks, the second writes the live weights. A second pass that is
    not the verified image, or is interrupted, leaves the board on its boot weights (the generic heads)."""
    from mcu_train.link.model_client import ModelClient
    from mcu_train.link.trainer_client import PUT_COMMITTED, PUT_RECEIVING, PUT_VERIFIED
    rows, y, _ = th.hapt_stream(board.meta, 3, person=25)
    boot = weights(board)
    board.train(rows[0], int(y[0]))
    trained_image = board.checkpoint_get()
    board.train(rows[1], int(y[1]))
    later = board.checkpoint_get()
    assert put_pass(board, trained_image) == PUT_VERIFIED
    assert board.checkpoint_get() == later  # checked, not written
    assert put_pass(board, trained_image) == PUT_COMMITTED and board.checkpoint_get() == trained_image
    assert put_pass(board, later) == PUT_VERIFIED
    with pytest.raises(BoardError) as e:
        put_pass(board, trained_image)  # a commit pass that is not the verified image
    assert e.value.info.detail == 7 and weights(board) == boot
    board.checkpoint_put(later)
    assert put_pass(board, trained_image) == PUT_VERIFIED
    assert put_pass(board, trained_image, [0]) == PUT_RECEIVING  # half a commit, then a CLASSIFY
    ModelClient(board.link, board.meta).classify(rows[2])
    assert weights(board) == boot


def test_a_train_between_chunks_discards_the_image(har, board):
    from mcu_train.link.protocol import Msg
    rows, y, _ = th.hapt_stream(board.meta, 2, person=25)
    image = board.checkpoint_get()
    board.link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), 0) + image[:1016])
    board.train(rows[0], int(y[0]))
    trained = board.checkpoint_get()
    with pytest.raises(BoardError) as e:
        board.link.request(Msg.CHECKPOINT_PUT, struct.pack("<II", len(image), 1016) + image[1016:2032])
    assert e.value.info.detail == 6 and board.checkpoint_get() == trained


def test_reference_rejects_the_same_checkpoints(har):
    ref = new_reference(har)
    image = ref.checkpoint()
    bad = bytearray(image)
    bad[40] ^= 1
    assert ref.load_checkpoint(bytes(bad)) == 4 and ref.checkpoint() == image
    assert ref.load_checkpoint(image) is None


def test_config_defaults_round_trip_and_validation(har, board):
    default = board.config()
    assert default == TrainConfig.default(board.num_exits).rounded()
    changed = TrainConfig.default(board.num_exits)
    changed.lr, changed.prune_keep, changed.seed = 0.125, 0.75, 99
    assert board.config(changed) == changed.rounded()
    for field, value in [("lr", -1.0), ("prune_keep", 0.0), ("momentum", 1.0), ("filter_mode", 7),
                         ("filter_keep", float("nan")), ("pseudo_threshold_q16", 70000),
                         ("momentum", 0.5)]:  # momentum needs a build compiled with --momentum
        bad = TrainConfig.default(board.num_exits)
        setattr(bad, field, value)
        with pytest.raises(BoardError, match="BAD_PAYLOAD"):
            board.config(bad)
    bad = TrainConfig.default(board.num_exits)
    bad.threshold_min[0], bad.threshold_max[0] = 0.9, 0.8
    with pytest.raises(BoardError, match="BAD_PAYLOAD"):
        board.config(bad)
    assert board.config() == changed.rounded()


def test_train_rejects_malformed_requests(har, board):
    from mcu_train.link.protocol import Msg
    row = np.zeros(board.meta["input_dims_nhwc"][1] * board.meta["input_dims_nhwc"][2] *
                   board.meta["input_dims_nhwc"][3], np.int8).tobytes()
    for payload in (b"\x00\x00" + row[:-1], b"\x04\x00" + row, b"\x01\x06" + row):
        with pytest.raises(BoardError, match="BAD_PAYLOAD"):
            board.link.request(Msg.TRAIN, payload)
    with pytest.raises(BoardError, match="BAD_PAYLOAD"):
        board.link.request(Msg.STATS, b"x")


def test_wire_records_round_trip():
    step = TrainStep(0, 1, 2, 3, 4, 5, 0.5, -0.25, 6, 7, 8, 9, 10)
    assert TrainStep.unpack(step.pack()) == step
    cfg = TrainConfig.default(3)
    assert TrainConfig.unpack(cfg.pack()) == cfg.rounded()
    ref_stats = TrainStats(*range(13), 0.5, 0.25, -0.5, [1.0, 2.0, 3.0, 4.0], [])
    assert TrainStats.unpack(ref_stats.pack()) == ref_stats


# --- compile time --------------------------------------------------------------------------------------------

def test_memory_report_and_plan(har):
    compiled, out, _, meta = har
    import json
    memory = json.loads((out / "memory.json").read_text())
    units = meta["train"]["units"]
    assert memory["trainable_parameters"] == sum(u["parameters"] for u in units) > 0
    assert memory["training_arena_bytes"] >= memory["arena_bytes"] > 0
    names = {t["name"]: t for t in memory["tensors"]}
    assert {"train.state", "u0.params", "u0.error0", "u0.row", "u0.scores"} <= set(names)
    # No whole-size gradient, no momentum unless compiled in, no checkpoint staging.
    assert not any(n.endswith((".momentum", ".grad")) or "staging" in n for n in names)
    for u, unit in enumerate(compiled.train.units):  # the gradient of one output channel at a time
        assert names[f"u{u}.row"]["size"] == 4 * max(l.taps for l in unit.trainable) < 4 * unit.num_weights
    train = memory["train"]
    assert train["checkpoint_staging_bytes"] == 0 and train["momentum_bytes"] == 0
    assert train["params_bytes"] == sum(names[f"u{u}.params"]["size"] for u in range(len(units)))
    assert train["weights_bytes"] == sum(u["weights"] for u in units)  # one byte a weight: the int8 heads
    for t in memory["tensors"]:
        assert t["offset"] + t["size"] <= memory["training_arena_bytes"]
    from codegen import planner
    assert planner.check_overlaps(compiled.buffers) == []
    assert (out / "model_train.c").is_file()
    c = (out / "model_train.c").read_text()
    assert "malloc" not in c and "tr_default_config" in c


@pytest.mark.parametrize("mode", ["exits", "exits+last-block"])
def test_a_recomputed_head_overwrites_nothing_alive(tmp_path, mode):
    """The trainer recomputes a head it did not serve after later steps ran (firmware/trainer.c complete()), so
    what a head's kernels write, its outputs and their scratch (DSP kernels on Cortex-M4 have some), must overlap
    no buffer alive from its head event until training starts. Once relu19.scratch overwrote unit 1's relu47
    there and the board's weights left the reference's."""
    from codegen.compile import build
    onnx_path, calib = th.default_model(tmp_path)
    compiled = build(onnx_path, get_board("mps2-an386"), calib=calib, train=mode)
    spec, steps = compiled.train, compiled.steps
    first_train = spec.events.index(("train", 0))
    for u, unit in enumerate(spec.units):
        head = spec.events.index(("head", u))
        written = {steps[i].output for i in unit.steps} | {steps[i].scratch for i in unit.steps}
        assert any(b.name.endswith(".scratch") and b.size for b in compiled.buffers if b.name in written)
        for w in (b for b in compiled.buffers if b.name in written and b.size):
            for other in compiled.buffers:
                alive = other.size and other.first < first_train and other.last >= head
                if alive and other.name not in written:
                    assert not (w.offset < other.offset + other.size and other.offset < w.offset + w.size), \
                        f"unit {u}'s {w.name} overlaps {other.name} ({mode})"


def test_trainable_layers_are_each_exits_head(har):
    compiled = har[0]
    spec = compiled.train
    assert spec.mode == "exits" and len(spec.units) == len(compiled.meta["exits"]) - 1
    for unit in spec.units:
        assert [l.kind for l in unit.layers][-1] == "conv" and unit.layers[-1].dense
        assert all(compiled.steps[i].exits_needing == 1 << unit.exit for i in unit.steps)


def test_compile_errors_are_clear(tmp_path):
    import model_zoo
    import onnx

    from codegen.compile import build
    onnx.save(model_zoo.cnn1d_plain(), tmp_path / "plain.onnx")
    np.savez(tmp_path / "c.npz", x=model_zoo.calibration(model_zoo.cnn1d_plain()))
    with pytest.raises(CompileError, match="needs a model with early exits"):
        build(tmp_path / "plain.onnx", HOST, tmp_path / "c.npz", train="exits")
    compiled = build(tmp_path / "plain.onnx", HOST, tmp_path / "c.npz", train="exits+last-block")
    assert len(compiled.train.units) == 1
    b = model_zoo.Builder(5)  # an exit head with a depthwise conv (T-RECX style): not trainable here
    y = b.node("MaxPool", [b.conv("x", 3, 8, 5)], kernel_shape=[2], strides=[2])
    h = b.node("Flatten", [b.node("GlobalAveragePool", [b.conv(y, 8, 8, 3, group=8)])], axis=1)
    e0 = b.dense(h, 8, 4)
    f = b.node("Flatten", [b.node("GlobalAveragePool", [b.conv(y, 8, 8, 3)])], axis=1)
    m = b.model([1, 3, 64], [e0, b.dense(f, 8, 4)])
    onnx.save(m, tmp_path / "dw.onnx")
    np.savez(tmp_path / "d.npz", x=model_zoo.calibration(m))
    with pytest.raises(CompileError, match=r"\(dwconv\) cannot be trained on the board"):
        build(tmp_path / "dw.onnx", HOST, tmp_path / "d.npz", train="exits")
    with pytest.raises(CompileError, match="--train 'all'"):
        build(tmp_path / "plain.onnx", HOST, tmp_path / "c.npz", train="all")
    with pytest.raises(CompileError, match="--momentum needs --train"):
        build(tmp_path / "plain.onnx", HOST, tmp_path / "c.npz", momentum=True)


def test_2d_model_trains_like_the_reference(tmp_path):
    """A 2-D CNN (strided and padded 3x3 convs, residual backbone, ReLU6) with --train exits+last-block."""
    import model_zoo
    import onnx

    from codegen.compile import compile_model
    from mcu_train.boards.build import build_firmware
    from mcu_train.link.model_client import to_wire
    m = model_zoo.cnn2d_residual()
    onnx.save(m, tmp_path / "res.onnx")
    np.savez(tmp_path / "r.npz", x=model_zoo.calibration(m))
    compiled = compile_model(tmp_path / "res.onnx", HOST, tmp_path / "out", calib=tmp_path / "r.npz", quiet=True,
                             train="exits+last-block")
    meta = th.load_meta(tmp_path / "out")
    assert [l["kind"] for l in meta["train"]["units"][-1]["layers"]] == ["conv", "conv"]
    ref = TrainerReference(compiled)
    cfg = TrainConfig.default(ref.num_exits)
    cfg.filter_mode, cfg.prune_keep, cfg.serve_mode = FilterMode.OFF, 0.5, ServeMode.PERSONALISED
    ref.set_config(cfg)
    rng = np.random.default_rng(3)
    rows = to_wire(meta, rng.normal(0, 1, (40, 3, 16, 16)).astype(np.float32))
    labels = rng.integers(0, 5, 40)
    with session(HOST, build_firmware(HOST, tmp_path / "out").elf) as (running, link):
        board = Trainer(link, meta)
        board.config(cfg)
        got, want = th.run_both(board, ref, rows, labels, np.ones(40, bool))
        assert_same(got, want)
        assert board.checkpoint_get() == ref.checkpoint()


def test_cli_compile_with_train(tmp_path):
    import subprocess
    import sys

    import model_zoo
    import onnx
    m = model_zoo.har_like()
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=model_zoo.calibration(m))
    out = subprocess.run([sys.executable, "-m", "mcu_train.cli", "compile", str(tmp_path / "m.onnx"), "--calib",
                          str(tmp_path / "c.npz"), "--board", "lm3s6965evb", "--train", "exits", "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "training (exits): 620 parameters in 2 exit(s), served in int8" in out.stdout
    assert "for inference only" in out.stdout and "with training" in out.stdout
    assert (tmp_path / "out" / "model_train.c").is_file()
    bad = subprocess.run([sys.executable, "-m", "mcu_train.cli", "compile", str(tmp_path / "m.onnx"), "--train",
                          "everything", "-o", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr

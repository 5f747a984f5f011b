"""Prototype heads in the numpy reference (issue 14, `TrainerReference(..., prototypes=True)`): the class means
are integer running means of the pooled int8 features of labelled windows, the head's int8 logits rank the
classes as the float nearest-class-mean classifier does, and a stream under the placement shift ends with the
prototypes serving and more accurate than the generic model."""
import numpy as np
import pytest
import train_helpers as th

from codegen.compile import build
from codegen.train_reference import TrainerReference
from codegen.trainer_abi import ServeMode
from mcu_train.boards import get_board


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    onnx_path, calib = th.default_model(tmp_path_factory.mktemp("proto"))
    return build(onnx_path, get_board("host"), calib, train="exits")


def test_prototype_heads_are_integer_class_means_and_rank_like_float_ncm(compiled):
    rows, labels, mask = th.hapt_stream(compiled.meta, 160, person=27, shift=True, label_fraction=0.25)
    ref = TrainerReference(compiled, prototypes=True)
    seen = {k: [] for k in range(ref.num_exits)}
    for row, y, m in zip(rows, labels, mask):
        step = ref.train(row, int(y) if m else None)
        assert step.outcome in (0, 1, 2)  # TRAINED, FILTERED, NO_TARGET: nothing else learns
        if m:
            for k in range(ref.num_exits):
                seen[k].append((_pooled(ref, row, k), int(y)))
    p = ref.protos
    assert p.counts.sum() == mask.sum()
    for k in range(ref.num_exits):
        feats = np.array([f for f, _ in seen[k]], np.int64)
        ys = np.array([y for _, y in seen[k]])
        for c in np.flatnonzero(p.counts):
            assert np.array_equal(p.sums[k][c], feats[ys == c].sum(axis=0))  # int32 sums of the int8 features
            want = np.round(feats[ys == c].mean(axis=0) * 2 ** p.frac[k])
            assert np.max(np.abs(p.means[k][c] - want)) <= 1  # the mean, with `frac` fraction bits
        # The int8 logits pick the nearest float class mean (ties aside) on fresh windows.
        have = p.counts > 0
        means = np.array([feats[ys == c].mean(axis=0) if have[c] else np.full(feats.shape[1], 1e9)
                          for c in range(len(have))])
        agree = 0
        for row in rows[:40]:
            x = _pooled(ref, row, k)
            generic = _generic(ref, row, k)
            z = p.logits(k, x, generic)
            if not have[int(np.argmax(generic))]:
                assert np.array_equal(z, generic)  # a class without an example: the generic head answers
                continue
            agree += int(np.argmax(z)) == int(np.argmin(((x[None] - means) ** 2).sum(axis=1)))
            assert z.dtype == np.int8 and z.max() == 127 and np.all(z[~have] == -128)
        assert agree >= 38


def test_prototypes_serve_and_win_under_the_shift(compiled):
    rows, labels, mask = th.hapt_stream(compiled.meta, 300, person=29, shift=True)
    ref = TrainerReference(compiled, prototypes=True)
    generic = TrainerReference(compiled, prototypes=True)
    generic.cfg.serve_mode = ServeMode.GENERIC  # the same stream, never personalised
    preds = [ref.train(r, int(y) if m else None).prediction for r, y, m in zip(rows, labels, mask)]
    base = [generic.train(r, int(y) if m else None).prediction for r, y, m in zip(rows, labels, mask)]
    h = len(rows) // 2
    assert any(e.serving == 1 for e in ref.stats().exits)
    assert np.mean(np.array(preds[h:]) == labels[h:]) > np.mean(np.array(base[h:]) == labels[h:]) + 0.1


def _run_to(ref, row, k):
    from codegen.reference import _run_step
    acts = {ref.input_name: np.asarray(row, np.int8).reshape(ref.meta["input_dims_nhwc"])}
    for step in ref.steps:
        acts[step.output] = _run_step(step, acts)
    last = next(s for s in ref.steps if s.exit_index == k)
    return acts, last


def _pooled(ref, row, k):
    acts, _ = _run_to(ref, row, k)
    return acts[ref.pooled[k]].reshape(-1).astype(np.int64)


def _generic(ref, row, k):
    acts, last = _run_to(ref, row, k)
    return acts[last.output].reshape(-1)

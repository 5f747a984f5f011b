"""`mcu-train personalise`: stream one person's HAPT windows to a board with a trainer (prequential: every
window is classified, then maybe trained on) and report accuracy, exits, costs, pruning, the instance filter,
do-no-harm and the measured training peak SRAM. With --reference the numpy golden model runs instead of a board
(same decisions, no costs), which is fast enough to compare settings over every person."""
import json
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from elftools.elf.elffile import ELFFile

from mcu_train.errors import McuTrainError
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL

# firmware/protocol.c's buffers: received frame, reply (and replay store), error replies.
PROTOCOL_BUFFERS = ("rx_buf", "tx_body", "error_body", "older_body", "older_len", "older_next")


def static_ram(board, elf):
    """(bytes of .data + .bss, bytes of each symbol of interest) from the ELF."""
    sizes = {}
    with open(elf, "rb") as f:
        e = ELFFile(f)
        total = sum(s["sh_size"] for s in e.iter_sections() if s.name in (".data", ".bss"))
        symtab = e.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols():
            if sym.name in ("arena", *PROTOCOL_BUFFERS) and sym["st_size"]:
                sizes[sym.name] = sym["st_size"]
    return total, sizes


def peak_sram(board, elf, link):
    """Training peak SRAM measured on a running board: every static byte (.data + .bss: the planned arena,
    protocol buffers, the rest) plus the stack's high-water mark from LINK_STATS (stack painting)."""
    if board.is_host:
        raise McuTrainError("peak SRAM is measured on Cortex-M boards (the host board has no painted stack)")
    static, symbols = static_ram(board, elf)
    stack_used = board.stack_bytes - link.link_stats()["stack_unused"]
    return dict(board=board.name, static_bytes=static, arena_bytes=symbols.get("arena", 0),
                protocol_buffer_bytes=sum(symbols.get(n, 0) for n in PROTOCOL_BUFFERS),
                stack_used_bytes=stack_used, stack_reserve_bytes=board.stack_bytes,
                peak_bytes=static + stack_used)


def summarise(steps, labels, mask):
    """Prequential accuracy and costs over a stream of TrainStep; accuracy counts the windows with a known
    class (labels >= 0)."""
    preds = np.array([s.prediction for s in steps])
    known = labels >= 0
    half = np.arange(len(steps)) >= len(steps) // 2
    trained = [s for s in steps if s.outcome in (0, 5)]  # the backward ran (5: some channel updates skipped)
    out = dict(windows=len(steps), accuracy=_share(preds[known] == labels[known]),
               accuracy_second_half=_share(preds[known & half] == labels[known & half]),
               labelled=int(mask.sum()), outcomes=dict(Counter(s.outcome_name for s in steps)),
               exits=dict(sorted(Counter(int(s.exit) for s in steps).items())),
               trained=len(trained),
               macs_forward=int(sum(s.macs_forward for s in trained)),
               macs_backward=int(sum(s.macs_backward for s in trained)),
               macs_backward_dense=int(sum(s.macs_backward_dense for s in trained)))
    if any(s.cost_inference for s in steps):
        out["cost_inference_mean"] = float(np.mean([s.cost_inference for s in steps]))
        out["cost_training_mean_per_trained"] = float(np.mean([s.cost_training for s in trained])) if trained else 0
        for name, flag in (("labelled", 1), ("pseudo_labelled", 2)):
            sel = [s.cost_training for s in trained if s.flags & flag]
            out[f"cost_training_mean_per_{name}"] = float(np.mean(sel)) if sel else 0
    return out


def exit_costs(link, meta, trainer, cfg, rows):
    """Cost of a prediction leaving at each exit (no earlier exit passes, this one always does), mean over
    `rows`, with every trainable exit serving its personalised int8 head, then its generic one."""
    from mcu_train.link.model_client import ModelClient
    from mcu_train.link.trainer_client import ServeMode
    client, k = ModelClient(link, meta), len(meta["exits"])
    out = {}
    for name, mode in (("personalised", ServeMode.PERSONALISED), ("generic", ServeMode.GENERIC)):
        trainer.config(replace(cfg, serve_mode=mode))
        out[name] = [float(np.mean([client.classify(r, thresholds_q16=[0xFFFFFFFF] * e + [0] * (k - e)).cost
                                    for r in rows])) for e in range(k)]
    trainer.config(cfg)
    out["ratio"] = [p / g for p, g in zip(out["personalised"], out["generic"])]
    return out


def _share(hits):
    return float(np.mean(hits)) if len(hits) else None


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def _windows(meta, source, person, windows, label_fraction, shift, seed, resample):
    """(what, int8 rows, classes (-1: none), labels sent, invalid flags) of the stream: a HAPT person's
    windows, or a user's recordings (the monitor's Stream: the same windows and labels as `monitor --data`)."""
    from mcu_train import data
    from mcu_train.link.model_client import to_wire
    if source is None:
        person = 25 if person is None else person
        w = data.person_windows(person, shift=shift, seed=seed)
        n = min(windows, len(w))
        return (f"person {person}{' (rotated)' if shift else ''}", to_wire(meta, w.x[:n]), w.y[:n],
                data.label_mask(n, label_fraction, seed=seed), np.zeros(n, bool))
    from mcu_train.stream.monitor import data_stream
    if person is not None or shift:
        raise McuTrainError("--person and --shift choose and turn a HAPT person's windows: not with --data")
    stream = data_stream(meta, source, label_fraction, seed, windows, resample)
    i = 0
    while not stream.ended(i):  # a live stream: until it ends (or --windows)
        stream.wait(i, timeout=0.5)
        i = len(stream)
    if stream.error is not None:
        raise stream.error
    return (str(source), np.array(stream.rows), np.array(stream.truth), np.array(stream.labelled),
            np.array(stream.invalid))


def personalise(*, board, model, calib, train="exits", person=None, source=None, windows=300, label_fraction=0.1,
                shift=False, filter_mode="learned", keep=0.3, prune=0.5, seed=0, reference=False,
                output="build/personalise", resample=False, lr=None, pseudo_threshold=None, threshold_max=None,
                block_keep=None):
    """`mcu-train personalise`: a HAPT person's windows (default 25), or a user's recordings (`source`),
    through TRAIN on `board` (or the numpy reference); writes and returns the report (personalise.json)."""
    from codegen.compile import build, compile_model
    from codegen.reference import threshold_to_q16
    from codegen.train_reference import TrainerReference
    from mcu_train.boards import get_board
    from mcu_train.boards.runner import runner_for, session
    from mcu_train.link.model_client import load_model_meta
    from mcu_train.link.trainer_client import FilterMode, TrainConfig, Trainer
    board = get_board(board)
    out = Path(output)
    if source is not None:  # the recordings are read (and a bad one refused) before anything is written
        picked = _windows(build(model, board, calib, train=train, block_keep=block_keep).meta, source, person,
                          windows, label_fraction, shift, seed, resample)
    compiled = compile_model(model, board, out / "model", calib=calib, quiet=True, train=train,
                             block_keep=block_keep)
    meta = load_model_meta(out / "model")
    if source is None:
        picked = _windows(meta, source, person, windows, label_fraction, shift, seed, resample)
    what, rows, labels, mask, invalid = picked
    n = len(rows)
    cfg = TrainConfig.default(len(meta["exits"]))
    cfg.filter_mode = FilterMode[filter_mode.upper()]
    cfg.filter_keep, cfg.prune_keep = keep, prune
    if lr is not None:
        cfg.lr = lr
    if pseudo_threshold is not None:
        cfg.pseudo_threshold_q16 = threshold_to_q16(pseudo_threshold)
    if threshold_max is not None:  # the exits' thresholds adapt below this (and start there if lower than 0.9)
        cfg.threshold_max = [threshold_max] * len(cfg.thresholds)
        cfg.thresholds = [min(t, threshold_max) for t in cfg.thresholds]
    stream = dict(person=25 if person is None else person, shift=shift) if source is None else dict(source=str(source))
    report = dict(board=board.name, model=str(model), train=train, block_keep=block_keep, **stream,
                  label_fraction=label_fraction, config=asdict(cfg), memory={k: compiled.memory[k] for k in (
                      "arena_bytes", "training_arena_bytes", "trainable_parameters")})
    sends = [(r, int(y) if m else None, bool(b)) for r, y, m, b in zip(rows, labels, mask, invalid)]
    if reference:
        ref = TrainerReference(compiled, cfg)
        steps = [ref.train(*send) for send in sends]
        stats = ref.stats()
    else:
        elf = runner_for(board).build(out / "model", out / "firmware").elf
        with session(board, elf) as (running, link):
            trainer = Trainer(link, meta)
            trainer.config(cfg)
            steps = [trainer.train(*send) for send in sends]
            stats = trainer.stats()
            report["unit"] = link.hello.counter_unit
            report["prediction_cost_per_exit"] = exit_costs(link, meta, trainer, cfg, rows[:20])
            if not board.is_host:
                report["sram"] = peak_sram(board, elf, link)
    report["summary"] = summarise(steps, labels, mask)
    report["stats"] = asdict(stats)
    (out / "personalise.json").write_text(json.dumps(report, indent=1))
    s = report["summary"]
    print(f"{n} windows of {what} on {'the reference' if reference else board.name}, "
          f"{100 * label_fraction:.0f}% labelled")
    print(f"  prequential accuracy {_pct(s['accuracy'])} (second half {_pct(s['accuracy_second_half'])}); "
          f"exits taken {s['exits']}")
    print(f"  outcomes {s['outcomes']}")
    if s["macs_backward_dense"]:
        print(f"  backward MACs {s['macs_backward']:,} of {s['macs_backward_dense']:,} dense "
              f"({100 * (1 - s['macs_backward'] / s['macs_backward_dense']):.0f}% pruned)")
    if "cost_inference_mean" in s:
        print(f"  mean cost: prediction {s['cost_inference_mean']:,.0f}, training "
              f"{s['cost_training_mean_per_trained']:,.0f} {report['unit']} per trained window (labelled "
              f"{s['cost_training_mean_per_labelled']:,.0f}, pseudo-labelled "
              f"{s['cost_training_mean_per_pseudo_labelled']:,.0f})")
        c = report["prediction_cost_per_exit"]
        print("  prediction leaving at each exit, personalised / generic heads: " + ", ".join(
            f"{p:,.0f} / {g:,.0f} ({r:.3f}x)" for p, g, r in zip(c["personalised"], c["generic"], c["ratio"])))
    if "sram" in report:
        m = report["sram"]
        print(f"  training peak SRAM {m['peak_bytes']:,} B = static {m['static_bytes']:,} B (arena "
              f"{m['arena_bytes']:,} B, protocol buffers {m['protocol_buffer_bytes']:,} B) + stack high-water "
              f"{m['stack_used_bytes']:,} B")
    print(f"  -> {out / 'personalise.json'}")
    return report


COMPARE_SETTINGS = {
    "generic (no training)": dict(lr=0.0, filter_mode=0),
    "train every window": dict(filter_mode=0),
    "instance filter, keep 0.3": dict(filter_mode=1, filter_keep=0.3),
    "random subsampling, keep 0.3": dict(filter_mode=2, filter_keep=0.3),
    "random subsampling, keep 0.18": dict(filter_mode=2, filter_keep=0.18),
    "labels only (no pseudo-labels)": dict(filter_mode=0, pseudo_threshold_q16=65536),
}


def compare(people=range(25, 31), label_fraction=0.1, model=None, calib=None, seed=0):
    """The reference on every person's stream, natural and with the placement shift, per setting: mean
    prequential accuracy (all windows, second half), windows trained, training MACs. Returns markdown rows."""
    from codegen.compile import build
    from codegen.train_reference import TrainerReference
    from mcu_train import data
    from mcu_train.boards import get_board
    from mcu_train.link.model_client import to_wire
    from mcu_train.link.trainer_client import TrainConfig
    compiled = build(model or DEFAULT_MODEL, get_board("host"), calib or DEFAULT_CALIB, train="exits")
    rows_out = ["| stream | setting | accuracy | second half | windows trained | training MACs / window | mean exit |",
                "|---|---|---|---|---|---|---|"]
    for shift in (False, True):
        streams = []
        for p in people:
            w = data.person_windows(p, shift=shift, seed=seed)
            streams.append((to_wire(compiled.meta, w.x), w.y, data.label_mask(len(w), label_fraction, seed=seed)))
        for name, changes in COMPARE_SETTINGS.items():
            acc, acc2, trained, macs, exits, total = [], [], 0, 0, [], 0
            for rows, y, mask in streams:
                ref = TrainerReference(compiled)
                cfg = TrainConfig.default(ref.num_exits)
                for k, v in changes.items():
                    setattr(cfg, k, v)
                ref.set_config(cfg)
                steps = [ref.train(r, int(label) if m else None) for r, label, m in zip(rows, y, mask)]
                pred = np.array([s.prediction for s in steps])
                acc.append(np.mean(pred == y))
                acc2.append(np.mean(pred[len(y) // 2:] == y[len(y) // 2:]))
                trained += sum(s.outcome in (0, 5) for s in steps) if cfg.lr else 0
                macs += sum(s.macs_forward + s.macs_backward for s in steps) if cfg.lr else 0
                exits += [s.exit for s in steps]
                total += len(steps)
            rows_out.append(f"| {'rotated 30-60 deg' if shift else 'natural'} | {name} | {100 * np.mean(acc):.1f}% | "
                            f"{100 * np.mean(acc2):.1f}% | {100 * trained / total:.0f}% | {macs / total:,.0f} | "
                            f"{np.mean(exits):.2f} |")
    return rows_out


def sweep(people=range(25, 31), seeds=(0, 1, 2), label_fraction=0.1, model=None, calib=None):
    """The reference sweep of docs/RESULTS.md: every person x seed, under the placement shift and without, with
    the demo's settings (mcu_train.stream.monitor.stream_config). Per stream and on average: prequential
    accuracy of the board (all windows, second half), of the generic model (early exits at 0.9), and the
    board's mean exit. Returns markdown rows."""
    from codegen.compile import build
    from codegen.train_reference import TrainerReference
    from mcu_train.boards import get_board
    from mcu_train.stream.monitor import generic_predictions, person_stream, stream_config
    compiled = build(model or DEFAULT_MODEL, get_board("host"), calib or DEFAULT_CALIB, train="exits")
    k = len(compiled.meta["exits"])
    rows = ["| stream | board, all | board, second half | generic, all | generic, second half | mean exit |",
            "|---|---|---|---|---|---|"]
    for shift in ("rotate", "none"):
        res = []
        for seed in seeds:
            for person in people:
                s = person_stream(compiled.meta, person, label_fraction, shift, seed)
                ref = TrainerReference(compiled, stream_config(k))
                steps = [ref.train(r, int(y) if m else None, bool(bad))
                         for r, bad, y, m in zip(s.rows, s.invalid, s.truth, s.labelled)]
                pred, h = np.array([st.prediction for st in steps]), len(steps) // 2
                gen, _ = generic_predictions(compiled, s.rows, [0.9] * k)
                res.append([np.mean(pred == s.truth), np.mean(pred[h:] == s.truth[h:]), np.mean(gen == s.truth),
                            np.mean(gen[h:] == s.truth[h:]), np.mean([st.exit for st in steps])])
        a = np.mean(res, axis=0)
        rows.append(f"| {'rotated' if shift == 'rotate' else 'natural'}, people {min(people)}-{max(people)} x seeds "
                    f"{','.join(map(str, seeds))} | {100 * a[0]:.1f}% | {100 * a[1]:.1f}% | {100 * a[2]:.1f}% | "
                    f"{100 * a[3]:.1f}% | {a[4]:.2f} |")
    return rows


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--compare"]:
        print("\n".join(compare()))
    elif sys.argv[1:] == ["--sweep"]:
        print("\n".join(sweep()))

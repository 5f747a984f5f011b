"""`mcu-train bench --out docs/RESULTS.md [--quick]`: every benchmark of docs/RESULTS.md in one command.

The grid (people x seeds x settings x boards) runs as independent tasks (mcu_train.bench.sweep: a local
process pool, or a Dask cluster with --scheduler); then the figures are computed (mcu_train.bench.analysis)
and written: the markdown report between two marker lines of --out (text outside them is kept), PNG plots
beside it, and results.json beside it. Every table names its command, board, date, commit and whether its
figures come from a board or from the numpy reference of the board's arithmetic."""
import json
import math
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from codegen.files import write_atomically
from mcu_train.bench import analysis, measure
from mcu_train.bench.streams import LABEL_POLICIES, StreamTask, run_stream
from mcu_train.bench.sweep import run_tasks
from mcu_train.errors import McuTrainError
from mcu_train.resources import DEFAULT_CALIB, DEFAULT_MODEL, FIRMWARE_DIR

BEGIN = "<!-- mcu-train bench: generated from here; edit the code, not this block -->"
END = "<!-- mcu-train bench: end of the generated block -->"
COST_BOARD = "mps2-an386"  # Cortex-M4F: where costs per window, training cost and the link are measured
KERNEL_CORES = ("cortex-m4", "cortex-m7", "cortex-m33")
LABEL_FRACTIONS = (1.0, 0.1, 0.0)
SHIFTS = ("none", "rotate")
SHIFT_NAMES = {"none": "natural", "rotate": "placement shift"}
TRAINING_SETTINGS = ("dense", "filter", "filter+pruning", "random")
SETTING_NAMES = {
    "dense": "dense: every window with a target, no pruning",
    "filter": "instance filter (keep 0.3)",
    "filter+pruning": "instance filter + error-map pruning (keep 0.5)",
    "random": "random subsampling, same training budget, + pruning",
}
# MLPerf Tiny v1.3, closed division, STM32L4R5ZI (Cortex-M4 at 120 MHz): latency in ms, MACs.
MLPERF_PUBLISHED = {
    "ResNet-8": dict(macs=12.50e6, xcube=165.7, microtvm=389.6),
    "DS-CNN": dict(macs=2.66e6, xcube=43.4, microtvm=99.8),
}
MLPERF_CLOCK_HZ = 120e6


@dataclass(frozen=True)
class Plan:
    """What the run covers."""
    quick: bool
    people: tuple
    seeds: tuple
    windows: int | None  # per stream (None: all of the person's)
    training_people: tuple
    training_shifts: tuple
    link_windows: int | None

    @classmethod
    def make(cls, quick):
        if quick:
            return cls(True, (25,), (0,), 120, (25,), ("rotate",), 100)
        return cls(False, tuple(range(25, 31)), (0, 1, 2), None, tuple(range(25, 31)), SHIFTS, None)


def choose_boards(names, quick=False):
    """Boards of the per-board tables: the names given ("all": every board), by default every board but the
    host process (quick: only COST_BOARD). Emulated ones are measured, real ones built."""
    from mcu_train.boards import get_board, list_boards
    if not names and quick:
        names = [COST_BOARD]
    if not names or names == ["all"]:
        return [b for b in list_boards() if not b.is_host]
    boards = [get_board(n) for n in names]
    host = [b.name for b in boards if b.is_host]
    if host:
        raise McuTrainError(f"{host[0]} is the host process, not a microcontroller: the report measures boards")
    return boards


def kernel_boards():
    """One emulated board per core of the kernel table."""
    from mcu_train.boards import emulated_boards
    found = {}
    for b in emulated_boards():
        found.setdefault(b.cpu, b.name)
    return {cpu: found[cpu] for cpu in KERNEL_CORES if cpu in found}


def grid(plan, boards, model, calib):
    """Every task of the run: (function, argument)."""
    tasks = []
    for train in measure.TRAIN_MODES:
        for shift in SHIFTS:
            for labels in LABEL_FRACTIONS:
                for policy in LABEL_POLICIES if 0 < labels < 1 else ("random",):
                    for person in plan.people:
                        for seed in plan.seeds:
                            tasks.append((run_stream, StreamTask(person, seed, labels, shift, policy, train,
                                                                 windows=plan.windows, model=model, calib=calib)))
    for shift in plan.training_shifts:
        for person in plan.training_people:
            for setting in TRAINING_SETTINGS:
                tasks.append((run_stream, StreamTask(person, 0, 0.1, shift, setting=setting, windows=plan.windows,
                                                     board=COST_BOARD, model=model, calib=calib)))
    for b in boards:
        tasks.append((measure.board_task, measure.BoardTask(b.name, model, calib, 5 if plan.quick else 20)))
    if COST_BOARD not in [b.name for b in boards]:
        tasks.append((measure.board_task, measure.BoardTask(COST_BOARD, model, calib, 5 if plan.quick else 20)))
    for board in kernel_boards().values():
        for reference in (False, True):
            tasks.append((measure.kernel_task, (board, reference)))
    for name in ["har", *(m[0] for m in measure.MLPERF_TINY)]:
        tasks.append((measure.model_task, (name, COST_BOARD)))
    return tasks


def commit():
    try:
        root = FIRMWARE_DIR.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def bench_report(*, out, quick=False, boards=None, scheduler=None, workers=None, model=DEFAULT_MODEL,
                 calib=DEFAULT_CALIB, command=None, log=print):
    """Run every benchmark and write the report to `out` (markdown), plots and results.json beside it.
    Returns the results.json dictionary."""
    out = Path(out)
    plan = Plan.make(quick)
    board_list = choose_boards(boards, quick)
    tasks = grid(plan, board_list, str(model), str(calib))
    where = f"Dask scheduler {scheduler}" if scheduler else "local process pool"
    log(f"{len(tasks)} tasks on the {where}")
    t0, measured_commit = time.monotonic(), commit()  # the code that measures: before any file is written
    results = run_tasks(tasks, scheduler=scheduler, workers=workers, log=log)
    # The link's wall-clock speed is measured alone, after the sweep, on this machine.
    tasks.append((measure.link_task, (COST_BOARD, plan.link_windows, 27)))
    results.append(measure.link_task(tasks[-1][1]))
    ctx = dict(command=command or "mcu-train bench" + (" --quick" if quick else "") + f" --out {out}",
               date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), commit=measured_commit, quick=quick,
               seconds=round(time.monotonic() - t0), where=where)
    report = Report(plan, ctx, tasks, results, board_list)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = report.json()
    text = report.markdown(out)
    write_atomically(out.parent / "results.json", (json.dumps(summary, indent=1) + "\n").encode())
    write_atomically(out, splice(out.read_text() if out.is_file() else "", text).encode())
    log(f"report: {out}, {out.parent / 'results.json'}, plots {', '.join(report.plots)} "
        f"({ctx['seconds']} s)")
    return summary


def splice(old, block):
    """`old` with its generated block replaced by `block` (or `block` appended after its first section)."""
    block = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    if not old.strip():
        return f"# Results\n\n{block}\n"
    return old.rstrip() + "\n\n" + block + "\n"


# ------------------------------------------------------------------------------------------------ report

def trainer_settings():
    """What the streams' trainer runs: the firmware's boot configuration (what `mcu-train monitor` and
    `mcu-train demo` run), compiled with the recommended replay memory (StreamTask's default)."""
    from codegen.trainer_abi import FilterMode, TrainConfig
    cfg = TrainConfig()
    pseudo = ("only from a certain final exit" if cfg.pseudo_threshold_q16 >= 65536 else
              f"from a final exit at least {cfg.pseudo_threshold_q16 / 65536:.2f} confident")
    return (f"The trainer runs the firmware's defaults, as `mcu-train monitor` and `demo` do (learning rate "
            f"{cfg.lr:g}, pseudo-labels {pseudo}, {FilterMode(cfg.filter_mode).name.lower()} instance filter "
            f"keeping {100 * cfg.filter_keep:.0f}%, error-map pruning keeping {100 * cfg.prune_keep:.0f}%, labels "
            f"asked for within a {100 * cfg.label_budget:.0f}% budget where the label choice is *active*), "
            f"compiled with a {StreamTask.replay_bytes:,} B replay memory (`--replay-bytes`; the demo's build has "
            f"none), from which {cfg.replays} examples are replayed per labelled one.")


def people(ids):
    return f"people {ids[0]}-{ids[-1]}" if len(ids) > 1 else f"person {ids[0]}"


def _fmt(v, spec=",.0f", missing="-"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    return format(v, spec)


def _table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


class Report:
    def __init__(self, plan, ctx, tasks, results, boards):
        self.plan, self.ctx, self.boards = plan, ctx, boards
        self.plots = []
        by = lambda fn: [(arg, r) for (f, arg), r in zip(tasks, results) if f is fn]  # noqa: E731
        streams = [r for _, r in by(run_stream)]
        self.personal = [r for r in streams if not r["task"]["board"]]
        self.board_streams = [r for r in streams if r["task"]["board"]]
        self.board_results = {r["board"]: r for _, r in by(measure.board_task)}
        self.kernels = by(measure.kernel_task)
        self.models = [r for _, r in by(measure.model_task)]
        self.link = by(measure.link_task)[0][1]
        self.cost = analysis.CostModel(self.board_results[COST_BOARD])
        # Random labels only: with active labels what the board asks for depends on the exits it ran, so a
        # stream's record does not tell what other thresholds would have given.
        sel = lambda shift: [r for r in self.personal if r["task"]["train"] == "exits"  # noqa: E731
                             and r["task"]["labels"] == 0.1 and r["task"]["label_policy"] == "random"
                             and r["task"]["shift"] == shift]
        self.curves = {shift: analysis.curves(sel(shift), self.cost) for shift in SHIFTS}
        self.training = {shift: analysis.training_cost([r for r in self.board_streams if r["task"]["shift"] == shift],
                                                       self.cost.full) for shift in plan.training_shifts}
        self.training_all = analysis.training_cost(self.board_streams, self.cost.full)

    # --- provenance ---
    def source(self, what, board=None):
        c = self.ctx
        return (f"*Command `{c['command']}` · board {board or COST_BOARD} · {c['date']} · commit {c['commit']} · "
                f"figures from {what}.*")

    def reference_note(self):
        n = sum(len(r["truth"]) for r in self.board_streams)
        bad = sum(r["mismatches"] for r in self.board_streams)
        return (f"the numpy reference of the board's arithmetic (`codegen/train_reference.py`); in this run the "
                f"board made the same decisions as the reference on {n - bad:,} of {n:,} windows "
                f"({len(self.board_streams)} streams, training-cost table)")

    # --- sections ---
    def markdown(self, out):
        c, p = self.ctx, self.plan
        quick = (f"**Quick run**: one person, {p.windows} windows per stream, fewer settings; the full run is "
                 "`mcu-train bench --out docs/RESULTS.md`. ") if p.quick else ""
        windows = f"the first {p.windows} windows" if p.windows else "every window"
        parts = [
            "## Benchmarks (`mcu-train bench`)",
            f"Generated by `{c['command']}` on {c['date']} at commit {c['commit']} ({c['where']}, "
            f"{c['seconds']} s). {quick}Streams: {people(p.people)}, seeds {', '.join(map(str, p.seeds))}, "
            f"{windows} of each person in time "
            "order (prequential: each window classified, then maybe trained on); accuracy is over the second half "
            "of each stream. Costs are instructions counted on QEMU boards (`-icount shift=0`). " + trainer_settings(),
            self.personalisation_section(out), self.inference_section(out), self.training_section(),
            self.memory_section(), self.kernel_section(), self.models_section(), self.link_section()]
        return "\n\n".join(parts) + "\n"

    def personalisation_rows(self):
        rows = []
        for r in self.personal:
            t = r["task"]
            g, acc = analysis.stream_accuracies(r)
            rows.append(dict(person=t["person"], seed=t["seed"], labels=t["labels"], label_policy=t["label_policy"],
                             shift=t["shift"], train=t["train"], generic_acc=round(g, 2), personalised_acc=round(acc, 2)))
        return rows

    def personalisation_section(self, out):
        rows = self.personalisation_rows()
        lines = ["### Personalisation (PersEPhonEE: personalised exits more accurate for their person)",
                 self.source(self.reference_note(), "any (reference)"),
                 "Second-half accuracy (%), mean over people and seeds. *generic*: the int8 model as shipped, early "
                 "exits at 0.9; *exits*: `--train exits` (the exit heads learn); *exits + last block*: "
                 "`--train exits+last-block`. *worse*: streams whose personalised accuracy is more than 0.5 "
                 "points below the generic model's."]
        table = []
        for shift in SHIFTS:
            for labels in LABEL_FRACTIONS:
                for policy in ("random", "active") if 0 < labels < 1 else ("random",):
                    sel = [r for r in rows if r["shift"] == shift and r["labels"] == labels
                           and r["label_policy"] == policy]
                    head = [SHIFT_NAMES[shift], f"{100 * labels:.0f}%", policy if 0 < labels < 1 else "-"]
                    if policy not in LABEL_POLICIES:
                        table.append(head + ["not measured yet: the board cannot ask for labels in this build "
                                             "(issue 14)"] + [""] * 4)
                        continue
                    cells = []
                    for train in measure.TRAIN_MODES:
                        s = [r for r in sel if r["train"] == train]
                        worse = sum(r["personalised_acc"] < r["generic_acc"] - 0.5 for r in s)
                        cells.append((float(np.mean([r["personalised_acc"] for r in s])), worse, len(s)))
                    g = float(np.mean([r["generic_acc"] for r in sel if r["train"] == "exits"]))
                    table.append(head + [f"{g:.1f}"] + [f"{a:.1f} ({a - g:+.1f})" for a, _, _ in cells]
                                 + [f"{w} of {n}" for _, w, n in cells])
        lines.append(_table(["stream", "labels", "label choice", "generic", "exits", "exits + last block",
                             "worse: exits", "worse: exits + last block"], table))
        lines.append("Per person (mean over seeds), random labels:")
        per = []
        for shift in SHIFTS:
            for labels in LABEL_FRACTIONS:
                for person in self.plan.people:
                    sel = [r for r in rows if r["shift"] == shift and r["labels"] == labels and r["person"] == person
                           and r["label_policy"] == "random"]
                    acc = {t: float(np.mean([r["personalised_acc"] for r in sel if r["train"] == t]))
                           for t in measure.TRAIN_MODES}
                    g = float(np.mean([r["generic_acc"] for r in sel if r["train"] == "exits"]))
                    per.append([SHIFT_NAMES[shift], f"{100 * labels:.0f}%", person, f"{g:.1f}",
                                *(f"{acc[t]:.1f}" for t in measure.TRAIN_MODES)])
        lines.append(_table(["stream", "labels", "person", "generic", "exits", "exits + last block"], per))
        lines.append(f"![personalisation]({self.plot_personalisation(rows, out)})")
        return "\n\n".join(lines)

    def inference_section(self, out):
        lines = ["### Inference cost with exits (PersEPhonEE: 2.2-3.2x less at the same accuracy)",
                 self.source(f"the board's costs ({COST_BOARD}: each exit's path measured with generic and with "
                             "personalised heads) applied to the exits taken in the reference streams; "
                             + self.cost_check_note()),
                 "Mean instructions per window on the second halves of the streams with 10% random labels "
                 "(`--train exits`), all "
                 "exit thresholds equal and swept; *full network*: the int8 network run to its final exit without "
                 f"the exit heads (`mcu-train infer --exit -1`). *best*: the cheapest threshold within "
                 f"{analysis.WITHIN_PT} points of the full network's accuracy. *board's own*: the personalised board "
                 "with the thresholds it adapts itself."]
        rows = []
        for shift, c in self.curves.items():
            full = c["full"]
            rows.append([SHIFT_NAMES[shift], "full network", "-", f"{full['accuracy']:.1f}", _fmt(full["cost"]),
                         "1.00x"])
            for kind in ("generic", "personalised"):
                b = c[f"{kind}_best"]
                th = "none within 0.5 pt: the full network" if b["threshold"] is None else f"{b['threshold']:g}"
                rows.append([SHIFT_NAMES[shift], f"{kind}, best", th, f"{b['accuracy']:.1f}", _fmt(b["cost"]),
                             f"**{b['speedup']:.2f}x**"])
            b = c["board"]
            rows.append([SHIFT_NAMES[shift], "personalised, board's own thresholds", "adaptive",
                         f"{b['accuracy']:.1f}", _fmt(b["cost"]), f"{full['cost'] / b['cost']:.2f}x"])
        lines.append(_table(["stream", "model", "threshold", "accuracy %", "instructions / window",
                             "speedup vs full network"], rows))
        curve = []
        for shift, c in self.curves.items():
            for g, p in zip(c["generic"], c["personalised"]):
                curve.append([SHIFT_NAMES[shift], f"{g['threshold']:g}", f"{g['accuracy']:.1f}", _fmt(g["cost"]),
                              f"{p['accuracy']:.1f}", _fmt(p["cost"])])
        lines.append(_table(["stream", "threshold", "generic accuracy %", "generic instructions",
                             "personalised accuracy %", "personalised instructions"], curve))
        lines.append(f"![speed-accuracy]({self.plot_curves(out)})")
        return "\n\n".join(lines)

    def cost_check_note(self):
        err = analysis.cost_model_error(self.board_streams, self.cost)
        n = sum(len(r["truth"]) for r in self.board_streams)
        return (f"this cost model is within {100 * err:.1f}% of the prediction cost the board itself reported on "
                f"every one of {n:,} windows of the training-cost streams")

    def training_section(self):
        lines = ["### Training cost (Wu et al.: 68-79% of the training computation saved at no loss)",
                 self.source(f"the board ({COST_BOARD}: instructions training adds beyond the prediction, reported "
                             "with every TRAIN reply)"),
                 "What training adds beyond inference, per window of the stream (every window counts, trained or "
                 f"not), 10% labels, seed 0, mean over {people(self.plan.training_people)}. *of an inference*: as a fraction of the full network's "
                 f"{self.cost.full:,.0f} instructions. *saved*: vs dense training. The random baseline keeps the "
                 "fraction of unlabelled windows at which it trains on as many windows as the filter with pruning "
                 "(found per stream on the reference)."]
        rows = []
        for shift, table in [*self.training.items(), ("all", self.training_all)]:
            for name in TRAINING_SETTINGS:
                t = table[name]
                rows.append([SHIFT_NAMES.get(shift, "both"), SETTING_NAMES[name], f"{t['trained_pct']:.0f}%",
                             _fmt(t["cost"]), f"{t['of_inference']:.2f}", f"{100 * t['saved']:.0f}%",
                             _fmt(t["macs_backward"]), f"{t['accuracy']:.1f} ({0.0 - t['accuracy_drop_pt']:+.1f})"])
        lines.append(_table(["stream", "setting", "windows trained", "instructions added / window",
                             "of an inference", "saved", "backward MACs / window", "accuracy % (vs dense)"], rows))
        return "\n\n".join(lines)

    def memory_rows(self):
        rows = []
        for b in self.boards:
            r = self.board_results.get(b.name)
            inference = (f"{r['static_bytes'] + r['stack_used_bytes']:,}" if "stack_used_bytes" in r
                         else f"{r['static_bytes']:,} + stack (not measured: real board)")
            cells = [b.name, b.cpu, "emulated" if r["emulated"] else "real", f"{r['ram_size'] // 1024} K",
                     f"{r['flash_bytes']:,}", inference]
            for t in r["training"]:
                if "error" in t:
                    cells += ["does not fit: " + t["error"].split(": ", 1)[-1].split(" (")[0], "", ""]
                    continue
                peak = (f"**{t['sram']['peak_bytes']:,}** ({t['arena_bytes']:,} + {t['sram']['stack_used_bytes']:,})"
                        if "sram" in t else f"{t['static_bytes']:,} + stack (not measured)")
                cells += [f"{t['flash_bytes']:,}", f"{t['arena_bytes']:,}", peak]
            rows.append(cells)
        return rows

    def memory_section(self):
        head = ["board", "CPU", "kind", "RAM", "inference: flash B", "inference: peak SRAM B"]
        for mode in measure.TRAIN_MODES:
            head += [f"`{mode}`: flash B", f"`{mode}`: planned arena B", f"`{mode}`: peak SRAM B (arena + stack)"]
        return "\n\n".join([
            "### Memory and size per board",
            self.source("the boards: flash from the linked image; peak SRAM = every static byte (.data + .bss: the "
                        "planned arena, protocol buffers, the rest) + the stack high-water mark read back from the "
                        f"board after {measure.BoardTask.train_windows} labelled TRAIN windows (inference: after "
                        "classifying)", "each board in the table"),
            _table(head, self.memory_rows())])

    def kernel_section(self):
        boards = kernel_boards()
        cols = [(cpu, ref) for cpu in boards for ref in (False, True)]
        found = {(arg[0], arg[1]): r for arg, r in self.kernels}
        names = [row["layer"] for row in found[(boards[KERNEL_CORES[0]], False)]]
        rows = []
        for i, name in enumerate(names):
            first = found[(boards[KERNEL_CORES[0]], False)][i]
            cyc = first.get("cycles")
            rows.append([name, f"{first['macs']:,}", *(f"{found[(boards[cpu], ref)][i]['per_mac']:.2f}"
                                                       for cpu, ref in cols),
                         _fmt(first["cmsis"], ".2f"),
                         _fmt(cyc / first["macs"], ".2f") if cyc else "n/a (not in this build)"])
        head = ["layer (int8, NHWC)", "MACs", *(f"{cpu.removeprefix('cortex-').upper()} {'C' if ref else 'DSP'}"
                                                for cpu, ref in cols),
                "CMSIS-NN (M4 DSP)", "estimated cycles / MAC (M4)"]
        from mcu_train.bench.model_bench import markdown as per_board_markdown
        measured = [self.board_results[b.name] for b in self.boards if self.board_results[b.name]["emulated"]]
        return "\n\n".join([
            "### Kernels and whole models",
            self.source("the QEMU instruction-counting plugin (exact counts inside the kernels; outputs checked "
                        "against the numpy golden model)", ", ".join(boards.values())),
            "Instructions per MAC of each conv / depthwise / dense kernel shape (`python -m "
            "mcu_train.bench.kernel_bench`): DSP path and plain C on each core. Estimated cycles come from the "
            "Cortex-M4 timing model of the counting plugin when this build has it.",
            _table(head, rows),
            self.source("the boards (SysTick under `-icount shift=0`: instructions per inference, resolution one "
                        "tick)", ", ".join(r["board"] for r in measured)),
            f"The default model on each board, per exit (the early-exit path: heads on the way included), and per "
            f"layer on {COST_BOARD}:", per_board_markdown(measured, [COST_BOARD]).strip()])

    def models_section(self):
        rows = []
        for m in self.models:
            name = "default HAR model (to its final exit)" if m["model"] == "har" else m["model"]
            pub = MLPERF_PUBLISHED.get(m["model"])
            published = ["-", "-"] if not pub else [
                f"{pub['xcube']} ms ({pub['xcube'] * 1e-3 * MLPERF_CLOCK_HZ / pub['macs']:.2f} cycles/MAC)",
                f"{pub['microtvm']} ms ({pub['microtvm'] * 1e-3 * MLPERF_CLOCK_HZ / pub['macs']:.2f} cycles/MAC)"]
            if "error" in m:
                rows.append([name, m.get("input", "1x128x3"), m["error"], "", "", "", *published])
                continue
            cyc = m.get("cycles")
            rows.append([name, m.get("input", "1x128x3"), f"{m['macs']:,}", _fmt(m["instructions"]),
                         f"{m['instructions'] / m['macs']:.2f}",
                         f"{cyc / m['macs']:.2f}" if cyc else "n/a (not in this build)", *published])
        return "\n\n".join([
            self.source("the board (instructions per inference to the final exit, mean of 3 inputs)"),
            "Whole models on Cortex-M4, next to the published MLPerf Tiny v1.3 latencies on STM32L4R5 (Cortex-M4 "
            "at 120 MHz, closed division):",
            _table(["model", "input", "MACs", "instructions", "instructions / MAC", "estimated cycles / MAC",
                    "X-CUBE-AI 10.2", "microTVM + CMSIS-NN"], rows)])

    def link_section(self):
        ln = self.link
        limit = measure.BYTES_PER_S / max(ln["request_bytes"], ln["reply_bytes"])
        sensor = 50 / 64  # HAPT: 50 Hz, a new window every 64 samples
        rows = [["TRAIN, 4 in flight", f"{ln['rate'][4]:.1f}"], ["TRAIN, 1 in flight", f"{ln['rate'][1]:.1f}"]]
        return "\n\n".join([
            "### Link",
            self.source("the board over its emulated serial line (wall-clock: depends on the machine's load)"),
            f"Windows per second through the serial protocol, person {ln['person']} with the placement shift "
            f"({ln['windows']} windows, 10% labelled), each window one TRAIN request:",
            _table(["requests", "windows / s"], rows),
            f"On the wire a TRAIN request is {ln['request_bytes']:.0f} bytes framed ({ln['payload_bytes']} payload), "
            f"its reply {ln['reply_bytes']:.0f} (CLASSIFY: {ln['classify_request_bytes']:.0f}). At 115,200 baud "
            f"(8N1: {measure.BYTES_PER_S:,.0f} B/s each way) the link carries at most **{limit:.1f} windows/s**; "
            f"the sensor makes {sensor:.2f} windows/s (50 Hz, hop 64), {100 * sensor / limit:.1f}% of that budget."])

    # --- plots ---
    def plot_curves(self, out):
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(self.curves), figsize=(11, 4.2), constrained_layout=True, squeeze=False)
        for ax, (shift, c) in zip(axes[0], self.curves.items()):
            for kind, style in (("generic", "o--"), ("personalised", "s-")):
                ax.plot([p["cost"] / 1e6 for p in c[kind]], [p["accuracy"] for p in c[kind]], style, label=kind)
            ax.plot([c["full"]["cost"] / 1e6], [c["full"]["accuracy"]], "k*", markersize=12, label="full network")
            ax.plot([c["board"]["cost"] / 1e6], [c["board"]["accuracy"]], "r^", label="board's own thresholds")
            ax.axhline(c["full"]["accuracy"] - analysis.WITHIN_PT, color="gray", lw=0.8, ls=":")
            ax.set(title=f"{SHIFT_NAMES[shift]}, 10% labels", xlabel="M instructions per window",
                   ylabel="second-half accuracy %")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return self._save(fig, out, "bench_inference.png")

    def plot_personalisation(self, rows, out):
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(SHIFTS), figsize=(11, 4), constrained_layout=True, squeeze=False)
        for ax, shift in zip(axes[0], SHIFTS):
            x = np.arange(len(LABEL_FRACTIONS))
            for i, (key, train, name) in enumerate((("generic_acc", "exits", "generic"),
                                                    ("personalised_acc", "exits", "exits"),
                                                    ("personalised_acc", "exits+last-block", "exits + last block"))):
                means = [np.mean([r[key] for r in rows if r["shift"] == shift and r["labels"] == lab
                                  and r["train"] == train and r["label_policy"] == "random"]) for lab in LABEL_FRACTIONS]
                ax.bar(x + (i - 1) * 0.27, means, 0.27, label=name)
            ax.set_xticks(x, [f"{100 * lab:.0f}% labels" for lab in LABEL_FRACTIONS])
            ax.set(title=SHIFT_NAMES[shift], ylabel="second-half accuracy %", ylim=(0, 100))
            ax.legend(fontsize=8)
        return self._save(fig, out, "bench_personalisation.png")

    def _save(self, fig, out, name):
        import io
        buf = io.BytesIO()
        fig.savefig(buf, dpi=90)
        _pyplot().close(fig)
        write_atomically(Path(out).parent / name, buf.getvalue())
        self.plots.append(name)
        return name

    # --- results.json ---
    def json(self):
        natural = self.curves["none"]
        per_board = {b.name: self.board_results[b.name] for b in self.boards}
        kernels = {}
        for (board, ref), rows in self.kernels:
            for row in rows:
                kernels.setdefault(board, {}).setdefault(row["layer"], {})["c" if ref else "dsp"] = round(row["per_mac"], 3)
        training = self.training_all["filter+pruning"]
        return dict(
            command=self.ctx["command"], date=self.ctx["date"], commit=self.ctx["commit"], quick=self.ctx["quick"],
            seconds=self.ctx["seconds"],
            inference_speedup=dict(generic=natural["generic_best"]["speedup"],
                                   personalised=natural["personalised_best"]["speedup"],
                                   stream="natural, 10% labels, second halves", within_pt=analysis.WITHIN_PT),
            inference_accuracy_drop_pt=dict(generic=natural["generic_best"]["drop_pt"],
                                            personalised=natural["personalised_best"]["drop_pt"]),
            inference=self.curves,
            training_saving=training["saved"], training_accuracy_drop_pt=training["accuracy_drop_pt"],
            training=dict(all=self.training_all, **self.training),
            personalisation=self.personalisation_rows(),
            label_policies_measured=list(LABEL_POLICIES),
            sram_training_peak_bytes={n: {t["mode"]: t["sram"]["peak_bytes"] if "sram" in t else None
                                          for t in r["training"]} for n, r in per_board.items()},
            flash_bytes={n: dict(inference=r["flash_bytes"], **{t["mode"]: t.get("flash_bytes") for t in r["training"]})
                         for n, r in per_board.items()},
            conv_instructions_per_mac=kernels,
            models={m["model"]: dict(macs=m.get("macs"), instructions=m.get("instructions"),
                                     estimated_cycles=m.get("cycles"), error=m.get("error")) for m in self.models},
            windows_per_second=dict(in_flight_4=self.link["rate"][4], in_flight_1=self.link["rate"][1],
                                    wire_limit_115200=measure.BYTES_PER_S / max(self.link["request_bytes"],
                                                                               self.link["reply_bytes"])),
            board_reference_mismatches=sum(r["mismatches"] for r in self.board_streams),
            cost_model_max_error=analysis.cost_model_error(self.board_streams, self.cost))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt

"""`mcu-train` command line: parse the arguments, call mcu_train.api, print. Heavy modules are imported inside
each command so `--help` stays fast."""
import argparse
import signal
import sys
import time

from mcu_train.errors import McuTrainError

DEFAULT_BOARD = "mps2-an386"


def _board(args):
    from mcu_train.api import board_of
    return board_of(args.board)


def cmd_boards(args):
    from mcu_train.boards import list_boards
    print(f"{'name':<16} {'cpu':<13} {'fpu':<12} {'ram':>8} {'flash':>8}  kind")
    for b in list_boards():
        print(f"{b.name:<16} {b.cpu:<13} {b.fpu or '-':<12} {b.ram_size // 1024:>6}K {b.flash_size // 1024:>6}K  "
              f"{'emulated' if b.emulated else 'real'}")


def cmd_build(args):
    from mcu_train import api
    result = api.build(args.board, model_dir=args.model_dir, out_dir=args.output)
    print(f"{result.elf}")
    print(result.size_line())


def flash_real_board(board, args):
    """Program a real board through pyOCD with a progress bar; then say where its serial port is."""
    from pathlib import Path

    from rich.progress import Progress

    from mcu_train import api
    bar = Progress(transient=True)  # shown once programming starts (not for a missing probe)
    task = bar.add_task(f"flashing {board.name} ({board.pyocd_target})", total=1.0, start=False)

    def show(fraction):
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=fraction)
    try:
        running = api.flash(board, args.firmware, probe=args.probe, progress=show)
    finally:
        if bar.live.is_started:
            bar.stop()
    print(f"{board.name}: flashed {Path(args.firmware).name}, verified, reset")
    if board.uf2_family:
        print(f"uf2: {Path(args.firmware).with_suffix('.uf2')} (or copy it to the board's USB drive)")
    try:
        print(f"serial: {running.url} at {board.baud} baud")
    except McuTrainError as e:
        print(f"serial: {e}")


def cmd_flash(args):
    from pathlib import Path

    from mcu_train import api
    board = _board(args)
    if not board.emulated:
        return flash_real_board(board, args)
    running = api.start(board, args.firmware, port=args.port, detach=args.detach)
    print(f"{args.board} running {Path(args.firmware).name}")
    print(f"serial: {running.url}")
    print(f"pid: {running.pid}")
    if args.detach:
        return
    print("Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with Ctrl-C ignored
    try:
        while running.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


def cmd_selftest(args):
    from mcu_train import api
    if not api.selftest(args.board, pings=args.pings, seed=args.seed):
        sys.exit(1)


def cmd_compile(args):
    from mcu_train import api
    exits = [e.strip() for e in args.exits.split(",")] if args.exits else None
    api.compile_model(args.model, args.output, calib=args.calib, board=args.board, exits=exits, train=args.train,
                      quiet=False, momentum=args.momentum, replay_bytes=args.replay_bytes,
                      block_keep=args.block_keep)


def cmd_infer(args):
    import numpy as np
    from rich.progress import Progress

    from codegen.files import load_npz_array, save_npz_atomically
    from mcu_train import api
    board = _board(args)
    x = load_npz_array(args.input)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else None
    with Progress(transient=True) as bar:
        task = bar.add_task(f"classifying on {board.name}", total=len(x))
        results, unit = api.infer(args.model_dir, x, board, args.exit, thresholds,
                                  progress=lambda done, total: bar.update(task, completed=done))
    save_npz_atomically(args.output, **results)
    counts = np.bincount(results["exit"], minlength=len(api.load_model_meta(args.model_dir)["exits"]))
    print(f"{len(x)} inputs on {board.name} -> {args.output}")
    print(f"  exits taken: {', '.join(f'exit {k}: {c}' for k, c in enumerate(counts))}")
    print(f"  mean cost: {results['cost'].mean():,.0f} {unit}")


def cmd_bench(args):
    from mcu_train import api
    if args.out or args.quick:
        given = [f"--{n}" for n in ("output", "markdown", "inputs") if getattr(args, n) is not None]
        if given:
            raise McuTrainError(f"{given[0]} belongs to the per-board tables; the report (--out / --quick) writes "
                                "its markdown to --out and results.json beside it")
        import shlex
        api.bench_report(args.out or "build/bench-report/RESULTS.md", quick=args.quick, boards=args.board,
                         scheduler=args.scheduler, workers=args.workers, model=args.model, calib=args.calib,
                         command=shlex.join(["mcu-train", *sys.argv[1:]]))
        return
    if args.scheduler or args.workers:
        raise McuTrainError("--scheduler and --workers run the report's sweep: add --out FILE or --quick")
    api.bench(args.board or [DEFAULT_BOARD], args.model, args.calib, args.inputs or 20,
              args.output or "build/bench.json", args.markdown)


def cmd_personalise(args):
    from mcu_train import api
    api.personalise(args.board, args.model, args.calib, train=args.train, person=args.person, source=args.data,
                    windows=args.windows, label_fraction=args.labels, shift=args.shift, filter_mode=args.filter,
                    keep=args.keep, prune=args.prune, seed=args.seed, reference=args.reference, output=args.output,
                    resample=args.resample, lr=args.lr, pseudo_threshold=args.pseudo_threshold,
                    threshold_max=args.threshold_max, block_keep=args.block_keep)


def cmd_monitor(args):
    from mcu_train import api
    api.monitor(args.port, board=args.board, model=args.model, calib=args.calib, source=args.data, person=args.person,
                labels=args.labels, label_policy=args.label_policy,
                shift=args.shift, seed=args.seed, log=args.log, resume=args.resume, listen_only=args.listen,
                windows=args.windows, lr=args.lr, pseudo_threshold=args.pseudo_threshold, filter_mode=args.filter,
                keep=args.keep, checkpoint_every=args.checkpoint_every, rate=args.rate, in_flight=args.in_flight,
                resample=args.resample, quiet=args.quiet)


def cmd_demo(args):
    from mcu_train import api
    api.demo(args.board, person=args.person, labels=args.labels, shift=args.shift, seed=args.seed,
             output=args.output, resume=args.resume, quiet=args.quiet)


def cmd_pretrain(args):
    from mcu_train import api
    options = {}
    if args.data is not None:
        options = dict(source=args.data, classes=args.classes.split(",") if args.classes else None,
                       validation=args.validation, window=args.window, hop=args.hop, sample_rate=args.sample_rate,
                       resample=args.resample)
    api.pretrain(args.output, seed=args.seed, epochs=args.epochs, dataset=args.dataset or "hapt", **options)


def _add_data_arguments(s, default_person):
    """Where the windows come from: a HAPT person, or --data (docs/data.md)."""
    where = s.add_mutually_exclusive_group()
    where.add_argument("--dataset", choices=["hapt"], help="stream a HAPT person's windows (the default)")
    where.add_argument("--data", metavar="SOURCE",
                       help="your recordings: a .csv, Edge Impulse .json or .npz file, a folder of them, or - for "
                            "CSV rows on standard input (live); windowed as the model's metadata says (docs/data.md)")
    s.add_argument("--person", type=int, help=f"HAPT person (default {default_person})")
    s.add_argument("--resample", action="store_true",
                   help="with --data: resample recordings at another rate than the model's (else refused)")


def build_parser():
    p = argparse.ArgumentParser(prog="mcu-train", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("boards", help="list supported boards")
    s.set_defaults(func=cmd_boards)

    s = sub.add_parser("build", help="build firmware for a board (optionally with a compiled model)")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("model_dir", nargs="?", help="output folder of `mcu-train compile`")
    s.add_argument("-o", "--output", help="build folder (default build/<board>)")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("flash", help="run firmware: QEMU for emulated boards, pyOCD for real ones")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("firmware", help="firmware ELF")
    s.add_argument("--detach", action="store_true", help="start and return, leaving the emulator running")
    s.add_argument("--port", type=int, default=0, help="TCP port for the emulated serial line (0: any free port)")
    s.add_argument("--probe", help="real boards: the debug probe's unique ID (or part of it) when several are "
                                   "connected (`pyocd list`)")
    s.set_defaults(func=cmd_flash)

    s = sub.add_parser("selftest", help="build, boot, handshake, ping and fault-inject a board")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--pings", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_selftest)

    s = sub.add_parser("compile", help="quantise an ONNX CNN with exits and lower it to int8 C")
    s.add_argument("model", help="float ONNX model (with --calib) or a QDQ model from onnxruntime")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--calib", help="calibration inputs (.npz: array 'x', in the model's input layout)")
    s.add_argument("--exits", help="output names of the exits, shallow to deep (default: model metadata)")
    s.add_argument("-o", "--output", required=True, help="output folder")
    s.add_argument("--train", choices=["exits", "exits+last-block"],
                   help="compile the on-device trainer: the early exits' heads train (exits), or those and the "
                        "last backbone block with the final head (exits+last-block)")
    s.add_argument("--momentum", action="store_true",
                   help="with --train: compile SGD momentum buffers (2 bytes per trainable weight), so CONFIG may "
                        "set momentum > 0")
    s.add_argument("--replay-bytes", type=int, metavar="N",
                   help="with --train: bytes of the replay memory of labelled examples, replayed when training and "
                        "holding the window whose label the board asks for (default 0: none, and the board never asks "
                        "for labels; 37888 holds 11 examples of the default model, docs/training.md)")
    s.add_argument("--block-keep", type=float, metavar="F",
                   help="with --train exits+last-block: the last block's conv updates at most this fraction of its "
                        "channels a window (default 1: as CONFIG prune_keep says); 0.125 makes a trained window "
                        "about 17%% cheaper on the default model, at some accuracy (docs/RESULTS.md)")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("infer", help="run a compiled model on a board for every input of an .npz")
    s.add_argument("model_dir", help="output folder of `mcu-train compile`")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--input", required=True, help=".npz with array 'x' (N, ...model input shape)")
    s.add_argument("-o", "--output", required=True, help=".npz to write: exit, logits, logits_q, cost")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--exit", type=int, help="force exit K (0 = shallowest, -1 = final)")
    how.add_argument("--thresholds", help="confidence threshold per exit, comma-separated (default 0.9)")
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "bench", help="measure a model's cost per exit and per layer on boards; with --out or --quick, every "
                      "benchmark of docs/RESULTS.md in one report",
        description="Two modes. Per-board tables (default): the model's cost per exit and per layer on each --board "
                    "(JSON to -o, markdown to --markdown). The report (--out FILE and/or --quick): personalisation, "
                    "inference and training cost, memory, kernels, whole models and the link, as markdown in FILE "
                    "(between its generated-block markers; the rest of the file is kept), PNG plots and results.json "
                    "beside it; its sweep runs on local processes or on a Dask cluster (--scheduler).")
    s.add_argument("--board", action="append",
                   help="board (repeatable; 'all': every emulated board, in the report every board)")
    s.add_argument("--model", default="models/har.onnx", help="ONNX model (default: the shipped HAR model)")
    s.add_argument("--calib", default="models/har_calib.npz", help="calibration windows, also the inputs")
    s.add_argument("--inputs", type=int, help="per-board tables: inputs classified per exit (default 20)")
    s.add_argument("-o", "--output", help="per-board tables: JSON file (default build/bench.json)")
    s.add_argument("--markdown", help="per-board tables: also write them as markdown")
    s.add_argument("--out", help="write the report: this markdown file (e.g. docs/RESULTS.md), plots and "
                                 "results.json beside it; about an hour on 2 cores")
    s.add_argument("--quick", action="store_true",
                   help="a small report in about 2 minutes (one person, short streams, one board; default --out "
                        "build/bench-report/RESULTS.md)")
    s.add_argument("--scheduler", help="report: run the sweep on this Dask scheduler (e.g. tcp://10.0.0.5:8786) "
                                       "instead of a local process pool")
    s.add_argument("--workers", type=int, help="report: local worker processes (default: one per core)")
    s.set_defaults(func=cmd_bench, board=None)

    s = sub.add_parser("personalise", help="stream a person's HAPT windows, or your recordings, to a board with "
                                           "a trainer")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--model", default="models/har.onnx")
    s.add_argument("--calib", default="models/har_calib.npz")
    s.add_argument("--train", default="exits", choices=["exits", "exits+last-block"])
    _add_data_arguments(s, default_person=25)
    s.add_argument("--windows", type=int, default=300)
    s.add_argument("--labels", type=float, default=0.1,
                   help="fraction of windows sent with their label (--data: of the windows that have one)")
    s.add_argument("--shift", action="store_true", help="rotate the person's axes (a phone worn differently)")
    s.add_argument("--filter", default="learned", choices=["off", "learned", "random", "gradnorm"])
    s.add_argument("--keep", type=float, default=0.3, help="instance filter: fraction of windows kept")
    s.add_argument("--prune", type=float, default=0.5, help="error-map pruning: fraction of channels kept")
    s.add_argument("--block-keep", type=float, metavar="F",
                   help="with --train exits+last-block: compile the trainer so the last block keeps at most this "
                        "fraction of its channels (mcu-train compile --block-keep)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lr", type=float, help="the trainer's learning rate (default: the firmware's)")
    s.add_argument("--pseudo-threshold", type=float, help="final-exit confidence for a pseudo-label (default: the "
                                                          "firmware's)")
    s.add_argument("--threshold-max", type=float, help="highest confidence threshold the exits may adapt to "
                                                       "(default: the firmware's)")
    s.add_argument("--reference", action="store_true", help="run the numpy reference instead of a board")
    s.add_argument("-o", "--output", default="build/personalise")
    s.set_defaults(func=cmd_personalise)

    s = sub.add_parser("monitor", help="stream a person's windows to a board that personalises itself; live "
                                       "display, JSONL log, plot")
    s.add_argument("--port", help="serial URL of the board: socket://127.0.0.1:PORT (QEMU, `mcu-train flash "
                                  "--detach` prints it) or /dev/ttyACM0; for a real --board, found by its USB "
                                  "VID/PID when not given")
    s.add_argument("--board", help="the board: a real one's serial port, baud rate and timeouts come from its "
                                   "manifest")
    s.add_argument("--model",
                   help="the board's compiled model (a `mcu-train compile --train` output folder; default: the "
                        "demo's, build/demo/model); the board must run exactly this model")
    s.add_argument("--calib", help="calibration windows the model was compiled with (default models/har_calib.npz)")
    _add_data_arguments(s, default_person=27)
    s.add_argument("--labels", type=float, default=0.1,
                   help="fraction of windows sent with their label (--data: of the windows that have one)")
    s.add_argument("--label-policy", default="random", choices=["random", "active"],
                   help="random: labels of a random fraction of the windows go with TRAIN; active: the host answers "
                        "the board's label requests (LABEL), at most --labels of the windows so far")
    s.add_argument("--shift", default="none", choices=["none", "rotate"],
                   help="rotate: the placement shift (the phone carried differently; docs/data.md)")
    s.add_argument("--seed", type=int, default=0, help="seed of the rotation and the label mask")
    s.add_argument("--log", default="runs/monitor.jsonl", help="JSONL log; the plot goes next to it (.png)")
    s.add_argument("--resume", action="store_true", help="continue the run in --log from its checkpoint")
    s.add_argument("--listen", action="store_true", help="only log and display what the board reports by itself")
    s.add_argument("--windows", type=int, help="stream at most this many windows (default: all of the person's)")
    s.add_argument("--lr", type=float, help="the trainer's learning rate (default: the firmware's)")
    s.add_argument("--pseudo-threshold", type=float,
                   help="final-exit confidence for a pseudo-label (default: the firmware's)")
    s.add_argument("--filter", choices=["off", "learned", "random", "gradnorm"],
                   help="instance filter (default: the firmware's)")
    s.add_argument("--keep", type=float, help="instance filter: fraction of unlabelled windows kept")
    s.add_argument("--checkpoint-every", type=int, default=100, help="windows between checkpoints")
    s.add_argument("--rate", type=float, help="send at most this many windows per second (default: as fast as "
                                              "the board goes)")
    s.add_argument("--in-flight", type=int, default=4, choices=[1, 2, 3, 4],
                   help="TRAIN requests sent ahead of their replies (1: one at a time)")
    s.add_argument("--quiet", action="store_true", help="no live display, only the summary")
    s.set_defaults(func=cmd_monitor)

    s = sub.add_parser("demo", help="compile, build, boot in QEMU, stream a person under the placement shift "
                                    "and show the board personalising itself")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--person", type=int, default=27)
    s.add_argument("--labels", type=float, default=0.1, help="fraction of windows sent with their label")
    s.add_argument("--shift", default="rotate", choices=["none", "rotate"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--output", default="build/demo", help="folder for the model, firmware, log and plot")
    s.add_argument("--resume", action="store_true", help="continue an interrupted demo from its log and checkpoint")
    s.add_argument("--quiet", action="store_true", help="no live display, only the summary")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("pretrain", help="pretrain the early-exit CNN on HAPT, or on your labelled recordings, and "
                                        "export ONNX")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--dataset", choices=["hapt"], help="HAPT people 1-20 (the default)")
    where.add_argument("--data", metavar="SOURCE", help="your labelled recordings: a .csv, Edge Impulse .json or "
                                                        ".npz file, or a folder of them (docs/data.md)")
    s.add_argument("--classes", help="with --data: class names in logit order, comma-separated (default: every "
                                     "label in the data, sorted)")
    s.add_argument("--validation", metavar="SOURCE", help="with --data: recordings to validate on (default: the "
                                                          "last fifth of each class's windows in each recording)")
    s.add_argument("--window", type=int, default=128, help="with --data: samples per window")
    s.add_argument("--hop", type=int, help="with --data: samples between window starts (default: half a window)")
    s.add_argument("--sample-rate", type=float, help="with --data: the model's sample rate in Hz (default: the "
                                                     "first recording's)")
    s.add_argument("--resample", action="store_true", help="with --data: resample recordings at another rate")
    s.add_argument("-o", "--output", help="the ONNX model to write (default with --dataset hapt: models/har.onnx)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--epochs", type=int, default=None, help="default: the recipe's own")
    s.set_defaults(func=cmd_pretrain)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except McuTrainError as e:
        print(f"mcu-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mcu-train: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

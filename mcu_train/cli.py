"""`mcu-train` command line: parse the arguments, call mcu_train.api, print. Heavy modules are imported inside
each command so `--help` stays fast."""
import argparse
import sys

from mcu_train.errors import McuTrainError

DEFAULT_BOARD = "mps2-an386"


def _board(args):
    from mcu_train.api import board_of
    return board_of(args.board)


def cmd_boards(args):
    from mcu_train.boards import list_boards
    print(f"{'name':<16} {'cpu':<12} {'fpu':<12} {'ram':>8} {'flash':>8}  kind")
    for b in list_boards():
        print(f"{b.name:<16} {b.cpu:<12} {b.fpu or '-':<12} {b.ram_size // 1024:>6}K {b.flash_size // 1024:>6}K  "
              f"{'emulated' if b.emulated else 'real'}")


def cmd_build(args):
    from mcu_train import api
    result = api.build(args.board, model_dir=args.model_dir, out_dir=args.output)
    print(f"{result.elf}")
    print(result.size_line())


def cmd_flash(args):
    from pathlib import Path

    from mcu_train import api
    running = api.start(args.board, args.firmware, port=args.port, detach=args.detach)
    print(f"{args.board} running {Path(args.firmware).name}")
    print(f"serial: {running.url}")
    print(f"pid: {running.pid}")
    if args.detach:
        return
    print("Ctrl-C stops it.")
    try:
        running.process.wait()
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
                      quiet=False, momentum=args.momentum)


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
    api.bench(args.board or [DEFAULT_BOARD], args.model, args.calib, args.inputs, args.output, args.markdown)


def cmd_personalise(args):
    from mcu_train import api
    api.personalise(args.board, args.model, args.calib, train=args.train, person=args.person, windows=args.windows,
                    label_fraction=args.labels, shift=args.shift, filter_mode=args.filter, keep=args.keep,
                    prune=args.prune, seed=args.seed, reference=args.reference, output=args.output, lr=args.lr,
                    pseudo_threshold=args.pseudo_threshold, threshold_max=args.threshold_max)


def cmd_monitor(args):
    from mcu_train import api
    api.monitor(args.port, model=args.model, calib=args.calib, person=args.person, labels=args.labels,
                shift=args.shift, seed=args.seed, log=args.log, resume=args.resume, listen_only=args.listen,
                windows=args.windows, lr=args.lr, pseudo_threshold=args.pseudo_threshold, filter_mode=args.filter,
                keep=args.keep, checkpoint_every=args.checkpoint_every, rate=args.rate, in_flight=args.in_flight,
                quiet=args.quiet)


def cmd_demo(args):
    from mcu_train import api
    api.demo(args.board, person=args.person, labels=args.labels, shift=args.shift, seed=args.seed,
             output=args.output, resume=args.resume, quiet=args.quiet)


def cmd_pretrain(args):
    from mcu_train import api
    api.pretrain(args.output, seed=args.seed, epochs=args.epochs, dataset=args.dataset)


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

    s = sub.add_parser("bench", help="measure a model's cost per exit and per layer on boards")
    s.add_argument("--board", action="append", help="board (repeatable; 'all': every emulated board)")
    s.add_argument("--model", default="models/har.onnx", help="ONNX model (default: the shipped HAR model)")
    s.add_argument("--calib", default="models/har_calib.npz", help="calibration windows, also the inputs")
    s.add_argument("--inputs", type=int, default=20, help="inputs classified per exit")
    s.add_argument("-o", "--output", default="build/bench.json")
    s.add_argument("--markdown", help="also write the results as markdown tables (as in docs/RESULTS.md)")
    s.set_defaults(func=cmd_bench, board=None)

    s = sub.add_parser("personalise", help="stream a person's HAPT windows to a board with a trainer")
    s.add_argument("--board", default=DEFAULT_BOARD)
    s.add_argument("--model", default="models/har.onnx")
    s.add_argument("--calib", default="models/har_calib.npz")
    s.add_argument("--train", default="exits", choices=["exits", "exits+last-block"])
    s.add_argument("--person", type=int, default=25)
    s.add_argument("--windows", type=int, default=300)
    s.add_argument("--labels", type=float, default=0.1, help="fraction of windows sent with their label")
    s.add_argument("--shift", action="store_true", help="rotate the person's axes (a phone worn differently)")
    s.add_argument("--filter", default="learned", choices=["off", "learned", "random"])
    s.add_argument("--keep", type=float, default=0.3, help="instance filter: fraction of windows kept")
    s.add_argument("--prune", type=float, default=0.5, help="error-map pruning: fraction of channels kept")
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
    s.add_argument("--port", required=True, help="serial URL of the board: socket://127.0.0.1:PORT (QEMU, "
                                                 "`mcu-train flash --detach` prints it) or /dev/ttyACM0")
    s.add_argument("--model",
                   help="the board's compiled model (a `mcu-train compile --train` output folder; default: the "
                        "demo's, build/demo/model); the board must run exactly this model")
    s.add_argument("--calib", help="calibration windows the model was compiled with (default models/har_calib.npz)")
    s.add_argument("--dataset", default="hapt", choices=["hapt"], help="where the windows come from")
    s.add_argument("--person", type=int, default=27)
    s.add_argument("--labels", type=float, default=0.1, help="fraction of windows sent with their label")
    s.add_argument("--shift", default="none", choices=["none", "rotate"],
                   help="rotate: the placement shift (the phone carried differently; docs/data.md)")
    s.add_argument("--seed", type=int, default=0, help="seed of the rotation and the label mask")
    s.add_argument("--log", default="runs/monitor.jsonl", help="JSONL log; the plot goes next to it (.png)")
    s.add_argument("--resume", action="store_true", help="continue the run in --log from its checkpoint")
    s.add_argument("--listen", action="store_true", help="only log and display what the board reports by itself")
    s.add_argument("--windows", type=int, help="stream at most this many windows (default: all of the person's)")
    s.add_argument("--lr", type=float, default=0.3, help="the trainer's learning rate")
    s.add_argument("--pseudo-threshold", type=float, default=1.0,
                   help="final-exit confidence for a pseudo-label (default 1.0: only when it is certain)")
    s.add_argument("--filter", default="learned", choices=["off", "learned", "random"], help="instance filter")
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

    s = sub.add_parser("pretrain", help="pretrain the early-exit CNN on HAPT and export ONNX")
    s.add_argument("--dataset", default="hapt", choices=["hapt"])
    s.add_argument("-o", "--output", default="models/har.onnx")
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

"""`mcu-train` command line. Heavy modules are imported inside each command so `--help` stays fast."""
import argparse
import sys

from mcu_train.errors import McuTrainError

DEFAULT_BOARD = "mps2-an386"


def cmd_boards(args):
    from mcu_train.boards import list_boards
    print(f"{'name':<16} {'cpu':<12} {'fpu':<12} {'ram':>8} {'flash':>8}  kind")
    for b in list_boards():
        print(f"{b.name:<16} {b.cpu:<12} {b.fpu or '-':<12} {b.ram_size // 1024:>6}K {b.flash_size // 1024:>6}K  "
              f"{'emulated' if b.emulated else 'real'}")


def cmd_build(args):
    from mcu_train.boards import get_board
    from mcu_train.build import build_firmware
    result = build_firmware(get_board(args.board), model_dir=args.model_dir, out_dir=args.output)
    print(f"{result.elf}")
    print(result.size_line())


def cmd_flash(args):
    from mcu_train.boards import get_board
    from mcu_train.runner import flash_command
    flash_command(get_board(args.board), args.firmware, detach=args.detach, port=args.port)


def cmd_selftest(args):
    from mcu_train.boards import get_board
    from mcu_train.selftest import run_selftest
    ok = run_selftest(get_board(args.board), pings=args.pings, seed=args.seed)
    if not ok:
        sys.exit(1)


def cmd_compile(args):
    from codegen.compile import compile_model
    from mcu_train.boards import get_board
    exits = [e.strip() for e in args.exits.split(",")] if args.exits else None
    compile_model(args.model, get_board(args.board), args.output, calib=args.calib, exits=exits, train=args.train)


def cmd_infer(args):
    from mcu_train.infer import infer_command
    infer_command(args)


def cmd_bench(args):
    from mcu_train.bench import bench_command
    bench_command(args)


def cmd_personalise(args):
    from mcu_train.personalise import personalise_command
    personalise_command(args)


def cmd_monitor(args):
    from mcu_train.monitor import monitor_command
    monitor_command(args)


def cmd_demo(args):
    from mcu_train.demo import demo_command
    demo_command(args)


def cmd_pretrain(args):
    from mcu_train.pretrain import pretrain_command
    pretrain_command(args)


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
    s.add_argument("--model", default="models/har.onnx")
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
    s.add_argument("--dataset", default="hapt", choices=["hapt"])
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
    if args.command == "bench" and not args.board:
        args.board = [DEFAULT_BOARD]
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

"""`mcu-train demo` (and `make demo`): the whole story on an emulated board in a few minutes (or on a real board,
flashed through pyOCD).

Compile the committed model with the on-device trainer, build the firmware, boot it in QEMU, stream one
personalisation person's windows with 10% labels under the placement shift (the phone carried differently),
and print the summary and where the log and the plot are."""
import time
from pathlib import Path

from mcu_train.resources import DEFAULT_CALIB as DEMO_CALIB
from mcu_train.resources import DEFAULT_MODEL as DEMO_MODEL

DEMO_PERSON = 27
DEMO_OUTPUT = Path("build") / "demo"


def demo(*, board, person, labels, shift, seed, output, resume=False, quiet=False):
    """Compile, build, boot, stream and summarise (see the module's docstring); returns the run's summary."""
    from rich.console import Console

    from codegen.compile import compile_model
    from mcu_train.boards import get_board
    from mcu_train.boards.runner import runner_for, session
    from mcu_train.stream.monitor import SHIFT_NOTE, _print_end, load_model, person_stream, run_monitor, stream_config
    console = Console()
    board = get_board(board)
    out = Path(output)
    t0 = time.monotonic()
    console.rule("[bold]mcu-train demo: a board that personalises itself")
    console.print(f"1. compile the default model ({DEMO_MODEL.name}) for {board.name} with the on-device trainer (exit heads)")
    compile_model(DEMO_MODEL, board, out / "model", calib=DEMO_CALIB, quiet=True, train="exits")
    meta, compiled = load_model(out / "model", DEMO_CALIB)
    console.print("2. build the firmware")
    firmware = runner_for(board).build(out / "model", out / f"firmware-{board.name}")
    console.print(f"   {firmware.size_line()}")
    stream = person_stream(meta, person, labels, shift, seed)
    cfg = stream_config(len(meta["exits"]))
    notes = []
    if stream.rotation is not None:
        notes.append(SHIFT_NOTE.format(angle=stream.rotation_degrees()))
    else:
        notes.append("no shift: the phone is worn as in the pretraining data; expect little to gain")
    console.print(f"3. boot it ({runner_for(board).how}) and stream person {person}'s "
                  f"{len(stream)} windows in time order, {100 * labels:.0f}% of them with their label")
    for note in notes:
        console.print(f"   [yellow]{note}")
    log_path = out / "run.jsonl"
    with session(board, firmware.elf, timeout=2.0) as (running, link):
        summary, plot, _ = run_monitor(link, running.url, meta, compiled, stream, cfg, log_path, resume=resume,
                                       console=console, live=not quiet, notes=notes,
                                       title=f"person {person} on {board.name}")
    _print_end(console, summary, log_path, plot)
    second = summary["second_half"]
    if second["accuracy"] is not None and second["generic_accuracy"] is not None:
        gain = 100 * (second["accuracy"] - second["generic_accuracy"])
        verdict = "beats" if gain > 0 else "does not beat"
        console.print(f"[bold]second half of the stream: the personalised board {100 * second['accuracy']:.1f}% "
                      f"{verdict} the generic model {100 * second['generic_accuracy']:.1f}% ({gain:+.1f} points)")
    console.print(f"demo finished in {time.monotonic() - t0:.0f} s")
    if summary["stopped"] == "interrupted":
        console.print("stopped early: `mcu-train demo --resume` continues where it stopped")
        raise KeyboardInterrupt
    return summary

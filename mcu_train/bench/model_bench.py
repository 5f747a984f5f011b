"""`mcu-train bench`: cost of a compiled model on each board, measured on the board itself.
Under QEMU (-icount shift=0) the cost counter counts instructions, exactly and repeatably (resolution: one
SysTick tick, 40 instructions on mps2-an386); on silicon it counts DWT cycles. Reported: the cost of an
inference leaving at each exit, and each conv / dense step's cost per MAC."""
import json
from pathlib import Path

import numpy as np

from codegen.compile import compile_model
from codegen.files import load_npz_array
from mcu_train.boards.runner import runner_for, session
from mcu_train.link.model_client import ModelClient, load_model_meta, to_wire
from mcu_train.resources import OUTPUT_DIR


def bench_board(board, model, calib, inputs=20, work_dir=None):
    work_dir = Path(work_dir or OUTPUT_DIR / "bench" / Path(model).stem / board.name)
    compiled = compile_model(model, board, work_dir / "model", calib=calib, quiet=True)
    meta = load_model_meta(work_dir / "model")
    rows = to_wire(meta, load_npz_array(calib, "calibration data")[:inputs])  # inputs of any size: chunked
    firmware = runner_for(board).build(work_dir / "model", work_dir / "firmware")
    result = dict(board=board.name, cpu=board.cpu, model=str(model), flash_bytes=firmware.flash_bytes,
                  ram_bytes=firmware.ram_bytes, arena_bytes=compiled.arena_bytes, exits=[], layers=[])
    with session(board, firmware.elf) as (running, link):
        client = ModelClient(link, meta)
        result["unit"] = link.hello.counter_unit
        for k, macs in enumerate(meta["macs_per_exit"]):
            # The early-exit path to exit k: no earlier exit passes (threshold above 1.0), exit k always does.
            thresholds = [0xFFFFFFFF] * k + [0] * (len(meta["exits"]) - k)
            costs = [client.classify(r, thresholds_q16=thresholds).cost for r in rows]
            result["exits"].append(dict(exit=k, macs=macs, cost=float(np.mean(costs)),
                                        cost_min=int(min(costs)), cost_max=int(max(costs))))
        # The network run to its final exit without the exit heads (`mcu-train infer --exit -1`).
        result["final_only_cost"] = float(np.mean([client.classify(r, force_exit=-1).cost for r in rows]))
        # Profile the path through every exit head (no early exit passes), so every step is measured.
        client.classify(rows[0], thresholds_q16=[0xFFFFFFFF] * (len(meta["exits"]) - 1) + [0])
        step_costs = client.step_costs()
        if not board.is_host:  # stack high-water mark (stack painting) after these inferences
            result["stack_used_bytes"] = board.stack_bytes - link.link_stats()["stack_unused"]
    final = len(meta["exits"]) - 1
    result["final_only_macs"] = sum(s.macs for s in compiled.steps if s.exits_needing >> final & 1)
    for step, cost in zip(compiled.steps, step_costs):
        layer = dict(name=step.name, kernel=step.kernel, in_dims=list(step.in_dims), out_dims=list(step.out_dims),
                     macs=step.macs, cost=cost)
        if step.kernel in ("conv", "conv_dilated", "dwconv", "dense") and step.macs and cost:
            layer["cost_per_mac"] = round(cost / step.macs, 3)
        result["layers"].append(layer)
    return result


def print_results(results, console=None):
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    for r in results:
        t = Table(title=f"{r['model']} on {r['board']} ({r['cpu']}): {r['unit']}; firmware flash "
                        f"{r['flash_bytes']:,} B, RAM {r['ram_bytes']:,} B (arena {r['arena_bytes']:,} B)")
        for col in ("exit", "MACs", f"{r['unit']} / inference", f"{r['unit']} / MAC"):
            t.add_column(col, justify="right")
        for e in r["exits"]:
            t.add_row(str(e["exit"]), f"{e['macs']:,}", f"{e['cost']:,.0f}", f"{e['cost'] / e['macs']:.2f}")
        console.print(t)
        t = Table(title=f"layers on {r['board']} (one window through every exit)")
        for col in ("step", "kernel", "in (NHWC)", "out (NHWC)", "MACs", r["unit"], "per MAC"):
            t.add_column(col, justify="right")
        for i, layer in enumerate(r["layers"]):
            t.add_row(str(i), layer["kernel"], "x".join(map(str, layer["in_dims"][1:])),
                      "x".join(map(str, layer["out_dims"][1:])), f"{layer['macs']:,}", f"{layer['cost']:,}",
                      f"{layer['cost_per_mac']:.2f}" if "cost_per_mac" in layer else "")
        console.print(t)


def bench(*, boards, model, calib, inputs=20, output=None, markdown_path=None):
    """`mcu-train bench`: the model's cost per exit and per layer on each board (names; ["all"]: every
    emulated board); prints tables, writes JSON to `output` and markdown to `markdown_path`. Returns the results."""
    from mcu_train.boards import emulated_boards, get_board
    boards = emulated_boards() if boards == ["all"] else [get_board(b) for b in boards]
    results = [bench_board(b, model, calib, inputs) for b in boards]
    print_results(results)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(results, indent=1))
        print(f"results written to {output}")
    if markdown_path:
        Path(markdown_path).write_text(markdown(results))
        print(f"markdown tables written to {markdown_path}")
    return results


def markdown(results, layer_boards=None):
    """The tables docs/RESULTS.md publishes (per-layer tables for `layer_boards`, default every board)."""
    lines = ["| board | CPU | flash B | RAM B (arena) | " + " | ".join(f"exit {e['exit']}" for e in results[0]["exits"])
             + " | instr/MAC at the last exit |",
             "|---|---|---|---|" + "---|" * len(results[0]["exits"]) + "---|"]
    for b in results:
        e = b["exits"]
        lines.append(f"| {b['board']} | {b['cpu']} | {b['flash_bytes']:,} | {b['ram_bytes']:,} ({b['arena_bytes']:,}) | "
                     + " | ".join(f"{x['cost']:,.0f}" for x in e) + f" | {e[-1]['cost'] / e[-1]['macs']:.2f} |")
    lines.append("\nMACs to each exit (earlier heads included): " + ", ".join(f"{x['macs']:,}" for x in results[0]["exits"]))
    for b in results:
        if layer_boards is not None and b["board"] not in layer_boards:
            continue
        lines += [f"\nPer layer on `{b['board']}`, one window through every head ({b['unit']}):\n",
                  "| step | kernel | in (NHWC) | out (NHWC) | MACs | cost | per MAC |", "|---|---|---|---|---|---|---|"]
        for i, layer in enumerate(b["layers"]):
            lines.append(f"| {i} | {layer['kernel']} | {'x'.join(map(str, layer['in_dims'][1:]))} | "
                         f"{'x'.join(map(str, layer['out_dims'][1:]))} | {layer['macs']:,} | {layer['cost']:,} | "
                         f"{layer.get('cost_per_mac', '')} |")
    return "\n".join(lines) + "\n"

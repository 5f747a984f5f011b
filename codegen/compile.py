"""`mcu-train compile`: ONNX (+ calibration windows) -> model.h / model.c for one board, with reports.

Pipeline: import (codegen.onnx_import) -> passes (BatchNorm folding, activation fusion, MACs) ->
quantisation (codegen.quantize) -> lowering to kernel steps (codegen.lower) -> memory plan
(codegen.planner) -> C through jinja2 templates (codegen/templates). Everything is computed in memory
first and written at the end, so an error leaves no output behind."""
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from codegen import __version__, passes, planner, trainer
from codegen.ir import CompileError
from codegen.lower import conv_min_scratch_bytes, conv_scratch_bytes, lower, pack_conv_filter
from codegen.onnx_import import canonical_perm, import_onnx
from codegen.quantize import assign_qparams, calibrate, load_calibration, quantize_ops
from codegen.reference import Reference, confidence_table

TEMPLATES = Path(__file__).parent / "templates"
# RAM the firmware needs besides the arena: protocol buffers (rx, reply, error), the persistence page buffers
# and a margin for its own statics (measured 3.9 KB with a trainer); the stack reserve and the UART's receive
# ring come from the board manifest.
RUNTIME_RAM_BYTES = 4 * 1024
# Flash the firmware needs besides the model's constants: runtime, kernels, startup (measured ~14 KB).
RUNTIME_FLASH_BYTES = 24 * 1024
C_TYPES = {"filter": "int8_t", "bias": "int32_t", "multiplier": "int32_t", "shift": "int32_t", "table": "int8_t",
           "input2": "int8_t", "rows": "int32_t", "cols": "int32_t", "packed": "int32_t"}


@dataclass
class Compiled:
    graph: object
    steps: list
    buffers: list
    arena_bytes: int
    weights_bytes: int
    reference: Reference
    meta: dict  # model.json
    memory: dict  # memory.json
    tables: list  # per exit: the confidence table (exp(-d * logit scale) in Q16)
    train: object = None  # codegen.trainer's plan when the trainer is compiled in

    @property
    def buffer_offsets(self):
        return {b.name: b.offset for b in self.buffers}


def _carray(arr):
    flat = np.asarray(arr).reshape(-1)
    items = [str(int(v)) for v in flat]
    return ",\n    ".join(", ".join(items[i:i + 24]) for i in range(0, len(items), 24))


def _plan(steps, input_name, input_size, extra=(), pos=None, extend=None):
    """Buffers with lifetimes, then offsets; returns the buffers (name -> Buffer) and the arena size.
    Lifetimes are in step indices, or in the indices `pos[i]` of a longer timeline that interleaves other
    events (the trainer's); `extra` buffers join the plan as they are; `extend` lengthens the lifetime of
    named tensors and scratch buffers (name -> last use)."""
    pos = pos or list(range(len(steps)))
    last_use = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            last_use[t] = pos[i]
    for t, last in (extend or {}).items():
        last_use[t] = max(last_use.get(t, 0), last)
    buffers = {input_name: planner.Buffer(input_name, input_size, 0, last_use.get(input_name, 0))}
    for i, s in enumerate(steps):
        name, size = (s.view[0], s.view[2]) if s.view else (s.output, int(np.prod(s.out_dims)))
        if name not in buffers:  # the first of the steps writing into a shared buffer starts its lifetime
            buffers[name] = planner.Buffer(name, size, pos[i], max(pos[i], last_use.get(name, pos[i])))
        if s.scratch_bytes:  # steps sharing a scratch buffer get the largest size and the union of lifetimes
            b = buffers.get(s.scratch) or planner.Buffer(s.scratch, 0, pos[i], pos[i])
            buffers[s.scratch] = planner.Buffer(s.scratch, max(b.size, s.scratch_bytes), min(b.first, pos[i]),
                                                max(b.last, pos[i], last_use.get(s.scratch, 0)))
    for b in extra:
        buffers[b.name] = b
    arena = planner.plan(list(buffers.values()))
    overlaps = planner.check_overlaps(list(buffers.values()))
    if overlaps:
        raise AssertionError(f"memory plan overlaps: {overlaps}")  # a planner bug, never user input
    return buffers, arena


def _pack_conv_filters(steps, flash_left):
    """DSP convolutions whose weights never change get them widened at compile time (lower.pack_conv_filter): the
    board reads the records from flash instead of widening a block of them into its scratch on every call, so the
    arena holds no weights and no pass waits for them. It costs about twice the filter's bytes in flash: the
    layers with the most MACs go first, as long as the flash has room."""
    for s in sorted((s for s in steps if s.kernel == "conv"), key=lambda s: -s.macs):
        a = s.arrays
        packed = pack_conv_filter(a["filter"], a["bias"], a["multiplier"], a["shift"], s.q["output_offset"])
        if packed.nbytes <= flash_left:
            flash_left -= packed.nbytes
            a["packed"] = packed
            kh, kw = s.q["kernel"]
            s.scratch_bytes = conv_scratch_bytes(s.in_dims, kh, kw, s.out_dims[3], True, quads=0)


def _fit_trained_conv_scratch(steps, plan):
    """Trainer builds: the convolutions that widen their weights at run time (those the trainer updates, which
    cannot be packed, and any the flash had no room to pack). Their scratch starts at the kernel's least, then,
    costliest first, grows to the most quads (its full-speed size at most) that leave the training arena as it
    is: speed wherever the scratch fits under the peak, never a larger arena. Returns the final plan."""
    trained = [s for s in steps if s.kernel == "conv" and s.scratch_bytes and "packed" not in s.arrays]
    for s in trained:
        s.scratch_bytes = conv_min_scratch_bytes(*s.q["kernel"], s.in_dims[3])
    arena = plan()[1]
    for s in sorted(trained, key=lambda s: -s.macs):
        smallest, full = s.scratch_bytes, conv_scratch_bytes(s.in_dims, *s.q["kernel"], s.out_dims[3], True)
        quads = (s.out_dims[3] + 3) // 4
        while quads >= 1:
            s.scratch_bytes = min(full, conv_scratch_bytes(s.in_dims, *s.q["kernel"], s.out_dims[3], True, quads))
            if plan()[1] <= arena:
                break
            quads //= 2
        else:
            s.scratch_bytes = smallest
    return plan()


def build(onnx_path, board, calib=None, exits=None, train=None, momentum=False, replay_bytes=None, block_keep=None):
    if momentum and train is None:
        raise CompileError("--momentum needs --train (it adds the trainer's momentum buffers)")
    if replay_bytes is not None and train is None:
        raise CompileError("--replay-bytes needs --train (it sizes the trainer's replay memory)")
    if replay_bytes is not None and replay_bytes < 0:
        raise CompileError(f"--replay-bytes {replay_bytes}: a number of bytes, at least 0")
    graph, onnx_model = import_onnx(onnx_path, exits)
    if train is not None and graph.values:
        raise CompileError(f"{onnx_path} has no classes (its output is values): --train personalises "
                           "classifier exits and cannot train it")
    if train is not None and graph.input_transpose != list(canonical_perm(len(graph.input_transpose))):
        raise CompileError(f"{onnx_path} takes a channels-last input: --train needs a channels-first (N, C, L) "
                           "or (N, C, H, W) input")
    passes.run_passes(graph)
    ranges = None
    if calib is not None:
        ranges = calibrate(onnx_model, graph, load_calibration(calib, graph.shapes[graph.input]))
    elif not graph.given_qparams:
        raise CompileError(f"{onnx_path} is a float model: pass --calib windows.npz (calibration inputs) "
                           "or give a QDQ model quantised by onnxruntime")
    qparams = assign_qparams(graph, ranges)
    quantize_ops(graph)
    steps = lower(graph, board.dsp)
    tables = [confidence_table(qparams[e][0]) for e in graph.exits]
    train_spec = None
    if train is not None:
        if any(s.view for s in steps):
            raise CompileError(f"{onnx_path}: --train cannot train a model whose Concat is written in place")
        train_spec = trainer.plan(graph, steps, train, momentum,
                                  trainer.DEFAULT_REPLAY_BYTES if replay_bytes is None else replay_bytes,
                                  block_keep)
    if board.dsp and not getattr(board, "mve", False):
        trained = {i for u in train_spec.units for i in u.steps} if train_spec else set()
        flash_left = (board.flash.size - RUNTIME_FLASH_BYTES - sum(t.nbytes for t in tables) -
                      sum(a.nbytes for s in steps for a in s.arrays.values()) -
                      (train_spec.params_bytes if train_spec else 0))
        _pack_conv_filters([s for i, s in enumerate(steps) if i not in trained], flash_left)
    stored = [graph.shapes[graph.input][a] for a in graph.input_transpose]  # the input as the board stores it
    input_dims = tuple(stored) if len(stored) == 4 else (1, 1, *stored[1:]) if len(stored) == 3 else (1, 1, 1,
                                                                                                      stored[1])
    input_size = int(np.prod(input_dims))
    buffers, arena = _plan(steps, graph.input, input_size)
    inference_arena = arena
    if train_spec is not None:
        tbufs, extend, step_pos = trainer.training_buffers(train_spec, steps)
        plan = functools.partial(_plan, steps, graph.input, input_size, tbufs, step_pos, extend)
        buffers, arena = _fit_trained_conv_scratch(steps, plan) if board.dsp else plan()
        train_spec.offsets = {b.name: b.offset for b in tbufs}
    weights_bytes = sum(a.nbytes for s in steps for a in s.arrays.values()) + sum(t.nbytes for t in tables)
    md = graph.metadata
    classes = md.get("mcu_train.classes", "")
    exit_info = []
    for k, e in enumerate(graph.exits):
        scale, zp = qparams[e]
        shape = graph.shapes.get(graph.exit_names[k], graph.shapes[e])
        info = dict(name=graph.exit_names[k], classes=int(np.prod(shape[1:])), scale=scale, zero_point=zp,
                    softmax=bool(graph.softmax[k]))
        if graph.values:  # the values in ONNX order are the board's NHWC output moved back
            info.update(shape=[int(d) for d in shape],
                        transpose=[int(a) for a in np.argsort(canonical_perm(len(shape)))])
        exit_info.append(info)
    meta = dict(
        source=str(onnx_path), board=board.name, input=graph.input, input_shape=list(graph.shapes[graph.input]),
        input_dims_nhwc=list(input_dims), input_scale=qparams[graph.input][0],
        input_zero_point=qparams[graph.input][1], exits=exit_info,
        classes=classes.split(",") if classes else [], metadata=md,
        macs_per_exit=passes.macs_per_exit(graph),
        input_transpose=[int(a) for a in graph.input_transpose], output_kind="values" if graph.values else "logits")
    if train_spec is not None:
        weights_bytes += train_spec.params_bytes  # the personalised heads' initial parameters, kept in flash
        meta["train"] = trainer.describe(train_spec)
    memory = dict(
        arena_bytes=inference_arena, training_arena_bytes=arena,
        trainable_parameters=train_spec.trainable_parameters if train_spec else 0,
        weights_bytes=int(weights_bytes), macs_per_exit=meta["macs_per_exit"],
        board=board.name, board_ram_bytes=board.ram.size, board_flash_bytes=board.flash.size,
        runtime_ram_bytes=RUNTIME_RAM_BYTES + board.stack_bytes + getattr(board, "rx_buffer_bytes", 0),
        runtime_flash_bytes=RUNTIME_FLASH_BYTES,
        tensors=[dict(name=b.name, offset=b.offset, size=b.size, first_use=b.first, last_use=b.last)
                 for b in sorted(buffers.values(), key=lambda b: (b.first, b.offset))])
    if train_spec is not None:
        memory["train"] = trainer.memory_report(train_spec, buffers)
    ram_needed = arena + memory["runtime_ram_bytes"]
    flash_needed = weights_bytes + RUNTIME_FLASH_BYTES
    if not board.is_host and ram_needed > board.ram.size:
        raise CompileError(f"the model does not fit {board.name}'s RAM: it needs {ram_needed:,} B "
                           f"(arena {arena:,} B + runtime {memory['runtime_ram_bytes']:,} B), "
                           f"{board.ram.size:,} B available")
    if not board.is_host and flash_needed > board.flash.size:
        raise CompileError(f"the model does not fit {board.name}'s flash: it needs {flash_needed:,} B "
                           f"(weights {weights_bytes:,} B + runtime {RUNTIME_FLASH_BYTES:,} B), "
                           f"{board.flash.size:,} B available")
    reference = Reference(steps, graph.input, tables, graph.values)
    return Compiled(graph, steps, list(buffers.values()), arena, int(weights_bytes), reference, meta, memory,
                    tables, train_spec)


def _f32array(arr):
    items = [trainer.f32_literal(v) for v in np.asarray(arr, np.float32).reshape(-1)]
    return ",\n    ".join(", ".join(items[i:i + 8]) for i in range(0, len(items), 8))


def render(compiled, source_name, train_config=None):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["carray"] = _carray
    env.filters["f32"] = trainer.f32_literal
    env.filters["f32array"] = _f32array
    off = compiled.buffer_offsets
    views = []
    for i, s in enumerate(compiled.steps):
        out_offset = off[s.view[0]] + s.view[1] if s.view else off[s.output]
        v = dict(s.__dict__, id=i, in_offsets=[off[t] for t in s.inputs], out_offset=out_offset,
                 scratch_offset=off.get(s.scratch, 0), out_size=int(np.prod(s.out_dims)))
        if s.kernel in ("conv", "conv_dilated"):
            f = s.arrays["filter"].shape
            v["filter_dims"] = [f[0], f[1], f[2], f[3]]
        elif s.kernel == "dwconv":
            f = s.arrays["filter"].shape
            v["filter_dims"] = [1, f[0], f[1], f[2]]
        elif s.kernel == "dense":
            v["filter_dims"] = [s.arrays["filter"].shape[0], 1, 1, s.arrays["filter"].shape[1]]
        views.append(v)
    exits = [dict(e, table=t) for e, t in zip(compiled.meta["exits"], compiled.tables)]
    exit_step = {s.exit_index: s for s in compiled.steps if s.exit_index >= 0}
    exit_offsets = [off[exit_step[k].output] for k in range(len(exits))]
    ctx = dict(version=__version__, source=source_name, steps=views, exits=exits, ctype=C_TYPES,
               arena_bytes=compiled.arena_bytes, weights_bytes=compiled.weights_bytes,
               input_size=int(np.prod(compiled.meta["input_dims_nhwc"])),
               input_dims=compiled.meta["input_dims_nhwc"], input_offset=off[compiled.graph.input],
               input_scale=compiled.meta["input_scale"], input_zero_point=compiled.meta["input_zero_point"],
               max_classes=max(e["classes"] for e in exits), exit_offsets=exit_offsets, values=compiled.graph.values,
               plan_text=planner.render(compiled.buffers, compiled.arena_bytes))
    files = {}
    if compiled.train is not None:
        from codegen.trainer_abi import TrainConfig
        config = train_config or TrainConfig.default(len(exits))
        files["model_train.c"] = env.get_template("model_train.c.j2").render(
            ctx, **trainer.render_context(compiled.train, compiled, config))
    # The hash covers everything the C says, so a host can tell whether a board runs this exact model.
    draft = env.get_template("model.c.j2").render(ctx, hash=[0] * 16)
    digest = hashlib.sha256((draft + files.get("model_train.c", "")).encode()).digest()[:16]
    ctx["hash"] = list(digest)
    files.update({"model.c": env.get_template("model.c.j2").render(ctx),
                  "model.h": env.get_template("model.h.j2").render(ctx)})
    return files, digest.hex()


# Every file `mcu-train compile` may write: a new compile removes those it does not write again.
OUTPUT_FILES = ("model.c", "model.h", "model_train.c", "model.json", "memory.json", "plan.txt", "model_qdq.onnx")


def write_outputs(out_dir, files):
    """Write every file into a temporary folder, then move them into place, then remove the outputs of an
    earlier compile that this one does not write (a stale model_train.c would change the next build):
    all or nothing, and the folder then holds exactly this compile's files."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".compile-", dir=out_dir.parent))
    try:
        for name, content in files.items():
            path = tmp / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        out_dir.mkdir(exist_ok=True)
        for name in files:
            os.replace(tmp / name, out_dir / name)
        for name in OUTPUT_FILES:
            if name not in files:
                (out_dir / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compile_model(onnx_path, board, out_dir, calib=None, exits=None, quiet=False, train=None, momentum=False,
                  replay_bytes=None, block_keep=None):
    from codegen.qdq_export import export_qdq
    t0 = time.monotonic()
    compiled = build(onnx_path, board, calib, exits, train, momentum, replay_bytes, block_keep)
    sources, model_hash = render(compiled, Path(onnx_path).name)
    compiled.meta["model_hash"] = model_hash
    compiled.memory["model_hash"] = model_hash
    files = dict(sources)
    files["model.json"] = json.dumps(compiled.meta, indent=1)
    files["memory.json"] = json.dumps(compiled.memory, indent=1)
    files["plan.txt"] = planner.render(compiled.buffers, compiled.arena_bytes) + "\n"
    files["model_qdq.onnx"] = export_qdq(compiled.graph).SerializeToString()
    write_outputs(out_dir, files)
    if not quiet:
        print_summary(compiled, out_dir, time.monotonic() - t0)
    return compiled


def print_summary(compiled, out_dir, seconds):
    m = compiled.memory
    print(f"compiled {compiled.meta['source']} for {m['board']} in {seconds:.1f} s -> {out_dir}/")
    exits = compiled.meta["exits"]
    if compiled.graph.values:
        print(f"  {len(compiled.steps)} kernel steps, output {exits[0]['name']}: {exits[0]['classes']} values "
              "(no classes: no confidence, no early exit)")
    else:
        print(f"  {len(compiled.steps)} kernel steps, {len(exits)} exits: "
              + ", ".join(f"{e['name']} ({e['classes']} classes{', Softmax absorbed' if e['softmax'] else ''})"
                          for e in exits))
    print("  MACs to each exit: " + ", ".join(f"{v:,}" for v in m["macs_per_exit"]))
    print(f"  arena {m['arena_bytes']:,} B + runtime {m['runtime_ram_bytes']:,} B of {m['board_ram_bytes']:,} B RAM; "
          f"weights {m['weights_bytes']:,} B + runtime {m['runtime_flash_bytes']:,} B of "
          f"{m['board_flash_bytes']:,} B flash")
    if compiled.train is not None:
        t = m["train"]
        print(f"  training ({t['mode']}{', momentum' if compiled.train.momentum else ''}): "
              f"{m['trainable_parameters']:,} parameters in {len(t['units'])} exit(s), served in int8; arena "
              f"{m['arena_bytes']:,} B for inference only, {m['training_arena_bytes']:,} B with training "
              f"(checkpoint {t['checkpoint_bytes']:,} B)")
        if t["replay"]["slots"]:
            print(f"  replay memory: {t['replay']['slots']} labelled examples of {t['replay']['example_bytes']:,} B and "
                  f"the pending slot, {t['replay']['bytes']:,} B of the {t['replay']['budget_bytes']:,} B budget")

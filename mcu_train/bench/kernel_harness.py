"""Run the int8 kernels (firmware/kernels) on a board: a table of cases is compiled into a small harness
program (firmware/kernels/harness), which prints a checksum of every output. Used by the on-target tests
(DSP path vs reference path vs numpy) and by the kernel benchmark (mcu_train/kernel_bench.py).

Bulk data never travels: the board and :meth:`KernelCase.data` both generate inputs and filters from the
case's seed with xorshift32. Expected outputs come from the numpy golden model (codegen.int8_ops)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen import fmath
from mcu_train.resources import FIRMWARE_DIR

KERNELS_DIR = FIRMWARE_DIR / "kernels"
HARNESS_DIR = KERNELS_DIR / "harness"
OP_CODES = {"conv": 1, "depthwise": 2, "fc": 3, "max_pool": 4, "avg_pool": 5, "add": 6, "relu": 7, "requantize": 8}
REQUANT_EDGES = (-2**31, -2**31 + 1, -1, 0, 1, 1 << 30, 2**31 - 2, 2**31 - 1)


class XorShift32(fmath.XorShift32):
    """xorshift32 (13, 17, 5), also the generator of mt_kernel_harness.c. A value is the top byte of a draw."""

    def __init__(self, seed: int):
        if not 0 < seed < 2**32:
            raise ValueError("seed must be a non-zero uint32")
        super().__init__(seed)

    def int8(self, n: int, weights: bool = False) -> np.ndarray:
        """n int8 values; weights=True maps -128 to -127 (symmetric weights)."""
        v = np.array([self.next() >> 24 for _ in range(n)], dtype=np.uint8).view(np.int8)
        if weights:
            v = np.where(v == -128, -127, v).astype(np.int8)
        return v


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _out_len(n, k, s, pa, pb):
    return (n + pa + pb - k) // s + 1


@dataclass
class KernelCase:
    """One kernel invocation. ``input`` is (N, H, W, C) (fc: (N, 1, 1, K); add / relu: (size, 1, 1, 1));
    ``kernel`` is (KH, KW); ``c_out`` is C_out (conv) or M (fc). multiplier / shift are per output channel
    (avg_pool: the table by padded-tap count; add: unused, see ``add``). ``packed`` (conv): the harness passes
    the filter's records made at compile time (codegen.lower.pack_conv_filter, in flash) instead of letting the
    kernel widen the weights into its scratch at run time."""
    op: str
    seed: int
    input: tuple
    kernel: tuple = (1, 1)
    c_out: int = 0
    ch_mult: int = 1
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    input_offset: int = 0
    output_offset: int = 0
    act_min: int = -128
    act_max: int = 127
    bias: list | None = None
    multiplier: list = field(default_factory=lambda: [0])
    shift: list = field(default_factory=lambda: [0])
    add: dict | None = None
    name: str = ""
    packed: bool = False  # conv: the filter packed at compile time (as the compiler deploys it on DSP boards)

    @property
    def op_code(self) -> int:
        return OP_CODES[self.op]

    @property
    def input_dims(self) -> tuple:
        return tuple(int(v) for v in self.input)

    @property
    def filter_dims(self) -> tuple:
        n, h, w, c = self.input_dims
        kh, kw = self.kernel
        return {"conv": (self.c_out, kh, kw, c), "depthwise": (1, kh, kw, c * self.ch_mult),
                "fc": (self.c_out, 1, 1, h * w * c), "max_pool": (1, kh, kw, 1), "avg_pool": (1, kh, kw, 1),
                "add": (1, 1, 1, 1), "relu": (1, 1, 1, 1), "requantize": (1, 1, 1, 1)}[self.op]

    @property
    def output_dims(self) -> tuple:
        n, h, w, c = self.input_dims
        if self.op in ("add", "relu"):
            return (n, h, w, c)
        if self.op == "requantize":
            return (n, 1, 1, 4)  # int32 results, as bytes
        if self.op == "fc":
            return (n, 1, 1, self.c_out)
        t, l, b, r = self.padding
        oh = _out_len(h, self.kernel[0], self.stride[0], t, b)
        ow = _out_len(w, self.kernel[1], self.stride[1], l, r)
        co = {"conv": self.c_out, "depthwise": c * self.ch_mult}.get(self.op, c)
        return (n, oh, ow, co)

    @property
    def add_fields(self) -> list:
        a = self.add or {}
        keys = ("input1_offset", "input1_multiplier", "input1_shift", "input2_offset", "input2_multiplier",
                "input2_shift", "left_shift", "output_offset", "output_multiplier", "output_shift")
        return [int(a.get(k, 0)) for k in keys]

    def macs(self) -> int:
        """Multiply-accumulates, padded taps included (as CMSIS-NN figures are quoted)."""
        out = int(np.prod(self.output_dims))
        if self.op == "conv":
            return out * int(np.prod(self.filter_dims[1:]))
        if self.op == "depthwise":
            return out * self.kernel[0] * self.kernel[1]
        if self.op == "fc":
            return out * self.filter_dims[3]
        return 0

    def scratch_bytes(self, dsp: bool = True) -> int:
        """The kernel's scratch size query on the DSP path (an upper bound of every path), or on the plain C
        path (dsp=False)."""
        from codegen.lower import conv_scratch_bytes, dwconv_scratch_bytes
        if self.op == "conv":
            return conv_scratch_bytes(self.input_dims, *self.kernel, self.c_out, dsp=dsp,
                                      quads=0 if self.packed else None)
        if self.op == "depthwise":
            return dwconv_scratch_bytes(self.input_dims, *self.kernel, self.input_dims[3] * self.ch_mult, dsp=dsp)
        return 0

    def describe(self) -> str:
        if self.name:
            return self.name
        return (f"{self.op} in={self.input_dims} k={tuple(self.kernel)} c_out={self.c_out} mult={self.ch_mult} "
                f"stride={tuple(self.stride)} pad={tuple(self.padding)}{' packed' if self.packed else ''}")

    def can_pack(self) -> bool:
        """A conv whose packed scratch (sized for padding up to KW - 1 on each side) holds its input band."""
        return self.op == "conv" and self.padding[1] + self.padding[3] <= 2 * (self.kernel[1] - 1)

    def packed_filter(self) -> list[int]:
        """The int32 words of the filter packed as the compiler packs it (codegen.lower.pack_conv_filter)."""
        from codegen.lower import pack_conv_filter
        bias = np.zeros(self.c_out, np.int64) if self.bias is None else np.asarray(self.bias)
        return [int(v) for v in pack_conv_filter(self.data()["w"], bias, np.asarray(self.multiplier),
                                                  np.asarray(self.shift), self.output_offset)]

    def data(self) -> dict:
        """The arrays the board generates from the seed (same order: input, input2, filter)."""
        rng = XorShift32(self.seed)
        if self.op == "requantize":
            t = np.zeros((self.input_dims[0], 3), np.int64)
            for i in range(len(t)):
                t[i] = rng.next(), rng.next(), rng.next() % 62 - 31
                if i % 4 == 0:
                    t[i, :2] = REQUANT_EDGES[rng.next() & 7], REQUANT_EDGES[rng.next() & 7]
            t[:, :2] = np.where(t[:, :2] >= 2**31, t[:, :2] - 2**32, t[:, :2])
            return {"acc": t[:, 0], "multiplier": t[:, 1], "shift": t[:, 2]}
        d = {"x": rng.int8(int(np.prod(self.input_dims))).reshape(self.input_dims)}
        if self.op == "add":
            d["x2"] = rng.int8(int(np.prod(self.input_dims))).reshape(self.input_dims)
        if self.op in ("conv", "depthwise", "fc"):
            d["w"] = rng.int8(int(np.prod(self.filter_dims)), weights=True).reshape(self.filter_dims)
        return d

    def reference(self) -> np.ndarray:
        """Expected output from the numpy golden model (ValueError where the kernel must refuse)."""
        from codegen import int8_ops as R
        from codegen.quant import requantize
        d = self.data()
        if self.op == "requantize":
            return requantize(d["acc"], d["multiplier"], d["shift"]).astype("<i4").view(np.int8)
        x = d["x"]
        q = dict(input_offset=self.input_offset, output_offset=self.output_offset,
                 multiplier=np.asarray(self.multiplier), shift=np.asarray(self.shift), act_min=self.act_min,
                 act_max=self.act_max)
        bias = None if self.bias is None else np.asarray(self.bias, np.int32)
        if self.op == "conv":
            return R.conv2d(x, d["w"], bias, stride=self.stride, padding=self.padding, **q)
        if self.op == "depthwise":
            return R.depthwise_conv2d(x, d["w"], bias, ch_mult=self.ch_mult, stride=self.stride,
                                      padding=self.padding, **q)
        if self.op == "fc":
            return R.fully_connected(x.reshape(x.shape[0], -1), d["w"].reshape(self.c_out, -1), bias, **q)
        if self.op == "max_pool":
            return R.max_pool2d(x, self.kernel, self.stride, self.padding, self.act_min, self.act_max)
        if self.op == "avg_pool":
            return R.avg_pool2d(x, self.kernel, self.stride, self.padding, **q)
        if self.op == "add":
            return R.add(x, d["x2"], act_min=self.act_min, act_max=self.act_max, **self.add)
        if self.op == "relu":
            return R.relu(x, self.act_min, self.act_max)
        raise ValueError(self.op)

    def expected(self) -> tuple[int, int]:
        """(status, fnv1a of the output) the harness must print: status 0 with the numpy output's checksum,
        or -1 (MT_ARG_ERROR) when the golden model refuses the arguments."""
        try:
            return 0, fnv1a(self.reference().tobytes())
        except ValueError:
            return -1, None


def _buffer_sizes(cases: list[KernelCase], dsp: bool) -> dict:
    """The harness's buffers for `cases`: the largest input, filter, output and scratch, in bytes."""
    sizes = lambda f: max([int(np.prod(f(c))) for c in cases] + [1])  # noqa: E731
    return dict(max_input=sizes(lambda c: c.input_dims), max_filter=sizes(lambda c: c.filter_dims),
                max_output=sizes(lambda c: c.output_dims), max_scratch=max([c.scratch_bytes(dsp) for c in cases] + [4]))


def _harness_ram(cases: list[KernelCase], dsp: bool) -> int:
    b = _buffer_sizes(cases, dsp)
    return 2 * b["max_input"] + b["max_filter"] + b["max_output"] + b["max_scratch"]  # two inputs (add)


def render_cases(cases: list[KernelCase], dsp: bool = True) -> str:
    """The C table hx_cases.h for `cases` (template firmware/kernels/harness/hx_cases.h.j2); dsp=False sizes
    the scratch for the plain C path."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HARNESS_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("hx_cases.h.j2").render(cases=cases, **_buffer_sizes(cases, dsp))


def build_harness(board, cases: list[KernelCase], out_dir, reference: bool = False, defines=()) -> Path:
    """Build the harness for `board` with the cases compiled in; reference=True forces the plain C path;
    `defines` are extra preprocessor definitions for the kernels."""
    from mcu_train.boards.build import build_elf
    out_dir = Path(out_dir)
    gen = out_dir / ("gen_ref" if reference else "gen_dsp")
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "hx_cases.h").write_text(render_cases(cases, dsp=board.dsp and not reference))
    sources = [HARNESS_DIR / "mt_kernel_harness.c", *sorted(KERNELS_DIR.glob("mt_*.c"))]
    name = "harness_ref.elf" if reference else "harness_dsp.elf"
    return build_elf(board, sources, out_dir / name, include_dirs=[KERNELS_DIR, HARNESS_DIR, gen],
                     defines=[*(["MT_FORCE_REFERENCE"] if reference else []), *defines]).elf


HARNESS_RAM_RESERVE = 1024  # the harness's other static data besides its buffers and the stack


def fit_cases(cases: list[KernelCase], board) -> list[KernelCase]:
    """`cases` for one harness in `board`'s RAM: unchanged where they fit, else each case whose input, output or
    filter is above its share of the RAM (a sixth, a sixth, a third) shrunk to it (see _shrunk)."""
    budget = board.ram.size - board.stack_bytes - HARNESS_RAM_RESERVE
    if _harness_ram(cases, board.dsp) <= budget:
        return list(cases)
    fitted = [_shrunk(c, budget // 6, budget // 3, budget // 6) for c in cases]
    if _harness_ram(fitted, board.dsp) > budget:
        raise ValueError(f"the kernel cases do not fit {board.name}'s RAM even shrunk")
    return fitted


def _shrunk(case: KernelCase, max_input: int, max_filter: int, max_output: int) -> KernelCase:
    """A copy of `case` with its input and output within max_input / max_output bytes and its filter within
    max_filter: fewer images, then rows, columns and input channels (add, relu, requantize: fewer values; avg_pool
    keeps its rows and columns, which its multiplier table depends on), then fewer output channels; kernel,
    stride, padding, offsets, clamps and the per-channel values of the channels kept are unchanged."""
    import dataclasses
    size = lambda dims: int(np.prod(dims))  # noqa: E731
    c = dataclasses.replace(case)
    if size(c.input_dims) <= max_input and size(c.output_dims) <= max_output and size(c.filter_dims) <= max_filter:
        return c
    c.name = f"{case.name or case.describe()}, shrunk"

    def smaller(dims, i, least):
        return tuple(max(least, v // 2) if j == i else v for j, v in enumerate(dims))

    def keep_channels(n):
        c.multiplier, c.shift = c.multiplier[:n], c.shift[:n]
        c.bias = None if c.bias is None else c.bias[:n]

    while size(c.input_dims) > max_input or size(c.output_dims) > max_output:
        n, h, w, ch = c.input_dims
        kh, kw = c.kernel
        t, l, b, r = c.padding
        spatial = c.op not in ("fc", "add", "relu", "requantize", "avg_pool")
        least = (1, max(1, kh - t - b), max(1, kw - l - r), 1)  # at least one output row and column
        i = next((i for i, v in enumerate((n, h, w, ch)) if v > least[i] and (spatial or i in (0, 3))), None)
        if i is None:
            raise ValueError(f"cannot shrink {case.describe()}")
        c.input = smaller(c.input_dims, i, least[i])
        if i == 3 and c.op == "depthwise":
            keep_channels(c.input_dims[3] * c.ch_mult)
    while size(c.filter_dims) > max_filter:
        if c.op not in ("conv", "fc") or c.c_out == 1:
            raise ValueError(f"cannot shrink {case.describe()}")
        c.c_out = max(1, c.c_out // 2)
        keep_channels(c.c_out)
    return c


RESULT = re.compile(rb"^R (\d+) (-?\d+) ([0-9a-f]{8})$", re.M)


def parse_results(output: bytes, n_cases: int) -> list[tuple[int, int]]:
    """[(status, checksum)] per case from the harness's UART output."""
    got = {int(m[1]): (int(m[2]), int(m[3], 16)) for m in RESULT.finditer(output)}
    if b"DONE" not in output or len(got) != n_cases:
        raise RuntimeError(f"harness output incomplete ({len(got)}/{n_cases} cases): {output[-300:]!r}")
    return [got[i] for i in range(n_cases)]


def run_harness(board, elf, n_cases: int, timeout: float = 120) -> list[tuple[int, int]]:
    from mcu_train.boards.runner import run_to_exit
    code, output = run_to_exit(board, elf, timeout=timeout)
    if code != 0:
        raise RuntimeError(f"harness exited with {code}: {output[-300:]!r}")
    return parse_results(output, n_cases)


# ---------------------------------------------------------------------------------------------------------------
# Case sets
# ---------------------------------------------------------------------------------------------------------------

def _quant(rng, n, taps, spread=2.0):
    """Per-channel (multiplier, shift) that map a sum of `taps` random int8 products onto about +-50 (a
    uniform int8 value has a standard deviation of about 74), times a random factor in [1/spread, spread]."""
    from codegen.quant import quantize_multipliers
    centre = 50.0 / (np.sqrt(taps) * 74.0 * 74.0)
    m, s = quantize_multipliers(centre * np.exp(rng.uniform(-np.log(spread), np.log(spread), n)))
    return [int(v) for v in m], [int(v) for v in s]


def random_cases(seed: int = 0, count: int = 70) -> list[KernelCase]:
    """Randomised shapes for every kernel: odd channel counts and lengths, strides, asymmetric padding,
    zero points, clamps, extreme multipliers / shifts."""
    from codegen.quant import add_params, avg_pool_multipliers, avg_pool_num_multipliers
    rng = np.random.default_rng(seed)
    ops = ["conv", "conv", "conv", "depthwise", "depthwise", "fc", "fc", "max_pool", "avg_pool", "add", "relu"]
    cases = []
    while len(cases) < count:
        op = ops[len(cases) % len(ops)]
        n = int(rng.integers(1, 3))
        h = 1 if rng.random() < 0.4 else int(rng.integers(2, 9))
        w, c = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        kh = 1 if h == 1 else int(rng.integers(1, min(h, 3) + 1))
        kw = int(rng.integers(1, min(w, 5) + 1))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = (int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw)))
        act = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.random() < 0.3 else [-128, 127]
        kc = KernelCase(op=op, seed=int(rng.integers(1, 2**32)), input=(n, h, w, c), kernel=(kh, kw),
                        stride=stride, padding=pad, input_offset=int(rng.integers(-127, 129)),
                        output_offset=int(rng.integers(-128, 128)), act_min=act[0], act_max=act[1],
                        name=f"random {op} #{len(cases)}")
        if op in ("conv", "depthwise", "fc"):
            kc.c_out = int(rng.integers(1, 24))
            kc.ch_mult = int(rng.choice([1, 1, 1, 2])) if op == "depthwise" else 1
            if op == "fc":
                kc.input = (n, 1, 1, int(rng.integers(1, 300)))
            co = kc.output_dims[3]
            taps = kc.filter_dims[3] if op == "fc" else kh * kw * (c if op == "conv" else 1)
            kc.multiplier, kc.shift = _quant(rng, co, taps, spread=10.0)
            if rng.random() < 0.2:  # extreme requantisation
                kc.multiplier = [int(v) for v in rng.choice([0, 1 << 30, 2**31 - 1], co)]
                kc.shift = [int(v) for v in rng.choice([-31, -1, 0, 3, 30], co)]
            kc.bias = [int(v) for v in rng.integers(-30000, 30000, co)] if rng.random() < 0.85 else None
            kc.packed = len(cases) % 2 == 0 and kc.can_pack()
        elif op == "avg_pool":
            nm = avg_pool_num_multipliers((h, w), (kh, kw), stride, pad)
            m, s = avg_pool_multipliers(rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.1), (kh, kw), nm)
            kc.multiplier, kc.shift = [int(v) for v in m], [int(v) for v in s]
        elif op == "add":
            kc.input = (int(rng.integers(1, 80)), 1, 1, 1)
            zp = [int(v) for v in rng.integers(-128, 128, 3)]
            kc.add = add_params(*rng.uniform(0.005, 0.2, 1), zp[0], *rng.uniform(0.005, 0.2, 1), zp[1],
                                *rng.uniform(0.005, 0.2, 1), zp[2], act[0], act[1])
            del kc.add["act_min"], kc.add["act_max"]  # the clamp travels in act_min / act_max
        elif op == "relu":
            kc.input = (int(rng.integers(1, 80)), 1, 1, 1)
        cases.append(kc)
    return cases


def conv_1x1_cases(seed: int = 1, count: int = 40) -> list[KernelCase]:
    """Randomised 1x1 convolutions (widened straight from the input on the DSP path): C_in a multiple of 16, of
    4 only, or not; odd and even C_out and position counts; 1-D and 2-D; strides; zero points; clamps; extreme
    multipliers / shifts; no bias; C_in < 4 and C_out = 1."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        n = int(rng.integers(1, 3))
        h = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
        w = int(rng.integers(1, 24))
        c = int(rng.choice([2, 3, 4, 5, 7, 8, 12, 16, 17, 19, 24, 31, 32, 33, 40, 64, 70]))
        co = int(rng.choice([1, 2, 3, 7, 16, 19, 32, 33]))
        stride = (1, 1) if rng.random() < 0.6 else (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        act = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.random() < 0.3 else [-128, 127]
        m, s = _quant(rng, co, c, spread=10.0)
        if rng.random() < 0.2:  # extreme requantisation, shifts >= 0 included
            m = [int(v) for v in rng.choice([0, 1 << 30, 2**31 - 1], co)]
            s = [int(v) for v in rng.choice([-31, -1, 0, 3, 30], co)]
        bias = [int(v) for v in rng.integers(-30000, 30000, co)] if rng.random() < 0.85 else None
        cases.append(KernelCase(op="conv", seed=int(rng.integers(1, 2**32)), input=(n, h, w, c), kernel=(1, 1),
                                c_out=co, stride=stride, input_offset=int(rng.integers(-127, 129)),
                                output_offset=int(rng.integers(-128, 128)), act_min=act[0], act_max=act[1],
                                bias=bias, multiplier=m, shift=s, packed=i % 2 == 1, name=f"random conv 1x1 #{i}"))
    return cases


def dsp_pass_cases(seed: int = 3, count: int = 40) -> list[KernelCase]:
    """Randomised convs and depthwise convs aimed at the DSP and Helium passes: 2-D convs with C_in % 4 == 0 (the
    input band: odd and even output widths, strides 1 and 2, padding up to KW - 1 and beyond, C_out below 4, odd,
    not a multiple of 4), convs with few input channels (im2col, K tails), 3x3 stride-1 depthwise convs (the
    assembly pass: odd widths, C % 4 != 0, C < 4) and other depthwise shapes; shifts at the edges of the assembly
    output stage ([-23, -2]) and beyond it, extreme zero points, biases near the int32 limits."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        depthwise = i % 2 == 1
        h, w = int(rng.integers(2, 9)), int(rng.integers(1, 12))
        if depthwise:
            c = int(rng.choice([3, 4, 5, 8, 12, 13, 16, 20]))
            kh, kw = (3, 3) if rng.random() < 0.7 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            stride = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            co = c
        else:
            c = int(rng.choice([4, 8, 12, 16, 20, 32])) if rng.random() < 0.75 else int(rng.choice([1, 2, 3, 5]))
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(2, 4))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            co = int(rng.choice([1, 2, 3, 5, 7, 8, 12, 13, 16]))
        kh = min(kh, h)
        big = rng.random() < 0.15  # padding beyond KW - 1: the band may not fit, im2col instead
        pad = tuple(int(rng.integers(0, k + (2 if big else 0))) for k in (kh, kw, kh, kw))
        if (w + pad[1] + pad[3] - kw) < 0 or (h + pad[0] + pad[2] - kh) < 0:
            pad = (0, 0, 0, 0)
            w = max(w, kw)
        taps = kh * kw * (1 if depthwise else c)
        m, sh = _quant(rng, co, taps, spread=10.0)
        if rng.random() < 0.4:  # the edges of the assembly output stage, and beyond
            sh = [int(v) for v in rng.choice([-24, -23, -22, -2, -1, 0], co)]
            m = [int(v) for v in rng.integers(1 << 30, 2**31, co)]
        bias = [int(v) for v in rng.integers(-30000, 30000, co)]
        if rng.random() < 0.2:  # accumulators near the int32 limits
            bias = [int(v) for v in rng.choice([2**31 - 10**6, -2**31 + 10**6], co)]
        act = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.random() < 0.3 else [-128, 127]
        cases.append(KernelCase(op="depthwise" if depthwise else "conv", seed=int(rng.integers(1, 2**32)),
                                input=(int(rng.integers(1, 3)), h, w, c), kernel=(kh, kw), c_out=co, stride=stride,
                                padding=pad, input_offset=int(rng.choice([-127, 128, int(rng.integers(-127, 129))])),
                                output_offset=int(rng.choice([-128, 127, int(rng.integers(-128, 128))])),
                                act_min=act[0], act_max=act[1], bias=bias if rng.random() < 0.9 else None,
                                multiplier=m, shift=sh,
                                name=f"random pass {'depthwise' if depthwise else 'conv'} #{i}"))
        cases[-1].packed = i % 4 == 0 and cases[-1].can_pack()
    # odd output widths 1, 3, 5 on the 3x3 assembly pass (shifts in its range): pairs plus a single last column
    for w, pad in ((1, (1, 1, 1, 1)), (3, (1, 1, 1, 1)), (3, (0, 0, 0, 0)), (5, (1, 1, 1, 1)), (5, (1, 0, 1, 2))):
        c = int(rng.choice([4, 13, 64]))
        m, sh = _quant(rng, c, 9)
        act = sorted(int(v) for v in rng.integers(-128, 128, 2))
        cases.append(KernelCase(op="depthwise", seed=int(rng.integers(1, 2**32)),
                                input=(int(rng.integers(1, 3)), int(rng.integers(3, 7)), w, c), kernel=(3, 3),
                                c_out=c, padding=pad, input_offset=int(rng.integers(-127, 129)),
                                output_offset=int(rng.integers(-128, 128)), act_min=act[0], act_max=act[1],
                                bias=[int(v) for v in rng.integers(-30000, 30000, c)], multiplier=m, shift=sh,
                                name=f"pass depthwise width {w} pad {pad}"))
    # im2col windows whose rows are whole groups (KW x C_in % 4 == 0, C_in % 4 != 0: DS-CNN's first conv), row by
    # row: padding rows, rows cut by the left or right padding, windows entirely in the padding
    for c, (kh, kw), stride, pad in ((1, (10, 4), (2, 2), (4, 1, 5, 2)), (1, (3, 4), (1, 2), (2, 3, 3, 4)),
                                     (2, (2, 2), (1, 1), (1, 1, 1, 1)), (2, (4, 6), (2, 1), (5, 6, 4, 2))):
        co = int(rng.choice([5, 16]))
        m, sh = _quant(rng, co, kh * kw * c)
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(kh, kh + 8)), int(rng.integers(kw, 11))
        cases.append(KernelCase(op="conv", seed=int(rng.integers(1, 2**32)), input=(n, h, w, c), kernel=(kh, kw),
                                c_out=co, stride=stride, padding=pad,
                                input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
                                bias=[int(v) for v in rng.integers(-30000, 30000, co)], multiplier=m, shift=sh,
                                name=f"pass conv rows of whole groups {kh}x{kw}x{c} pad {pad}"))
        cases[-1].packed = co == 16 and cases[-1].can_pack()
    return cases


def bench_cases() -> list[KernelCase]:
    """The issue-4 reference shapes (with CMSIS-NN's instructions/MAC from docs/toolchain notes), plus the
    HAR model's own conv shapes (its 1x1 exit-head convs included) and a 1x1 conv odd in every dimension.
    'same' padding; realistic requantisation. The convs run as the compiler deploys them on DSP boards, their
    filters packed at compile time; the last row is one of them with its weights widened at run time (the path
    of the convs the trainer updates)."""
    rng = np.random.default_rng(4)

    def conv(name, h, w, ci, co, kh, kw, packed=True):
        m, s = _quant(rng, co, kh * kw * ci)
        return KernelCase(op="conv", seed=int(rng.integers(1, 2**32)), input=(1, h, w, ci), kernel=(kh, kw), c_out=co,
                          padding=(kh // 2, kw // 2, kh // 2, kw // 2), input_offset=5, output_offset=-3,
                          act_min=-3, act_max=127, bias=[int(v) for v in rng.integers(-3000, 3000, co)],
                          multiplier=m, shift=s, name=name, packed=packed)

    dm, ds = _quant(rng, 32, 9)
    fm, fs = _quant(rng, 64, 256)
    return [
        conv("conv 3x3 16x16x32 -> 32", 16, 16, 32, 32, 3, 3),
        conv("conv1d k5 64x16 -> 32", 1, 64, 16, 32, 1, 5),
        conv("conv1d k5 128x3 -> 16", 1, 128, 3, 16, 1, 5),
        KernelCase(op="depthwise", seed=77, input=(1, 16, 16, 32), kernel=(3, 3), padding=(1, 1, 1, 1),
                   input_offset=5, output_offset=-3, bias=[int(v) for v in rng.integers(-3000, 3000, 32)],
                   multiplier=dm, shift=ds, name="depthwise 3x3 16x16x32"),
        KernelCase(op="fc", seed=78, input=(1, 1, 1, 256), c_out=64, input_offset=5, output_offset=-3,
                   bias=[int(v) for v in rng.integers(-3000, 3000, 64)], multiplier=fm, shift=fs,
                   name="dense 256 -> 64"),
        conv("conv 3x3 16x16x8 -> 8", 16, 16, 8, 8, 3, 3),
        conv("conv1d k5 32x32 -> 64", 1, 32, 32, 64, 1, 5),
        conv("conv1d k5 16x64 -> 64", 1, 16, 64, 64, 1, 5),
        conv("conv1d k1 16x64 -> 32", 1, 16, 64, 32, 1, 1),
        conv("conv1d k1 64x16 -> 32", 1, 64, 16, 32, 1, 1),
        conv("conv1d k1 32x32 -> 32", 1, 32, 32, 32, 1, 1),
        conv("conv1d k1 33x17 -> 19", 1, 33, 17, 19, 1, 1),
        conv("conv1d k5 32x32 -> 64, widened at run time", 1, 32, 32, 64, 1, 5, packed=False),
    ]

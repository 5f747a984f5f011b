"""ctypes bindings of firmware/kernels built as a host shared library, with the same call signatures as
codegen.int8_ops, so tests can compare the C kernels with the numpy reference directly.

Two variants are built: "ref" (the plain C path) and "dsp" (the DSP path, with tests/host_c/acle/arm_acle.h
standing in for the ACLE intrinsics)."""
from __future__ import annotations

import ctypes as C
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "firmware" / "kernels"
HOST_C = ROOT / "tests" / "host_c"
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]
MT_SUCCESS, MT_ARG_ERROR = 0, -1

i32 = C.c_int32


class Dims(C.Structure):
    _fields_ = [("n", i32), ("h", i32), ("w", i32), ("c", i32)]


class Tile(C.Structure):
    _fields_ = [("h", i32), ("w", i32)]


class Padding(C.Structure):
    _fields_ = [("top", i32), ("left", i32), ("bottom", i32), ("right", i32)]


class Activation(C.Structure):
    _fields_ = [("min", i32), ("max", i32)]


class Context(C.Structure):
    _fields_ = [("buf", C.c_void_p), ("size", i32)]


class PerChannelQuant(C.Structure):
    _fields_ = [("multiplier", C.POINTER(i32)), ("shift", C.POINTER(i32))]


class ConvParams(C.Structure):
    _fields_ = [("input_offset", i32), ("output_offset", i32), ("stride", Tile), ("padding", Padding),
                ("dilation", Tile), ("activation", Activation), ("packed", C.c_void_p)]  # packed: NULL


class DwConvParams(C.Structure):
    _fields_ = [("input_offset", i32), ("output_offset", i32), ("ch_mult", i32), ("stride", Tile),
                ("padding", Padding), ("dilation", Tile), ("activation", Activation)]


class FcParams(C.Structure):
    _fields_ = [("input_offset", i32), ("output_offset", i32), ("activation", Activation)]


class PoolParams(C.Structure):
    _fields_ = [("stride", Tile), ("padding", Padding), ("activation", Activation)]


class AvgPoolParams(C.Structure):
    _fields_ = [("stride", Tile), ("padding", Padding), ("activation", Activation), ("input_offset", i32),
                ("output_offset", i32), ("multiplier", C.POINTER(i32)), ("shift", C.POINTER(i32)),
                ("num_multipliers", i32)]


class AddParams(C.Structure):
    _fields_ = [(n, i32) for n in ("input1_offset", "input1_multiplier", "input1_shift", "input2_offset",
                                   "input2_multiplier", "input2_shift", "left_shift", "output_offset",
                                   "output_multiplier", "output_shift")] + [("activation", Activation)]


def build(out_dir: Path, variant: str) -> Path:
    """Compile all kernels into out_dir/libmt_<variant>.so (variant 'ref' or 'dsp')."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"libmt_{variant}.so"
    extra = ["-D__ARM_FEATURE_DSP=1", f"-I{HOST_C / 'acle'}"] if variant == "dsp" else []
    srcs = sorted(str(p) for p in KERNELS.glob("mt_*.c")) + [str(HOST_C / "mt_test_exports.c")]
    r = subprocess.run(["gcc", *CFLAGS, *extra, f"-I{KERNELS}", *srcs, "-o", str(lib)], capture_output=True,
                       text=True)
    if r.returncode:
        raise RuntimeError(f"host build of the kernels failed:\n{r.stderr}")
    return lib


def _p(a: np.ndarray, t):
    return a.ctypes.data_as(C.POINTER(t))


def _i32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.int32))


def _out_len(n, k, s, pa, pb):
    return (n + pa + pb - k) // s + 1 if s >= 1 else 1  # invalid strides still get a buffer


class Kernels:
    """One loaded library. Methods take the same arguments as codegen.int8_ops and return (status, output)."""

    def __init__(self, path: Path):
        self.lib = C.CDLL(str(path))
        self.lib.mt_conv_s8_get_buffer_size.restype = i32
        self.lib.mt_depthwise_conv_s8_get_buffer_size.restype = i32

    def _quant(self, multiplier, shift, n):
        m = _i32(np.broadcast_to(multiplier, (n,)))
        s = _i32(np.broadcast_to(shift, (n,)))
        return PerChannelQuant(_p(m, i32), _p(s, i32)), (m, s)

    def conv2d(self, x, w, bias=None, *, input_offset, output_offset, multiplier, shift, stride=(1, 1),
               padding=(0, 0, 0, 0), act_min=-128, act_max=127, out_hw=None, scratch=None, scratch_buf=None,
               out=None):
        """scratch: the scratch size passed (default: the size query's answer); scratch_buf: the scratch
        memory (default: a fresh buffer 4 bytes longer); out: the output array to fill (default: a new one)."""
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(w, np.int8)
        n, h, wd, ci = x.shape
        co, kh, kw, _ = w.shape
        t, l, b, r = padding
        oh, ow = out_hw or (_out_len(h, kh, stride[0], t, b), _out_len(wd, kw, stride[1], l, r))
        if out is None:
            out = np.zeros((n, max(oh, 1), max(ow, 1), co), np.int8)
        idims, fdims, odims = Dims(n, h, wd, ci), Dims(co, kh, kw, ci), Dims(n, oh, ow, co)
        size = self.lib.mt_conv_s8_get_buffer_size(C.byref(idims), C.byref(fdims)) if scratch is None else scratch
        buf = np.zeros(max(size, 1) + 4, np.uint8) if scratch_buf is None else scratch_buf
        ctx = Context(buf.ctypes.data if size else None, size)
        q, keep = self._quant(multiplier, shift, co)
        bias_a = None if bias is None else _i32(bias)
        params = ConvParams(input_offset, output_offset, Tile(*stride), Padding(t, l, b, r), Tile(1, 1),
                            Activation(act_min, act_max))
        st = self.lib.mt_conv_s8(C.byref(ctx), C.byref(params), C.byref(q), C.byref(idims), _p(x, C.c_int8),
                                 C.byref(fdims), _p(w, C.c_int8), None if bias_a is None else _p(bias_a, i32),
                                 C.byref(odims), _p(out, C.c_int8))
        return st, out

    def depthwise_conv2d(self, x, w, bias=None, *, input_offset, output_offset, multiplier, shift, ch_mult=1,
                         stride=(1, 1), padding=(0, 0, 0, 0), act_min=-128, act_max=127, scratch=None,
                         scratch_buf=None):
        """scratch: the scratch size passed (default: the size query's answer; 0: none, the fallback path);
        scratch_buf: the scratch memory (default: a fresh buffer 4 bytes longer)."""
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(np.asarray(w, np.int8).reshape(np.shape(w)[-3:]))
        n, h, wd, ci = x.shape
        kh, kw, co = w.shape
        t, l, b, r = padding
        oh, ow = _out_len(h, kh, stride[0], t, b), _out_len(wd, kw, stride[1], l, r)
        out = np.zeros((n, oh, ow, co), np.int8)
        idims, fdims, odims = Dims(n, h, wd, ci), Dims(1, kh, kw, co), Dims(n, oh, ow, co)
        q, keep = self._quant(multiplier, shift, co)
        bias_a = None if bias is None else _i32(bias)
        params = DwConvParams(input_offset, output_offset, ch_mult, Tile(*stride), Padding(t, l, b, r), Tile(1, 1),
                              Activation(act_min, act_max))
        if scratch is None:
            scratch = self.lib.mt_depthwise_conv_s8_get_buffer_size(C.byref(idims), C.byref(fdims))
        buf = np.zeros(max(scratch, 1) + 4, np.uint8) if scratch_buf is None else scratch_buf
        ctx = Context(buf.ctypes.data if scratch else None, scratch)
        st = self.lib.mt_depthwise_conv_s8(C.byref(ctx), C.byref(params), C.byref(q), C.byref(idims),
                                           _p(x, C.c_int8), C.byref(fdims), _p(w, C.c_int8),
                                           None if bias_a is None else _p(bias_a, i32), C.byref(odims),
                                           _p(out, C.c_int8))
        return st, out

    def fully_connected(self, x, w, bias=None, *, input_offset, output_offset, multiplier, shift, act_min=-128,
                        act_max=127):
        x = np.ascontiguousarray(x, np.int8)
        w = np.ascontiguousarray(w, np.int8)
        n, k = x.shape
        m = w.shape[0]
        out = np.zeros((n, m), np.int8)
        idims, fdims, odims = Dims(n, 1, 1, k), Dims(m, 1, 1, k), Dims(n, 1, 1, m)
        q, keep = self._quant(multiplier, shift, m)
        bias_a = None if bias is None else _i32(bias)
        params = FcParams(input_offset, output_offset, Activation(act_min, act_max))
        ctx = Context(None, 0)
        st = self.lib.mt_fully_connected_s8(C.byref(ctx), C.byref(params), C.byref(q), C.byref(idims),
                                            _p(x, C.c_int8), C.byref(fdims), _p(w, C.c_int8),
                                            None if bias_a is None else _p(bias_a, i32), C.byref(odims),
                                            _p(out, C.c_int8))
        return st, out

    def max_pool2d(self, x, kernel, stride, padding=(0, 0, 0, 0), act_min=-128, act_max=127):
        x = np.ascontiguousarray(x, np.int8)
        n, h, wd, c = x.shape
        t, l, b, r = padding
        oh, ow = _out_len(h, kernel[0], stride[0], t, b), _out_len(wd, kernel[1], stride[1], l, r)
        out = np.zeros((n, oh, ow, c), np.int8)
        params = PoolParams(Tile(*stride), Padding(t, l, b, r), Activation(act_min, act_max))
        st = self.lib.mt_max_pool_s8(C.byref(params), C.byref(Dims(n, h, wd, c)), _p(x, C.c_int8),
                                     C.byref(Dims(1, kernel[0], kernel[1], 1)), C.byref(Dims(n, oh, ow, c)),
                                     _p(out, C.c_int8))
        return st, out

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0, 0, 0), *, input_offset, output_offset, multiplier,
                   shift, act_min=-128, act_max=127):
        x = np.ascontiguousarray(x, np.int8)
        n, h, wd, c = x.shape
        t, l, b, r = padding
        oh, ow = _out_len(h, kernel[0], stride[0], t, b), _out_len(wd, kernel[1], stride[1], l, r)
        out = np.zeros((n, oh, ow, c), np.int8)
        m, s = _i32(np.atleast_1d(multiplier)), _i32(np.atleast_1d(shift))
        params = AvgPoolParams(Tile(*stride), Padding(t, l, b, r), Activation(act_min, act_max), input_offset,
                               output_offset, _p(m, i32), _p(s, i32), len(m))
        st = self.lib.mt_avg_pool_s8(C.byref(params), C.byref(Dims(n, h, wd, c)), _p(x, C.c_int8),
                                     C.byref(Dims(1, kernel[0], kernel[1], 1)), C.byref(Dims(n, oh, ow, c)),
                                     _p(out, C.c_int8))
        return st, out

    def add(self, x1, x2, *, act_min=-128, act_max=127, **kw):
        x1 = np.ascontiguousarray(x1, np.int8)
        x2 = np.ascontiguousarray(x2, np.int8)
        out = np.zeros_like(x1)
        params = AddParams(**kw, activation=Activation(act_min, act_max))
        st = self.lib.mt_add_s8(C.byref(params), _p(x1, C.c_int8), _p(x2, C.c_int8), _p(out, C.c_int8),
                                x1.size)
        return st, out

    def relu(self, x, act_min=-128, act_max=127):
        x = np.ascontiguousarray(x, np.int8)
        out = np.zeros_like(x)
        st = self.lib.mt_relu_s8(C.byref(Activation(act_min, act_max)), _p(x, C.c_int8), _p(out, C.c_int8),
                                 x.size)
        return st, out

    # the rounding function is static inline in the header: tests reach it through a tiny shim
    def requantize(self, acc, multiplier, shift):
        f = self.lib.mt_test_requantize
        f.restype = i32
        f.argtypes = [i32, i32, i32]
        return f(int(acc), int(multiplier), int(shift))

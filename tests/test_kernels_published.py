"""The kernels added for published models (mt_conv_dilated_s8, mt_lut_s8, mt_mul_s8, mt_concat_s8, mt_pad_s8,
mt_resize_nearest_s8) built with the host gcc, plain C and DSP paths, against the numpy golden model
(codegen.int8_ops) bit for bit on random shapes, plus their argument checks."""
import ctypes as C

import mt_host_lib as H
import numpy as np
import pytest

from codegen import int8_ops as R
from codegen import quant as Q

i32 = C.c_int32


class MulParams(C.Structure):
    _fields_ = [(n, i32) for n in ("input1_offset", "input2_offset", "output_offset", "multiplier", "shift")] + \
        [("activation", H.Activation)]


class ConcatParams(C.Structure):
    _fields_ = [(n, i32) for n in ("requantize", "input_offset", "output_offset", "multiplier", "shift")]


def p8(a):
    return a.ctypes.data_as(C.POINTER(C.c_int8))


def p32(a):
    return a.ctypes.data_as(C.POINTER(i32))


@pytest.fixture(scope="module", params=["ref", "dsp"])
def lib(request, tmp_path_factory):
    lib = C.CDLL(str(H.build(tmp_path_factory.mktemp(f"published_{request.param}"), request.param)))
    lib.mt_conv_dilated_s8_get_buffer_size.restype = i32
    return lib


def test_dilated_conv(lib):
    rng = np.random.default_rng(3)
    for case in range(40):
        n_h = 1 if case % 2 else int(rng.integers(3, 9))
        h, w, ci, co = n_h, int(rng.integers(4, 20)), int(rng.integers(1, 11)), int(rng.integers(1, 13))
        kh, kw = (1 if h == 1 else int(rng.integers(1, 4))), int(rng.integers(1, 4))
        dil = (1 if h == 1 else int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = tuple(int(v) for v in rng.integers(0, 3, 4)) if h > 1 else (0, *rng.integers(0, 3, 1), 0,
                                                                            *rng.integers(0, 3, 1))
        pad = tuple(int(v) for v in pad)
        eh, ew = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
        if h + pad[0] + pad[2] < eh or w + pad[1] + pad[3] < ew:
            continue
        x = rng.integers(-128, 128, (1, h, w, ci), dtype=np.int8)
        f = rng.integers(-127, 128, (co, kh, kw, ci), dtype=np.int8)
        bias = rng.integers(-5000, 5000, co).astype(np.int32)
        mult, shift = Q.quantize_multipliers(rng.uniform(0.0005, 0.02, co))
        kw_args = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
                       multiplier=mult, shift=shift, stride=stride, padding=pad, act_min=-100, act_max=120)
        want = R.conv2d(x, f, bias, dilation=dil, **kw_args)
        out = np.zeros(want.shape, np.int8)
        idims, fdims, odims = H.Dims(*x.shape), H.Dims(co, kh, kw, ci), H.Dims(*want.shape)
        size = lib.mt_conv_dilated_s8_get_buffer_size(C.byref(idims), C.byref(fdims), C.byref(odims))
        buf = np.zeros(size, np.int8)
        params = H.ConvParams(kw_args["input_offset"], kw_args["output_offset"], H.Tile(*stride), H.Padding(*pad),
                              H.Tile(*dil), H.Activation(-100, 120))
        quant = H.PerChannelQuant(p32(mult), p32(shift))
        st = lib.mt_conv_dilated_s8(C.byref(H.Context(buf.ctypes.data, size)), C.byref(params), C.byref(quant),
                                    C.byref(idims), p8(x), C.byref(fdims), p8(f), p32(bias), C.byref(odims), p8(out))
        assert st == H.MT_SUCCESS and np.array_equal(out, want), case
        need = min(8, want.shape[1] * want.shape[2]) * kh * kw * ci  # the taps of 8 output pixels
        assert size == (need + 3) // 4 * 4
        short = H.Context(buf.ctypes.data, need - 1)
        assert lib.mt_conv_dilated_s8(C.byref(short), C.byref(params), C.byref(quant), C.byref(idims), p8(x),
                                      C.byref(fdims), p8(f), p32(bias), C.byref(odims), p8(out)) == H.MT_ARG_ERROR


def test_lut_mul_concat_pad_resize(lib):
    rng = np.random.default_rng(4)
    for size in (1, 3, 4, 7, 64, 129):
        x = rng.integers(-128, 128, size, dtype=np.int8)
        table = rng.integers(-128, 128, 256, dtype=np.int8)
        out = np.zeros(size, np.int8)
        assert lib.mt_lut_s8(p8(table), p8(x), p8(out), size) == H.MT_SUCCESS
        assert np.array_equal(out, R.lut(x, table))
        for n2 in {1, size, max(1, size // 2 if size % 2 == 0 else 1)}:
            y = rng.integers(-128, 128, n2, dtype=np.int8)
            m, s = Q.quantize_multiplier(float(rng.uniform(1e-4, 0.02)))
            args = dict(input1_offset=int(rng.integers(-127, 129)), input2_offset=int(rng.integers(-127, 129)),
                        output_offset=int(rng.integers(-128, 128)), multiplier=m, shift=s)
            p = MulParams(**args, activation=H.Activation(-120, 127))
            assert lib.mt_mul_s8(C.byref(p), p8(x), p8(y), n2, p8(out), size) == H.MT_SUCCESS
            assert np.array_equal(out, R.mul(x, y, **args, act_min=-120, act_max=127)), (size, n2)
        if size > 1:
            assert lib.mt_mul_s8(C.byref(p), p8(x), p8(y), size + 1, p8(out), size) == H.MT_ARG_ERROR
    # concat: two inputs, one copied, one requantised, into an NHWC output
    a, b = rng.integers(-128, 128, (1, 3, 5, 4), dtype=np.int8), rng.integers(-128, 128, (1, 3, 5, 3), dtype=np.int8)
    params = [Q.copy_params(0.1, 3, 0.1, 3), Q.copy_params(0.05, -7, 0.1, 3)]
    out = np.zeros((1, 3, 5, 7), np.int8)
    for t, (inp, prm) in enumerate(zip((a, b), params)):
        cp = ConcatParams(**prm)
        assert lib.mt_concat_s8(C.byref(cp), p8(inp), 15, inp.shape[3], p8(out), 7, 0 if t == 0 else 4) == H.MT_SUCCESS
    assert np.array_equal(out, R.concat_channels([a, b], params))
    assert lib.mt_concat_s8(C.byref(ConcatParams(**params[0])), p8(a), 15, 4, p8(out), 7, 4) == H.MT_ARG_ERROR
    # pad and nearest resize
    x = rng.integers(-128, 128, (1, 4, 6, 3), dtype=np.int8)
    pad = (1, 0, 2, 3)
    want = R.pad(x, pad, -5)
    out = np.zeros(want.shape, np.int8)
    assert lib.mt_pad_s8(C.byref(H.Dims(*x.shape)), p8(x), C.byref(H.Padding(*pad)), -5, C.byref(H.Dims(*want.shape)),
                         p8(out)) == H.MT_SUCCESS and np.array_equal(out, want)
    rows, cols = np.array([0, 0, 1, 3, 3, 2], np.int32), np.array([5, 0, 2], np.int32)
    want = R.resize_nearest(x, rows, cols)
    out = np.zeros(want.shape, np.int8)
    assert lib.mt_resize_nearest_s8(C.byref(H.Dims(*x.shape)), p8(x), p32(rows), p32(cols),
                                    C.byref(H.Dims(*want.shape)), p8(out)) == H.MT_SUCCESS
    assert np.array_equal(out, want)
    bad = np.array([0, 6, 1], np.int32)  # column 6 of 6 does not exist
    assert lib.mt_resize_nearest_s8(C.byref(H.Dims(*x.shape)), p8(x), p32(rows), p32(bad),
                                    C.byref(H.Dims(*want.shape)), p8(out)) == H.MT_ARG_ERROR

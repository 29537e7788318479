#!/usr/bin/python3
"""Writes the golden cases of the quantization op family (compiler/ops/quant/, docs/quantization.md):
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv, QLinearMatMul, ConvInteger and
MatMulInteger. Same layout as tools/goldens_math.py (whose Case it reuses):
tests/goldens/ops/quant_<case>/ with model.json, <input>.npy, one .npy per output, and
tests/goldens/ops/cases-quant.txt.

References, each independent of Kiln's code:
  QuantizeLinear / DequantizeLinear   PyTorch's quantize_per_tensor / quantize_per_channel and
                                      dequantize, checked against numpy applying the ONNX formula
                                      (f32 division, round half to even, saturate). Random values
                                      whose quotient lies within 1e-3 of a half are nudged away
                                      (PyTorch multiplies by 1/scale, ONNX divides); exact ties are
                                      tested on purpose with power-of-two scales, where both agree.
  DynamicQuantizeLinear               numpy applying the ONNX definition in f32 (PyTorch's dynamic
                                      quantization chooses its parameters differently); the
                                      quantized values are checked against torch.quantize_per_tensor
                                      with the numpy scale and zero point.
  ConvInteger / MatMulInteger         torch conv2d / matmul on float64 (exact for these integers),
                                      checked against a numpy loop / einsum on int64.
  QLinearConv / QLinearMatMul         the same integer results, requantized by numpy as ONNX's
                                      reference does: multiplier x_scale * w_scale / y_scale in f32,
                                      acc * multiplier in f64, rint, + zero point, clip.

Run: /usr/bin/python3 tools/goldens_quant.py   (deletes and rewrites tests/goldens/ops/quant_*/)
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_math as gm  # noqa: E402
import kiln_io  # noqa: E402

gm.PREFIX = "quant_"
f32, f64, u8, i8, i32 = np.float32, np.float64, np.uint8, np.int8, np.int32
RANGE = {np.dtype(u8): (0, 255), np.dtype(i8): (-128, 127)}


class Case(gm.Case):
    """gm.Case with several outputs: compute_numpy's fn may return a tuple, named by `outputs`."""

    def __init__(self, name, op, doc=None, outputs=("out",)):
        super().__init__(name, op, doc)
        self.outputs = list(outputs)

    def results(self):
        if len(self.outputs) == 1:
            return [self.run()]
        ys = self.numpy_fn(*self.arrays())
        for fn, atol in self.checks:
            for want, y in zip(fn(*self.arrays()), ys):
                assert np.allclose(np.asarray(want, f64), np.asarray(y, f64), atol=atol), self.name
        return [np.asarray(y).copy(order="C") for y in ys]


def write_case(root, c):
    d = os.path.join(root, c.name)
    ys = c.results()
    params = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape),
               "init": {"kind": "values", "values": gm.values(a)}} for n, a in c.params]
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": c.outputs}
    if c.attrs:
        node["attrs"] = c.attrs
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    if c.doc:
        model["doc"] = c.doc
    model["inputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                       for n, a in c.inputs]
    model["outputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[y.dtype], "shape": list(y.shape)}
                        for n, y in zip(c.outputs, ys)]
    if params:
        model["params"] = params
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        gm.save_npy(os.path.join(d, f"{n}.npy"), a)
    for n, y in zip(c.outputs, ys):
        gm.save_npy(os.path.join(d, f"{n}.npy"), y)


# ---------------------------------------------------------------- numpy references (ONNX)

def channel_shape(x, axis, v):
    """v (1-D per channel along axis, or one value) shaped to broadcast against x."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * x.ndim
    shape[axis % x.ndim] = v.size
    return v.reshape(shape)


def np_quantize(x, scale, zp, dtype, axis=1):
    q = np.rint((x.astype(f32) / channel_shape(x, axis, scale).astype(f32)).astype(f32))
    q = q + channel_shape(x, axis, zp).astype(f32)
    lo, hi = RANGE[np.dtype(dtype)]
    return np.clip(q, lo, hi).astype(dtype)


def np_dequantize(x, scale, zp, axis=1):
    diff = (x.astype(np.int64) - channel_shape(x, axis, zp).astype(np.int64)).astype(f32)
    return (diff * channel_shape(x, axis, scale).astype(f32)).astype(f32)


def np_requantize(acc, m, zp, dtype):
    lo, hi = RANGE[np.dtype(dtype)]
    return np.clip(np.rint(acc.astype(f64) * m.astype(f64)) + int(zp), lo, hi).astype(dtype)


def away_from_ties(x, scale, axis=1):
    """Moves values whose quotient x / scale is within 1e-3 of a half (see the module doc)."""
    s = channel_shape(x, axis, scale).astype(f64)
    q = x.astype(f64) / s
    frac = np.abs(q - np.floor(q) - 0.5)
    return np.where(frac < 1e-3, (np.floor(q) + 0.25) * s, x).astype(f32)


# ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear

def torch_quantize(x, scale, zp, dtype, axis=None):
    qt = torch.quint8 if dtype == u8 else torch.qint8
    t = torch.from_numpy(x)
    if axis is None:
        q = torch.quantize_per_tensor(t, float(scale), int(zp), qt)
    else:
        q = torch.quantize_per_channel(t, torch.from_numpy(scale.astype(f64)),
                                       torch.from_numpy(zp.astype(np.int64)), axis, qt)
    return q.int_repr().numpy()


def quantize_cases():
    c = Case("quantize_u8", "QuantizeLinear", "per tensor, u8, zero point 128, saturates both ends")
    x = away_from_ties(np.concatenate([c.randn(22, scale=2), np.array([100, -100], f32)]), 0.0173)
    scale, zp = np.array(0.0173, f32), np.array(128, u8)
    c.input("x", x.reshape(4, 6)).param("scale", scale).param("zp", zp)
    c.compute_numpy(lambda x, s, z: torch_quantize(x, s, z, u8))
    c.check(lambda x, s, z: np_quantize(x, s, z, u8), atol=0)

    c = Case("quantize_i8_inputs", "QuantizeLinear", "i8, scale and zero point are model inputs")
    x = away_from_ties(c.randn(3, 5, scale=3), 0.05)
    c.input("x", x).input("scale", np.array(0.05, f32)).input("zp", np.array(-3, i8))
    c.compute_numpy(lambda x, s, z: torch_quantize(x, s, z, i8))
    c.check(lambda x, s, z: np_quantize(x, s, z, i8), atol=0)

    c = Case("quantize_ties", "QuantizeLinear", "exact halves round to even: scale 0.5 (a power of two)")
    x = np.array([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75, 2.25], f32)
    c.input("x", x).param("scale", np.array(0.5, f32)).param("zp", np.array(0, i8))
    c.compute_numpy(lambda x, s, z: torch_quantize(x, s, z, i8))
    c.check(lambda x, s, z: np.array([-2, -2, 0, 0, 2, 2, 4, 4], i8), atol=0)

    c = Case("quantize_no_zp", "QuantizeLinear", "zero point omitted: u8, zero point 0")
    x = away_from_ties(c.uniform(-0.5, 4, 2, 7), 0.02)
    c.input("x", x).param("scale", np.array(0.02, f32))
    c.compute_numpy(lambda x, s: torch_quantize(x, s, 0, u8))
    c.check(lambda x, s: np_quantize(x, s, 0, u8), atol=0)

    for axis, shape in ((1, (2, 3, 2, 4)), (0, (4, 5)), (-1, (3, 2, 6))):
        tag = str(axis).replace("-", "m")
        c = Case(f"quantize_axis{tag}", "QuantizeLinear", f"per channel along axis {axis}, i8")
        ch = shape[axis]
        scale = c.uniform(0.01, 0.1, ch)
        zp = c.ints(-10, 10, ch, dtype=i8)
        x = away_from_ties(c.randn(*shape, scale=2), scale, axis)
        c.input("x", x).param("scale", scale).param("zp", zp)
        if axis != 1:
            c.set(axis=axis)
        c.compute_numpy(lambda x, s, z, a=axis: torch_quantize(x, s, z, i8, a % x.ndim))
        c.check(lambda x, s, z, a=axis: np_quantize(x, s, z, i8, a), atol=0)

    c = Case("quantize_axis_u8", "QuantizeLinear", "per channel along axis 1 (the default), u8")
    scale, zp = c.uniform(0.01, 0.05, 3), np.array([0, 100, 255], u8)
    x = away_from_ties(c.randn(1, 3, 4, 4, scale=3), scale)
    c.input("x", x).param("scale", scale).param("zp", zp)
    c.compute_numpy(lambda x, s, z: torch_quantize(x, s, z, u8, 1))
    c.check(lambda x, s, z: np_quantize(x, s, z, u8, 1), atol=0)


def torch_dequantize(q, scale, zp, axis=None):
    t = torch.from_numpy(q)
    if axis is None:
        qt = torch._make_per_tensor_quantized_tensor(t, float(scale), int(zp))
    else:
        qt = torch._make_per_channel_quantized_tensor(t, torch.from_numpy(scale.astype(f64)),
                                                      torch.from_numpy(zp.astype(np.int64)), axis)
    return qt.dequantize().numpy()


def dequantize_cases():
    c = Case("dequantize_u8", "DequantizeLinear", "per tensor, u8, the whole range")
    q = np.concatenate([np.array([0, 255, 128], u8), c.ints(0, 256, 21, dtype=u8)]).reshape(4, 6)
    c.input("x", q).param("scale", np.array(0.0173, f32)).param("zp", np.array(128, u8))
    c.compute_numpy(lambda x, s, z: torch_dequantize(x, s, z))
    c.check(lambda x, s, z: np_dequantize(x, s, z), atol=0)

    c = Case("dequantize_i8_inputs", "DequantizeLinear", "i8; scale and zero point model inputs")
    q = np.concatenate([np.array([-128, 127], i8), c.ints(-128, 128, 13, dtype=i8)]).reshape(3, 5)
    c.input("x", q).input("scale", np.array(0.31, f32)).input("zp", np.array(-7, i8))
    c.compute_numpy(lambda x, s, z: torch_dequantize(x, s, z))
    c.check(lambda x, s, z: np_dequantize(x, s, z), atol=0)

    c = Case("dequantize_i32", "DequantizeLinear", "i32 (a bias), no zero point")
    c.input("x", c.ints(-100000, 100000, 8, dtype=i32)).param("scale", np.array(0.0007, f32))
    c.compute_numpy(lambda x, s: (x.astype(f32) * s).astype(f32))
    c.check(lambda x, s: np_dequantize(x, s, 0), atol=0)

    c = Case("dequantize_axis", "DequantizeLinear", "per channel along axis 1, u8")
    scale, zp = c.uniform(0.01, 0.1, 3), np.array([0, 100, 255], u8)
    c.input("x", c.ints(0, 256, 2, 3, 2, 2, dtype=u8)).param("scale", scale).param("zp", zp)
    c.compute_numpy(lambda x, s, z: torch_dequantize(x, s, z, 1))
    c.check(lambda x, s, z: np_dequantize(x, s, z, 1), atol=0)

    c = Case("dequantize_axis0_i8", "DequantizeLinear", "per channel along axis 0, i8")
    scale, zp = c.uniform(0.01, 0.1, 4), c.ints(-5, 5, 4, dtype=i8)
    c.input("x", c.ints(-128, 128, 4, 6, dtype=i8)).param("scale", scale).param("zp", zp).set(axis=0)
    c.compute_numpy(lambda x, s, z: torch_dequantize(x, s, z, 0))
    c.check(lambda x, s, z: np_dequantize(x, s, z, 0), atol=0)


# ---------------------------------------------------------------- DynamicQuantizeLinear

def np_dynamic(x):
    lo = np.minimum(f32(0), np.min(x)).astype(f32)
    hi = np.maximum(f32(0), np.max(x)).astype(f32)
    scale = (f32(1) if hi == lo else f32(hi - lo)) / f32(255)
    scale = f32(scale)
    zp = np.clip(np.rint(f32(0) - f32(lo / scale)), 0, 255).astype(u8)
    return np_quantize(x, scale, zp, u8), np.array(scale, f32), np.array(zp, u8)


def dynamic_cases():
    outs = ("y", "y_scale", "y_zero_point")
    for name, make, doc in (
            ("dynamic", lambda c: c.randn(3, 8, scale=2), "signed data"),
            ("dynamic_positive", lambda c: c.uniform(0.5, 4, 20), "min adjusted to 0: zero point 0"),
            ("dynamic_negative", lambda c: c.uniform(-4, -0.5, 20), "max adjusted to 0: zero point 255"),
            ("dynamic_zeros", lambda c: np.zeros(6, f32), "all zeros: scale 1 / 255")):
        c = Case(name, "DynamicQuantizeLinear", doc, outputs=outs)
        c.input("x", make(c)).compute_numpy(np_dynamic)
        c.check(lambda x: (torch_quantize(x, *np_dynamic(x)[1:], u8), *np_dynamic(x)[1:]), atol=0)


# ---------------------------------------------------------------- integer convolution

def int_conv(x, xzp, w, wzp, bias, stride, pad, dil, group):
    """torch conv2d on float64: exact for these integer sizes."""
    xv = torch.from_numpy(x.astype(f64) - float(xzp))
    wv = torch.from_numpy(w.astype(f64) - channel_shape(w, 0, wzp).astype(f64))
    b = torch.from_numpy(bias.astype(f64)) if bias is not None else None
    y = F.conv2d(xv, wv, b, stride, pad, dil, group).numpy()
    return np.rint(y).astype(np.int64)


def loop_conv(x, xzp, w, wzp, bias, stride, pad, dil, group):
    """The definition as loops over int64, padding with the zero point."""
    N, C, H, W = x.shape
    M, CG, KH, KW = w.shape
    OH = (H + 2 * pad[0] - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * pad[1] - dil[1] * (KW - 1) - 1) // stride[1] + 1
    xp = np.full((N, C, H + 2 * pad[0], W + 2 * pad[1]), int(xzp), np.int64)
    xp[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    xp -= int(xzp)
    wv = w.astype(np.int64) - channel_shape(w, 0, wzp).astype(np.int64)
    y = np.zeros((N, M, OH, OW), np.int64)
    for oc in range(M):
        g = oc // (M // group)
        for kh in range(KH):
            for kw in range(KW):
                patch = xp[:, g * CG:(g + 1) * CG, kh * dil[0]:kh * dil[0] + stride[0] * OH:stride[0],
                           kw * dil[1]:kw * dil[1] + stride[1] * OW:stride[1]]
                y[:, oc] += np.einsum("nchw,c->nhw", patch, wv[oc, :, kh, kw])
        if bias is not None:
            y[:, oc] += int(bias[oc])
    return y


CONVS = [
    # name, x shape, w shape, stride, pad, dil, group, x dtype, w dtype, per-channel w zp, doc
    ("basic", (1, 2, 5, 5), (3, 2, 3, 3), (1, 1), (0, 0), (1, 1), 1, u8, u8, False, "no padding"),
    ("pad_stride", (2, 3, 7, 6), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1, u8, i8, True,
     "stride 2, pads 1, per-channel w zero point"),
    ("group_dil", (1, 4, 8, 8), (6, 2, 3, 2), (1, 2), (2, 1), (2, 1), 2, i8, i8, True,
     "groups 2, dilation (2, 1), rectangular kernel"),
    ("depthwise", (1, 3, 6, 6), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3, u8, i8, False, "depthwise"),
]


def conv_attrs(c, stride, pad, dil, group):
    if stride != (1, 1):
        c.set(strides=list(stride))
    if pad != (0, 0):
        c.set(pads=[pad[0], pad[1], pad[0], pad[1]])
    if dil != (1, 1):
        c.set(dilations=list(dil))
    if group != 1:
        c.set(group=group)


def qvalues(c, dtype, *shape):
    lo, hi = RANGE[np.dtype(dtype)]
    return c.ints(lo, hi + 1, *shape, dtype=dtype)


def conv_operands(c, xs, ws, xt, wt, per_channel):
    x, w = qvalues(c, xt, *xs), qvalues(c, wt, *ws)
    xzp = np.array(RANGE[np.dtype(xt)][0] + 100 if xt == u8 else -5, xt)
    wzp = qvalues(c, wt, ws[0]) // 8 if per_channel else np.array(3, wt)
    return x, w, xzp, wzp.astype(wt)


def convinteger_cases():
    for name, xs, ws, stride, pad, dil, group, xt, wt, pc, doc in CONVS:
        c = Case(f"convinteger_{name}", "ConvInteger", doc)
        x, w, xzp, wzp = conv_operands(c, xs, ws, xt, wt, pc)
        c.input("x", x).param("w", w).param("x_zp", xzp).param("w_zp", wzp)
        conv_attrs(c, stride, pad, dil, group)
        args = (stride, pad, dil, group)
        c.compute_numpy(lambda x, w, xz, wz, a=args: int_conv(x, xz, w, wz, None, *a).astype(i32))
        c.check(lambda x, w, xz, wz, a=args: loop_conv(x, xz, w, wz, None, *a), atol=0)
    c = Case("convinteger_no_zp", "ConvInteger", "zero points omitted; x a model input, w too")
    x, w = qvalues(c, u8, 1, 1, 4, 4), qvalues(c, u8, 2, 1, 2, 2)
    c.input("x", x).input("w", w)
    c.compute_numpy(lambda x, w: int_conv(x, 0, w, 0, None, (1, 1), (0, 0), (1, 1), 1).astype(i32))


def qlinearconv_cases():
    for name, xs, ws, stride, pad, dil, group, xt, wt, pc, doc in CONVS:
        for yt in (u8, i8) if name == "pad_stride" else (u8,):
            tag = "" if yt == u8 else "_y_i8"
            c = Case(f"qlinearconv_{name}{tag}", "QLinearConv", doc + ", i32 bias")
            x, w, xzp, wzp = conv_operands(c, xs, ws, xt, wt, pc)
            x_scale = np.array(0.02, f32)
            w_scale = c.uniform(0.002, 0.01, ws[0]) if pc else np.array(0.005, f32)
            y_scale, yzp = np.array(0.1, f32), np.array(110 if yt == u8 else -4, yt)
            bias = c.ints(-3000, 3000, ws[0], dtype=i32)
            c.input("x", x).param("x_scale", x_scale).param("x_zp", xzp).param("w", w)
            c.param("w_scale", w_scale).param("w_zp", wzp).param("y_scale", y_scale)
            c.param("y_zp", yzp).param("bias", bias)
            conv_attrs(c, stride, pad, dil, group)
            args = (stride, pad, dil, group)

            def ref(x, xs_, xz, w, ws_, wz, ys_, yz, b, a=args, conv=int_conv):
                acc = conv(x, xz, w, wz, b, *a)
                m = ((xs_ * ws_).astype(f32) / ys_).astype(f32)
                return np_requantize(acc, channel_shape(acc, 1, m), yz, yz.dtype)
            c.compute_numpy(ref)
            c.check(lambda *v, ref=ref: ref(*v, conv=loop_conv), atol=0)


# ---------------------------------------------------------------- integer matmul

def int_matmul(a, azp, b, bzp):
    """torch matmul on int64, zero points per row of a / per column of b or one value."""
    av = a.astype(np.int64) - np.asarray(azp, np.int64).reshape(-1, 1)
    bv = b.astype(np.int64) - np.asarray(bzp, np.int64).reshape(1, -1)
    return torch.matmul(torch.from_numpy(av), torch.from_numpy(bv)).numpy()


def einsum_matmul(a, azp, b, bzp):
    av = a.astype(np.int64) - np.asarray(azp, np.int64).reshape(-1, 1)
    bv = b.astype(np.int64) - np.asarray(bzp, np.int64).reshape(1, -1)
    return np.einsum("...ik,...kj->...ij", av, bv)


MATMULS = [
    # name, a shape, b shape, a dtype, b dtype, per-row a / per-column b params, doc
    ("2d", (4, 7), (7, 5), u8, u8, False, "2-D"),
    ("3d", (2, 3, 6), (2, 6, 4), u8, i8, False, "3-D batches"),
    ("bcast", (2, 1, 3, 5), (4, 5, 6), i8, i8, True, "batch dims broadcast; per-row / per-column"),
]


def mm_operands(c, as_, bs, at, bt, per):
    a, b = qvalues(c, at, *as_), qvalues(c, bt, *bs)
    azp = (qvalues(c, at, as_[-2]) // 4).astype(at) if per else np.array(RANGE[np.dtype(at)][0] + 120, at)
    bzp = (qvalues(c, bt, bs[-1]) // 4).astype(bt) if per else np.array(2, bt)
    return a, b, azp, bzp


def matmulinteger_cases():
    for name, as_, bs, at, bt, per, doc in MATMULS:
        c = Case(f"matmulinteger_{name}", "MatMulInteger", doc)
        a, b, azp, bzp = mm_operands(c, as_, bs, at, bt, per)
        c.input("a", a).param("b", b).input("a_zp", azp).param("b_zp", bzp)
        c.compute_numpy(lambda a, b, az, bz: int_matmul(a, az, b, bz).astype(i32))
        c.check(lambda a, b, az, bz: einsum_matmul(a, az, b, bz), atol=0)
    c = Case("matmulinteger_no_zp", "MatMulInteger", "zero points omitted")
    c.input("a", qvalues(c, i8, 3, 4)).input("b", qvalues(c, u8, 4, 2))
    c.compute_numpy(lambda a, b: int_matmul(a, 0, b, 0).astype(i32))


def qlinearmatmul_cases():
    for name, as_, bs, at, bt, per, doc in MATMULS:
        for yt in (u8, i8) if name == "2d" else (u8,):
            tag = "" if yt == u8 else "_y_i8"
            c = Case(f"qlinearmatmul_{name}{tag}", "QLinearMatMul", doc)
            a, b, azp, bzp = mm_operands(c, as_, bs, at, bt, per)
            a_scale = c.uniform(0.01, 0.03, as_[-2]) if per else np.array(0.02, f32)
            b_scale = c.uniform(0.005, 0.02, bs[-1]) if per else np.array(0.01, f32)
            y_scale, yzp = np.array(0.1, f32), np.array(120 if yt == u8 else -2, yt)
            c.input("a", a).param("a_scale", a_scale).param("a_zp", azp).param("b", b)
            c.param("b_scale", b_scale).param("b_zp", bzp).param("y_scale", y_scale).param("y_zp", yzp)

            def ref(a, as_, az, b, bs_, bz, ys_, yz, mm=int_matmul):
                acc = mm(a, az, b, bz)
                m = ((np.asarray(as_).reshape(-1, 1) * np.asarray(bs_).reshape(1, -1)).astype(f32)
                     / ys_).astype(f32)
                return np_requantize(acc, m, yz, yz.dtype)
            c.compute_numpy(ref)
            c.check(lambda *v, ref=ref: ref(*v, mm=einsum_matmul), atol=0)


def main():
    quantize_cases()
    dequantize_cases()
    dynamic_cases()
    convinteger_cases()
    qlinearconv_cases()
    matmulinteger_cases()
    qlinearmatmul_cases()
    gm.write_family("quant", write_case)


if __name__ == "__main__":
    main()

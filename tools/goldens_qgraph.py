#!/usr/bin/python3
"""Writes the golden cases of the quantized graph ops the quantize pass uses between quantized
layers (docs/quantization.md, "Quantized graph ops"): QLinearAdd, QLinearGlobalAveragePool,
QLinearAveragePool, QLinearConcat (Kiln's own ops, onnxruntime's com.microsoft semantics) and
MaxPool on u8 / i8.
Same layout as tools/goldens_quant.py (whose Case and write_case it reuses):
tests/goldens/ops/qgraph_<case>/ and tests/goldens/ops/cases-qgraph.txt.

References, each exact:
  QLinear*   numpy applying the stated formula: the ratios x_scale / y_scale in f32, the values in
             f64, np.rint (half to even), + zero point, clip. Checked exactly against Python's
             fractions (the exact real value, rounded half to even by round()), and within one
             quantization step against PyTorch (dequantize, the float op, quantize_per_tensor),
             which rounds its own way.
  MaxPool    torch max_pool2d / max_pool1d on the integers as float64 (exact), checked against a
             numpy loop.

Run: /usr/bin/python3 tools/goldens_qgraph.py   (deletes and rewrites tests/goldens/ops/qgraph_*/)
"""

import os
import sys
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_math as gm  # noqa: E402
import goldens_quant as gq  # noqa: E402

gm.PREFIX = "qgraph_"
f32, f64, u8, i8 = np.float32, np.float64, np.uint8, np.int8
Case = gq.Case


def ratio(scale, y_scale):
    """The requantize multiplier in f32, as the ops compute it."""
    return f32(f32(scale) / f32(y_scale))


def clip(v, dtype):
    lo, hi = gq.RANGE[np.dtype(dtype)]
    return np.clip(v, lo, hi).astype(dtype)


def exact_round(values):
    """Fractions rounded half to even (Python's round on a Fraction), as an int64 array."""
    return np.array([round(v) for v in values], np.int64)


def torch_requantize(f, scale, zp, dtype):
    """PyTorch's quantization of float values f: a third-party reference within one step."""
    qt = torch.quint8 if dtype == u8 else torch.qint8
    t = torch.from_numpy(np.asarray(f, f32))
    return torch.quantize_per_tensor(t, float(scale), int(zp), qt).int_repr().numpy()


def dequantize(x, scale, zp):
    return ((x.astype(np.int64) - int(zp)).astype(f32) * f32(scale)).astype(f32)


# ---------------------------------------------------------------- QLinearAdd

def np_qadd(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
    va = (a.astype(np.int64) - int(a_z)).astype(f64) * f64(ratio(a_s, y_s))
    vb = (b.astype(np.int64) - int(b_z)).astype(f64) * f64(ratio(b_s, y_s))
    return clip(np.rint(va + vb) + int(y_z), y_z.dtype)


def fraction_qadd(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
    a, b = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    ma, mb = Fraction(float(ratio(a_s, y_s))), Fraction(float(ratio(b_s, y_s)))
    exact = [(int(p) - int(a_z)) * ma + (int(q) - int(b_z)) * mb for p, q in zip(a.flat, b.flat)]
    return clip(exact_round(exact).reshape(a.shape) + int(y_z), y_z.dtype)


def torch_qadd(a, a_s, a_z, b, b_s, b_z, y_s, y_z):
    total = dequantize(a, a_s, a_z) + dequantize(b, b_s, b_z)
    return torch_requantize(total, y_s, y_z, y_z.dtype)


ADDS = [
    # name, a shape, b shape, a dtype, b dtype, a scale, b scale, y scale, y zp, doc
    ("same", (2, 3, 4, 5), (2, 3, 4, 5), u8, u8, 0.031, 0.047, 0.06, np.array(120, u8),
     "ResNet's residual add: equal shapes, u8"),
    ("relu", (1, 4, 3, 3), (1, 4, 3, 3), u8, u8, 0.02, 0.05, 0.04, np.array(0, u8),
     "y zero point 0: the fused Relu (negative sums saturate at 0)"),
    ("bcast_i8", (2, 3, 4, 5), (3, 1, 1), i8, u8, 0.1, 0.03, 0.12, np.array(-5, i8),
     "numpy broadcasting, i8 a and y, u8 b"),
    ("ties", (4, 8), (4, 8), u8, u8, 0.25, 0.25, 0.5, np.array(128, u8),
     "power-of-two scales: ratios 0.5, exact halves round to even"),
]


def qadd_cases():
    for name, as_, bs, at, bt, a_s, b_s, y_s, y_z, doc in ADDS:
        c = Case(f"qlinearadd_{name}", "QLinearAdd", doc)
        a, b = gq.qvalues(c, at, *as_), gq.qvalues(c, bt, *bs)
        a_z = np.array(128 if at == u8 else 3, at)
        b_z = np.array(100 if bt == u8 else -2, bt)
        c.input("a", a).param("a_scale", np.array(a_s, f32)).param("a_zp", a_z)
        c.input("b", b).param("b_scale", np.array(b_s, f32)).param("b_zp", b_z)
        c.param("y_scale", np.array(y_s, f32)).param("y_zp", y_z)
        c.compute_numpy(np_qadd)
        c.check(fraction_qadd, atol=0)
        c.check(torch_qadd, atol=1)


# ---------------------------------------------------------------- QLinearGlobalAveragePool

def np_qgap(x, x_s, x_z, y_s, y_z):
    axes = tuple(range(2, x.ndim))
    size = int(np.prod(x.shape[2:]))
    acc = (x.astype(np.int64) - int(x_z)).sum(axis=axes, keepdims=True).astype(f64)
    return clip(np.rint(acc * f64(ratio(x_s, y_s)) / size) + int(y_z), y_z.dtype)


def fraction_qgap(x, x_s, x_z, y_s, y_z):
    rows = x.reshape(x.shape[0] * x.shape[1], -1).astype(np.int64) - int(x_z)
    m = Fraction(float(ratio(x_s, y_s)))
    exact = [int(r.sum()) * m / rows.shape[1] for r in rows]
    out_shape = x.shape[:2] + (1,) * (x.ndim - 2)
    return clip(exact_round(exact).reshape(out_shape) + int(y_z), y_z.dtype)


def torch_qgap(x, x_s, x_z, y_s, y_z):
    mean = torch.from_numpy(dequantize(x, x_s, x_z)).mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    return torch_requantize(mean.numpy(), y_s, y_z, y_z.dtype)


GAPS = [
    # name, x shape, x dtype, x scale, x zp, y scale, y zp, doc
    ("resnet", (2, 8, 7, 7), u8, 0.05, 0, 0.011, np.array(0, u8), "ResNet-18's: 7x7, after a Relu"),
    ("zp", (1, 3, 5, 5), u8, 0.02, 131, 0.004, np.array(128, u8), "x and y zero points"),
    ("i8_3d", (1, 2, 3, 4, 2), i8, 0.1, -4, 0.0075, np.array(5, i8), "i8, three spatial axes"),
    ("ties", (1, 2, 2, 2), u8, 0.5, 0, 1.0, np.array(0, u8), "ratio 0.5 over 4: quarter steps, ties"),
]


def qgap_cases():
    for name, shape, xt, x_s, x_z, y_s, y_z, doc in GAPS:
        c = Case(f"qlinearglobalaveragepool_{name}", "QLinearGlobalAveragePool", doc)
        x = gq.qvalues(c, xt, *shape)
        if name == "ties":
            x = np.array([1, 2, 3, 4, 5, 6, 7, 8], u8).reshape(shape)  # means 1.25, 3.25 (x 0.5)
        c.input("x", x).param("x_scale", np.array(x_s, f32)).param("x_zp", np.array(x_z, xt))
        c.param("y_scale", np.array(y_s, f32)).param("y_zp", y_z)
        c.compute_numpy(np_qgap)
        c.check(fraction_qgap, atol=0)
        c.check(torch_qgap, atol=1)


# ---------------------------------------------------------------- QLinearAveragePool

def pool_geometry(n_in, k, s, p, ceil):
    """Output size along one axis (ONNX: with ceil_mode the last window starts inside x or the
    left pad)."""
    out = (n_in + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n_in + p:
        out -= 1
    return out


def qavgpool_windows(x, x_z, k, s, p, ceil, include_pad):
    """Per output: (the integer sum of x - x_zp over the window inside x, the divisor)."""
    nd = x.ndim - 2
    outs = [pool_geometry(x.shape[2 + i], k, s, p, ceil) for i in range(nd)]
    centered = x.astype(np.int64) - int(x_z)
    acc = np.zeros(x.shape[:2] + tuple(outs), np.int64)
    count = np.zeros(tuple(outs), np.int64)
    for pos in np.ndindex(*outs):
        starts = [o * s - p for o in pos]
        inside = tuple(slice(max(a, 0), min(a + k, x.shape[2 + i])) for i, a in enumerate(starts))
        acc[(slice(None), slice(None)) + pos] = centered[(slice(None), slice(None)) + inside].reshape(
            x.shape[0], x.shape[1], -1).sum(-1)
        padded = [min(a + k, x.shape[2 + i] + p) - a for i, a in enumerate(starts)]
        count[pos] = np.prod(padded) if include_pad else np.prod([r.stop - r.start for r in inside])
    return acc, count


def np_qavgpool(a):
    def fn(x, x_s, x_z, y_s, y_z):
        acc, count = qavgpool_windows(x, x_z, *a)
        mean = acc.astype(f64) * f64(ratio(x_s, y_s)) / count.astype(f64)
        return clip(np.rint(mean) + int(y_z), y_z.dtype)
    return fn


def fraction_qavgpool(a):
    def fn(x, x_s, x_z, y_s, y_z):
        acc, count = qavgpool_windows(x, x_z, *a)
        m = Fraction(float(ratio(x_s, y_s)))
        counts = np.broadcast_to(count, acc.shape)
        exact = [int(v) * m / int(n) for v, n in zip(acc.flat, counts.flat)]
        return clip(exact_round(exact).reshape(acc.shape) + int(y_z), y_z.dtype)
    return fn


def torch_qavgpool(a):
    k, s, p, ceil, include_pad = a
    def fn(x, x_s, x_z, y_s, y_z):
        pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool1d
        f = pool(torch.from_numpy(dequantize(x, x_s, x_z)), k, s, p, ceil_mode=ceil,
                 count_include_pad=include_pad).numpy()
        return torch_requantize(f, y_s, y_z, y_z.dtype)
    return fn


AVGPOOLS = [
    # name, x shape, dtype, x scale, x zp, y scale, y zp, (kernel, stride, pad, ceil_mode,
    # count_include_pad), doc
    ("u8_k3s2p1", (1, 3, 9, 9), u8, 0.05, 7, 0.03, np.array(4, u8), (3, 2, 1, False, False),
     "3x3 stride 2 pads 1, padding not counted, zero points"),
    ("u8_googlenet", (1, 4, 7, 7), u8, 0.04, 0, 0.02, np.array(0, u8), (5, 3, 0, False, False),
     "GoogLeNet's auxiliary head: 5x5 stride 3, after a Relu"),
    ("include_pad_ceil", (2, 2, 6, 7), u8, 0.02, 130, 0.01, np.array(120, u8),
     (3, 2, 1, True, True), "count_include_pad with ceil_mode: the overhang is not counted"),
    ("i8_1d", (1, 4, 10), i8, 0.1, -3, 0.07, np.array(2, i8), (4, 3, 1, True, False),
     "1-D, i8, ceil_mode"),
    ("ties", (1, 1, 4, 4), u8, 0.5, 1, 0.5, np.array(0, u8), (2, 2, 0, False, False),
     "ratio 1 over 4: sums 10, 18, 42, 50 give halves, rounded to even"),
]


def qavgpool_cases():
    for name, shape, xt, x_s, x_z, y_s, y_z, a, doc in AVGPOOLS:
        c = Case(f"qlinearaveragepool_{name}", "QLinearAveragePool", doc)
        nd = len(shape) - 2
        k, s, p, ceil, include_pad = a
        x = gq.qvalues(c, xt, *shape)
        if name == "ties":
            x = np.arange(1, 17, dtype=u8).reshape(shape)
        c.input("x", x).param("x_scale", np.array(x_s, f32)).param("x_zp", np.array(x_z, xt))
        c.param("y_scale", np.array(y_s, f32)).param("y_zp", y_z)
        c.set(kernel_shape=[k] * nd, strides=[s] * nd, pads=[p] * (2 * nd))
        if ceil:
            c.set(ceil_mode=1)
        if include_pad:
            c.set(count_include_pad=1)
        c.compute_numpy(np_qavgpool(a))
        c.check(fraction_qavgpool(a), atol=0)
        c.check(torch_qavgpool(a), atol=1)


# ---------------------------------------------------------------- QLinearConcat

def triples(args):
    return [args[i:i + 3] for i in range(2, len(args), 3)]


def np_qconcat(axis):
    def fn(y_s, y_z, *xs):
        parts = [(x.astype(np.int64) - int(z)).astype(f64) * f64(ratio(s, y_s))
                 for x, s, z in triples((y_s, y_z) + xs)]
        return clip(np.rint(np.concatenate(parts, axis=axis)) + int(y_z), y_z.dtype)
    return fn


def fraction_qconcat(axis):
    def fn(y_s, y_z, *xs):
        parts = []
        for x, s, z in triples((y_s, y_z) + xs):
            m = Fraction(float(ratio(s, y_s)))
            exact = exact_round([(int(v) - int(z)) * m for v in x.astype(np.int64).flat])
            parts.append(exact.reshape(x.shape))
        return clip(np.concatenate(parts, axis=axis) + int(y_z), y_z.dtype)
    return fn


def torch_qconcat(axis):
    def fn(y_s, y_z, *xs):
        f = np.concatenate([dequantize(x, s, z) for x, s, z in triples((y_s, y_z) + xs)], axis)
        return torch_requantize(f, y_s, y_z, y_z.dtype)
    return fn


CONCATS = [
    # name, axis, [(x shape, x scale, x zp)], x and y dtype, y scale, y zp, doc
    ("channels", 1, [((1, 2, 3, 3), 0.02, 120), ((1, 3, 3, 3), 0.05, 90)], u8, 0.04, 110,
     "GoogLeNet-like: along channels, two scales"),
    ("copy", 1, [((2, 2, 4), 0.04, 110), ((2, 1, 4), 0.04, 110)], u8, 0.04, 110,
     "inputs at y's scale and zero point: copied unchanged"),
    ("last_i8", -1, [((2, 3, 2), 0.1, -3), ((2, 3, 1), 0.03, 4), ((2, 3, 3), 0.2, 0)], i8, 0.09, -1,
     "axis -1, three i8 inputs"),
]


def qconcat_cases():
    for name, axis, parts, t, y_s, y_z, doc in CONCATS:
        c = Case(f"qlinearconcat_{name}", "QLinearConcat", doc)
        c.param("y_scale", np.array(y_s, f32)).param("y_zp", np.array(y_z, t))
        for k, (shape, s, z) in enumerate(parts):
            c.input(f"x{k}", gq.qvalues(c, t, *shape))
            c.param(f"x{k}_scale", np.array(s, f32)).param(f"x{k}_zp", np.array(z, t))
        c.set(axis=axis)
        c.compute_numpy(np_qconcat(axis))
        c.check(fraction_qconcat(axis), atol=0)
        c.check(torch_qconcat(axis), atol=1)
        if name == "copy":
            c.check(lambda y_s, y_z, *xs: np.concatenate(xs[0::3], 1), atol=0)


# ---------------------------------------------------------------- MaxPool on i8 / u8

def torch_maxpool(x, k, s, p, ceil):
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool1d
    y = pool(torch.from_numpy(x.astype(f64)), k, s, p, ceil_mode=ceil).numpy()
    return y.astype(x.dtype)


def loop_maxpool(x, k, s, p, ceil):
    """The definition over the last axis or two, padding ignored (lowest value of the dtype)."""
    lo = gq.RANGE[np.dtype(x.dtype)][0]
    nd = x.ndim - 2
    pad = [(0, 0), (0, 0)] + [(p, p + s)] * nd
    xp = np.pad(x.astype(np.int64), pad, constant_values=lo)
    outs = []
    for i in range(nd):
        n = x.shape[2 + i] + 2 * p - k
        outs.append((n + (s - 1 if ceil else 0)) // s + 1)
        if ceil and (outs[i] - 1) * s >= x.shape[2 + i] + p:
            outs[i] -= 1
    y = np.full(x.shape[:2] + tuple(outs), lo, np.int64)
    for pos in np.ndindex(*outs):
        window = xp[(slice(None), slice(None)) + tuple(slice(o * s, o * s + k) for o in pos)]
        y[(slice(None), slice(None)) + pos] = window.reshape(x.shape[0], x.shape[1], -1).max(-1)
    return y.astype(x.dtype)


POOLS = [
    # name, x shape, dtype, kernel, stride, pad, ceil_mode, doc
    ("u8_resnet", (1, 3, 9, 9), u8, 3, 2, 1, False, "ResNet-18's: 3x3, stride 2, pads 1, u8"),
    ("i8_ceil", (2, 2, 6, 7), i8, 2, 2, 0, True, "i8, ceil_mode"),
    ("u8_1d", (1, 4, 10), u8, 3, 1, 1, False, "1-D, u8"),
]


def maxpool_cases():
    for name, shape, t, k, s, p, ceil, doc in POOLS:
        c = Case(f"maxpool_{name}", "MaxPool", doc)
        nd = len(shape) - 2
        c.input("x", gq.qvalues(c, t, *shape))
        c.set(kernel_shape=[k] * nd, strides=[s] * nd, pads=[p] * (2 * nd))
        if ceil:
            c.set(ceil_mode=1)
        c.compute_numpy(lambda x, a=(k, s, p, ceil): torch_maxpool(x, *a))
        c.check(lambda x, a=(k, s, p, ceil): loop_maxpool(x, *a), atol=0)


def main():
    qadd_cases()
    qgap_cases()
    qavgpool_cases()
    qconcat_cases()
    maxpool_cases()
    gm.write_family("qgraph", gq.write_case)


if __name__ == "__main__":
    main()

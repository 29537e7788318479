#!/usr/bin/python3
"""Writes the golden cases of the fast integer kernels (docs/quantization.md, "Integer kernels"):
QLinearConv / ConvInteger with u8 or i8 x and constant symmetric i8 w (the patches-times-packed-
weights GEMM of compiler/ops/quant/qconv.c), QLinearMatMul / MatMulInteger with a constant 2-D
i8 b (qmatmul.c), and the shapes those kernels handle apart: channels that are no multiple of the
vector width, odd widths, stride 2, dilation 2, asymmetric pads, nonzero x zero points, per-channel
w scales, a batch of 2, more columns than rows, a 1x1 conv read in place, K not a multiple of 64,
the AMX tiles' implicit patches (output rows of 18 pixels, stride 2, window rows of 96 bytes),
and the edges of the dot4 tiles (16-lane column vectors in tiles of 4, rows in tiles of 4, blocks
of 48 rows): 70 and 100 output channels, K not a multiple of 4; implicit patches (window rows
read in place from the NHWC copy) over a batch of 2, and requantize multipliers above 1/2 (the
f64 saturation rather than the integer one).
Group 2 and depthwise convs keep the general lowering; they are here with the same operands.

References, each independent of Kiln's code: the integer sums by numpy loops on int64 (the ONNX
definition, padding with x's zero point), checked against torch conv2d / matmul on float64 (exact
for these integers); requantization by numpy as ONNX's reference does (goldens_quant.py's
np_requantize: f32 multiplier, f64 product, rint, zero point, clip).

Same layout as tools/goldens_quant.py (whose Case and writer it reuses): tests/goldens/ops/
quant_vnni_<case>/ and tests/goldens/ops/cases-quant-vnni.txt.

Run: /usr/bin/python3 tools/goldens_quant_vnni.py   (deletes and rewrites tests/goldens/ops/quant_vnni_*/)
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_math as gm  # noqa: E402
import goldens_quant as gq  # noqa: E402

gm.PREFIX = "quant_vnni_"
f32, f64, u8, i8, i32 = np.float32, np.float64, np.uint8, np.int8, np.int32


# ---------------------------------------------------------------- integer references

def loop_conv(x, xzp, w, bias, stride, pads, dil, group):
    """The definition as loops over int64; pads [top, left, bottom, right] filled with x's zero
    point; w symmetric (zero point 0)."""
    N, C, H, W = x.shape
    M, CG, KH, KW = w.shape
    top, left, bottom, right = pads
    OH = (H + top + bottom - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dil[1] * (KW - 1) - 1) // stride[1] + 1
    xp = np.full((N, C, H + top + bottom, W + left + right), int(xzp), np.int64)
    xp[:, :, top:top + H, left:left + W] = x
    xp -= int(xzp)
    y = np.zeros((N, M, OH, OW), np.int64)
    for n in range(N):
        for oc in range(M):
            g = oc // (M // group)
            for oh in range(OH):
                for ow in range(OW):
                    s = 0 if bias is None else int(bias[oc])
                    for kh in range(KH):
                        for kw in range(KW):
                            ih, iw = oh * stride[0] + kh * dil[0], ow * stride[1] + kw * dil[1]
                            patch = xp[n, g * CG:(g + 1) * CG, ih, iw]
                            s += int(np.dot(patch, w[oc, :, kh, kw].astype(np.int64)))
                    y[n, oc, oh, ow] = s
    return y


def torch_conv(x, xzp, w, bias, stride, pads, dil, group):
    """torch conv2d on float64 over x padded explicitly (F.pad: left, right, top, bottom)."""
    top, left, bottom, right = pads
    xv = F.pad(torch.from_numpy(x.astype(f64) - float(xzp)), (left, right, top, bottom))
    b = torch.from_numpy(bias.astype(f64)) if bias is not None else None
    y = F.conv2d(xv, torch.from_numpy(w.astype(f64)), b, stride, 0, dil, group).numpy()
    return np.rint(y).astype(np.int64)


def loop_matmul(a, azp, b):
    """Row by column dot products over int64 (b symmetric)."""
    av = a.astype(np.int64) - int(azp)
    rows = av.reshape(-1, av.shape[-1])
    y = np.array([[int(np.dot(r, b[:, j].astype(np.int64))) for j in range(b.shape[1])]
                  for r in rows], np.int64)
    return y.reshape(*a.shape[:-1], b.shape[1])


def torch_matmul(a, azp, b):
    return torch.matmul(torch.from_numpy(a.astype(f64) - float(azp)),
                        torch.from_numpy(b.astype(f64))).numpy().round().astype(np.int64)


def requantize(acc, x_scale, w_scale, y_scale, yzp, axis):
    m = ((x_scale * w_scale).astype(f32) / y_scale).astype(f32)
    return gq.np_requantize(acc, gq.channel_shape(acc, axis, m), yzp, yzp.dtype)


# ---------------------------------------------------------------- convolutions

CONVS = [
    # name, x shape, w shape, stride, pads (t, l, b, r), dilation, group, x dtype, y dtype, doc
    ("c5_w7", (1, 5, 6, 7), (6, 5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "5 channels, odd width 7, 6 output channels (a tail of 2)"),
    ("stride2", (1, 3, 9, 9), (4, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "stride 2"),
    ("dil2", (1, 4, 7, 8), (5, 4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, u8, u8,
     "dilation 2 (patches gathered per kw)"),
    ("asym_pads", (1, 6, 5, 6), (3, 6, 3, 2), (1, 1), (0, 1, 2, 0), (1, 1), 1, u8, u8,
     "asymmetric pads (top 0, left 1, bottom 2, right 0), 3x2 kernel"),
    ("rows_blocks", (2, 3, 9, 8), (7, 3, 2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1, u8, u8,
     "batch 2: 128 GEMM rows (2 blocks of 48 and one of 32), 7 columns"),
    ("cols_outer", (1, 7, 3, 3), (21, 7, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "21 output channels over 9 pixels: column blocks outermost"),
    ("x_i8", (1, 4, 5, 5), (6, 4, 3, 3), (2, 1), (1, 0, 1, 2), (1, 1), 1, i8, i8,
     "i8 x (shifted to u8 by the kernel), i8 y, stride (2, 1)"),
    ("pointwise", (1, 64, 3, 5), (8, 64, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, u8, u8,
     "1x1 over 64 channels: the GEMM reads the NHWC copy in place"),
    ("pointwise_s2", (1, 20, 5, 5), (9, 20, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, u8, u8,
     "1x1, stride 2, 20 channels"),
    ("group2", (1, 4, 6, 6), (6, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, u8, u8,
     "group 2 (the general lowering)"),
    ("depthwise", (1, 5, 6, 5), (5, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 5, u8, u8,
     "depthwise, stride 2 (the general lowering)"),
    ("implicit_batch2", (2, 8, 7, 6), (20, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "batch 2, 3x3 over 8 channels: window rows read in place from the NHWC copy (no patches)"),
    ("big_mult", (1, 8, 4, 5), (5, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "multipliers 0.4 to 2 (y scale 1e-4): the requantize keeps its f64 saturation"),
    ("wide_tail", (1, 7, 9, 11), (70, 7, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "70 output channels (a whole tile of 64 and a vector of 6 lanes), 99 rows (2 blocks of 48 "
     "and 3 rows), K = 63 (no multiple of 4)"),
    ("amx_implicit_s2", (2, 64, 7, 35), (40, 64, 2, 2), (2, 2), (1, 1, 1, 1), (1, 1), 1, u8, u8,
     "batch 2, 64 channels, stride 2, output rows of 18 pixels: with AMX, implicit patches in "
     "tiles of one output row (16 + 2 rows, 32 + 8 columns), K = 256 in window rows of 128"),
    ("amx_runs96", (1, 32, 5, 20), (24, 32, 2, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, u8, u8,
     "2x3 kernel over 32 channels, output rows of 18 pixels: K = 192 as 2 window rows of 96 "
     "bytes (AMX: 64 bytes and a tail of 32 per window row)"),
]

# ConvInteger only (the tiles store the corrected sums themselves, lanes cut at the last column).
CONVS_INTEGER = [
    ("cols_tail", (1, 6, 3, 7), (100, 6, 1, 3), (1, 1), (0, 1, 0, 1), (1, 1), 1, u8, i32,
     "100 output channels over 21 pixels: column blocks outermost, the last of 36 columns "
     "(3 vectors, 4 lanes in the last), K = 18"),
]


def conv_attrs(c, stride, pads, dil, group):
    if stride != (1, 1):
        c.set(strides=list(stride))
    if any(pads):
        c.set(pads=list(pads))
    if dil != (1, 1):
        c.set(dilations=list(dil))
    if group != 1:
        c.set(group=group)


def x_zero_point(xt):
    return np.array(131 if xt == u8 else -9, xt)


def qlinearconv_cases():
    for name, xs, ws, stride, pads, dil, group, xt, yt, doc in CONVS:
        c = gq.Case(f"qlinearconv_{name}", "QLinearConv", doc + "; per-channel w scales, i32 bias")
        x, w = gq.qvalues(c, xt, *xs), gq.qvalues(c, i8, *ws)
        x_scale, w_scale = np.array(0.02, f32), c.uniform(0.002, 0.01, ws[0])
        y_scale = np.array(1e-4 if name == "big_mult" else 0.15, f32)
        yzp = np.array(97 if yt == u8 else -6, yt)
        bias = c.ints(-3000, 3000, ws[0], dtype=i32)
        c.input("x", x).param("x_scale", x_scale).param("x_zp", x_zero_point(xt)).param("w", w)
        c.param("w_scale", w_scale).param("w_zp", np.zeros(ws[0], i8)).param("y_scale", y_scale)
        c.param("y_zp", yzp).param("bias", bias)
        conv_attrs(c, stride, pads, dil, group)
        args = (stride, pads, dil, group)

        def ref(x, xs_, xz, w, ws_, wz, ys_, yz, b, a=args, conv=loop_conv):
            return requantize(conv(x, xz, w, b, *a), xs_, ws_, ys_, yz, 1)
        c.compute_numpy(ref)
        c.check(lambda *v, ref=ref: ref(*v, conv=torch_conv), atol=0)


def convinteger_cases():
    for name in ("x_i8", "cols_tail"):
        _, xs, ws, stride, pads, dil, group, xt, _, doc = next(
            v for v in CONVS + CONVS_INTEGER if v[0] == name)
        c = gq.Case(f"convinteger_{name}", "ConvInteger", doc + "; i32 output")
        x, w = gq.qvalues(c, xt, *xs), gq.qvalues(c, i8, *ws)
        c.input("x", x).param("w", w).param("x_zp", x_zero_point(xt))
        conv_attrs(c, stride, pads, dil, group)
        args = (stride, pads, dil, group)
        c.compute_numpy(lambda x, w, xz, a=args: loop_conv(x, xz, w, None, *a).astype(i32))
        c.check(lambda x, w, xz, a=args: torch_conv(x, xz, w, None, *a), atol=0)


# ---------------------------------------------------------------- matmuls

MATMULS = [
    # name, a shape, b shape, a dtype, y dtype, doc
    ("k70", (3, 70), (70, 9), u8, u8, "K = 70 (padded to whole vectors), 9 columns"),
    ("a_i8_3d", (2, 3, 70), (70, 5), i8, i8, "i8 a with batch dims (2, 3) against a 2-D b"),
    ("k64_wide", (2, 64), (64, 13), u8, u8, "K = 64 (a read in place), more columns than rows"),
]


def qlinearmatmul_cases():
    for name, as_, bs, at, yt, doc in MATMULS:
        c = gq.Case(f"qlinearmatmul_{name}", "QLinearMatMul", doc + "; per-column b scales")
        a, b = gq.qvalues(c, at, *as_), gq.qvalues(c, i8, *bs)
        a_scale, b_scale = np.array(0.03, f32), c.uniform(0.002, 0.01, bs[1])
        y_scale, yzp = np.array(0.2, f32), np.array(120 if yt == u8 else -3, yt)
        c.input("a", a).param("a_scale", a_scale).param("a_zp", x_zero_point(at)).param("b", b)
        c.param("b_scale", b_scale).param("b_zp", np.array(0, i8)).param("y_scale", y_scale)
        c.param("y_zp", yzp)

        def ref(a, as_, az, b, bs_, bz, ys_, yz, mm=loop_matmul):
            return requantize(mm(a, az, b), as_, bs_, ys_, yz, -1)
        c.compute_numpy(ref)
        c.check(lambda *v, ref=ref: ref(*v, mm=torch_matmul), atol=0)


def matmulinteger_cases():
    name, as_, bs, at, _, doc = MATMULS[0]
    c = gq.Case(f"matmulinteger_{name}", "MatMulInteger", doc + "; i32 output, b_zp omitted")
    a, b = gq.qvalues(c, at, *as_), gq.qvalues(c, i8, *bs)
    c.input("a", a).param("b", b).param("a_zp", x_zero_point(at))
    c.compute_numpy(lambda a, b, az: loop_matmul(a, az, b).astype(i32))
    c.check(lambda a, b, az: torch_matmul(a, az, b), atol=0)


def main():
    qlinearconv_cases()
    convinteger_cases()
    qlinearmatmul_cases()
    matmulinteger_cases()
    gm.write_family("quant-vnni", gq.write_case)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes per-op golden cases for the C test-suite: tests/goldens/ops/<case>/ holds

    model.json           a single-op Kiln model named op_<case> (params inline, or from
                         weights.safetensors in the same directory when a param has >= 2000 elements)
    <input>.npy          one per model input (random float32, seeded from the case name)
    y.npy                the output, computed by PyTorch (torch / torch.nn.functional) in float32

and tests/goldens/ops/cases.txt with one line `<case> <op>` per case.

Semantics are ONNX (opset 13+). Conv and the pools are additionally checked against a direct
numpy implementation of the ONNX definitions (pads = [top, left, bottom, right], auto_pad,
ceil_mode, count_include_pad), so every case is one where PyTorch and ONNX agree. PyTorch's
avg_pool2d differs from ONNX only for ceil_mode windows that start in the right padding (torch
drops them; ONNX before opset 19 did not say) and for count_include_pad=1 windows that run past
the padding under ceil_mode; no case here has either.

Run: /usr/bin/python3 tools/make_op_goldens.py     (deletes and rewrites tests/goldens/ops/)
"""

import math
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

INLINE_MAX = 2000  # params with fewer elements are written inline as init values
CASES = []


class Case:
    def __init__(self, name, op, doc=None):
        assert name.replace("_", "a").isalnum() and not name[0].isdigit(), name
        self.name, self.op, self.doc = name, op, doc
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.inputs = []   # [(name, ndarray)]
        self.params = []   # [(name, ndarray)]
        self.node_inputs = []
        self.attrs = {}
        self.fn = None
        CASES.append(self)

    # random data
    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def nonzero(self, *shape):  # |v| in [0.5, 2], random sign: safe denominators
        return (self.uniform(0.5, 2.0, *shape) * self.rng.choice([-1.0, 1.0], shape)).astype(np.float32)

    # graph
    def input(self, name, arr):
        self.inputs.append((name, np.ascontiguousarray(arr)))
        self.node_inputs.append(name)
        return self

    def param(self, name, arr):
        self.params.append((name, np.ascontiguousarray(arr)))
        self.node_inputs.append(name)
        return self

    def skip(self):  # an omitted optional input ("")
        self.node_inputs.append("")
        return self

    def set(self, **attrs):
        self.attrs.update(attrs)
        return self

    def compute(self, fn):
        """fn(*tensors in node-input order, None for skipped) -> torch output."""
        self.fn = fn
        return self

    def run(self):
        vals = dict(self.inputs + self.params)
        args = [torch.from_numpy(vals[n].copy()) if n else None for n in self.node_inputs]
        with torch.no_grad():
            y = self.fn(*args)
        y = y.numpy()
        assert y.dtype == np.float32, (self.name, y.dtype)
        assert np.all(np.isfinite(y)), self.name
        return np.ascontiguousarray(y)


def dtype_name(a):
    return kiln_io.KILN_DTYPES[a.dtype]


def write_case(root, c):
    d = os.path.join(root, c.name)
    y = c.run()
    params, weights = [], {}
    for n, a in c.params:
        p = {"name": n, "dtype": dtype_name(a), "shape": list(a.shape)}
        if a.size >= INLINE_MAX:
            weights[n] = a
        elif a.dtype == np.float32:
            p["init"] = {"kind": "values", "values": kiln_io.f32_values(a)}
        else:
            p["init"] = {"kind": "values", "values": kiln_io.int_values(a)}
        params.append(p)
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": ["y"]}
    if c.attrs:
        node["attrs"] = c.attrs
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    if c.doc:
        model["doc"] = c.doc
    if weights:
        model["weights"] = "weights.safetensors"
        kiln_io.write_safetensors(os.path.join(d, "weights.safetensors"), weights)
    model["inputs"] = [{"name": n, "dtype": dtype_name(a), "shape": list(a.shape)} for n, a in c.inputs]
    model["outputs"] = [{"name": "y", "dtype": "f32", "shape": list(y.shape)}]
    if params:
        model["params"] = params
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        kiln_io.save_npy(os.path.join(d, f"{n}.npy"), a)
    kiln_io.save_npy(os.path.join(d, "y.npy"), y)
    return y


# ---------------------------------------------------------------- ONNX helpers (torch side)

def onnx_pads_to_torch(pads):
    """ONNX 2-D pads [top, left, bottom, right] -> F.pad's (left, right, top, bottom)."""
    t, l, b, r = pads
    return (l, r, t, b)


def auto_pads(in_hw, k_hw, strides, dilations, mode):
    """ONNX auto_pad -> explicit [top, left, bottom, right]."""
    begin, end = [], []
    for n, k, s, d in zip(in_hw, k_hw, strides, dilations):
        if mode == "VALID":
            begin.append(0), end.append(0)
            continue
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        if mode == "SAME_UPPER":
            begin.append(small), end.append(big)
        else:  # SAME_LOWER
            begin.append(big), end.append(small)
    return begin + end


def torch_conv(x, w, b, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1):
    x = F.pad(x, onnx_pads_to_torch(pads))
    return F.conv2d(x, w, b, stride=tuple(strides), padding=0, dilation=tuple(dilations), groups=group)


# ---------------------------------------------------------------- ONNX reference (numpy, literal)

def np_conv(x, w, b, strides, pads, dilations, group):
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    N, C, H, W = x.shape
    M, Cg, KH, KW = w.shape
    t, l, bo, r = pads
    xp = np.zeros((N, C, H + t + bo, W + l + r))
    xp[:, :, t:t + H, l:l + W] = x
    sh, sw = strides
    dh, dw = dilations
    OH = (H + t + bo - (dh * (KH - 1) + 1)) // sh + 1
    OW = (W + l + r - (dw * (KW - 1) + 1)) // sw + 1
    y = np.zeros((N, M, OH, OW))
    mg = M // group
    for m in range(M):
        g = m // mg
        for i in range(OH):
            for j in range(OW):
                patch = xp[:, g * Cg:(g + 1) * Cg,
                           i * sh:i * sh + dh * (KH - 1) + 1:dh,
                           j * sw:j * sw + dw * (KW - 1) + 1:dw]
                y[:, m, i, j] = (patch * w[m]).sum(axis=(1, 2, 3))
        if b is not None:
            y[:, m] += b[m]
    return y


def np_pool(x, kind, k, strides, pads, dilations=(1, 1), ceil_mode=0, count_include_pad=0):
    N, C, H, W = x.shape
    x = x.astype(np.float64)
    outs = []
    for ax, n in enumerate((H, W)):
        eff = dilations[ax] * (k[ax] - 1) + 1
        num = n + pads[ax] + pads[ax + 2] - eff
        o = (-(-num // strides[ax]) if ceil_mode else num // strides[ax]) + 1
        if ceil_mode and (o - 1) * strides[ax] >= n + pads[ax]:
            o -= 1  # a window may not start in the end padding
        outs.append(o)
    y = np.zeros((N, C, outs[0], outs[1]))
    for i in range(outs[0]):
        for j in range(outs[1]):
            rows = [i * strides[0] - pads[0] + a * dilations[0] for a in range(k[0])]
            cols = [j * strides[1] - pads[1] + a * dilations[1] for a in range(k[1])]
            vr = [r for r in rows if 0 <= r < H]
            vc = [c for c in cols if 0 <= c < W]
            win = x[:, :, vr][:, :, :, vc]
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                if count_include_pad:  # positions inside the padded input count
                    nr = len([r for r in rows if -pads[0] <= r < H + pads[2]])
                    nc = len([c for c in cols if -pads[1] <= c < W + pads[3]])
                    cnt = nr * nc
                else:
                    cnt = len(vr) * len(vc)
                y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return y


# ---------------------------------------------------------------- cases

BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


def binary(name, op, a_shape, b_shape, b_param=False, doc=None):
    c = Case(name, op, doc)
    a = c.randn(*a_shape)
    b = c.nonzero(*b_shape) if op == "Div" else c.randn(*b_shape)
    c.input("a", a)
    (c.param if b_param else c.input)("b", b)
    return c.compute(BINARY[op])


def elementwise_cases():
    binary("add_same", "Add", (2, 3, 4), (2, 3, 4))
    binary("add_bcast_last", "Add", (2, 3, 4), (4,), doc="(2,3,4) + (4,)")
    binary("add_param", "Add", (3, 5), (5,), b_param=True, doc="second operand is a param")
    binary("sub_same", "Sub", (3, 5), (3, 5))
    binary("sub_bcast_both", "Sub", (3, 1, 5), (4, 1), doc="(3,1,5) - (4,1) -> (3,4,5)")
    binary("sub_bcast_first", "Sub", (4,), (2, 3, 4), doc="the first operand is the broadcast one")
    binary("mul_same", "Mul", (2, 3, 4), (2, 3, 4))
    binary("mul_bcast", "Mul", (2, 1, 4), (3, 1), doc="(2,1,4) * (3,1) -> (2,3,4)")
    binary("div_same", "Div", (2, 3, 4), (2, 3, 4), doc="denominators |b| in [0.5, 2]")
    binary("div_scalar", "Div", (2, 3, 4), (1,), doc="divisor of shape (1,)")
    binary("div_bcast_param", "Div", (2, 3, 4), (3, 1), b_param=True)

    c = Case("relu", "Relu")
    c.input("x", c.randn(2, 3, 4, 5)).compute(torch.relu)

    special = np.array([-20, -10, -5, -1, 0, 1, 5, 10, 20], np.float32)
    c = Case("sigmoid", "Sigmoid", "includes +-5, +-10, +-20")
    x = np.concatenate([special, c.randn(27, scale=3.0)]).reshape(4, 9)
    c.input("x", x).compute(torch.sigmoid)
    c = Case("tanh", "Tanh", "includes +-5, +-10, +-20")
    x = np.concatenate([special, c.randn(27, scale=3.0)]).reshape(4, 9)
    c.input("x", x).compute(torch.tanh)


def softmax_cases():
    c = Case("softmax_last", "Softmax")
    c.input("x", c.randn(3, 5, scale=2.0)).set(axis=-1).compute(lambda x: torch.softmax(x, -1))
    c = Case("softmax_axis1", "Softmax", "opset-13 Softmax: along axis 1 only")
    c.input("x", c.randn(2, 3, 4, scale=2.0)).set(axis=1).compute(lambda x: torch.softmax(x, 1))
    c = Case("softmax_axis0", "Softmax")
    c.input("x", c.randn(3, 4, scale=2.0)).set(axis=0).compute(lambda x: torch.softmax(x, 0))
    c = Case("softmax_default", "Softmax", "no axis attribute: -1")
    c.input("x", c.randn(2, 3, 4, scale=2.0)).compute(lambda x: torch.softmax(x, -1))
    c = Case("softmax_large", "Softmax", "logits up to +-90: exp overflows float32 without max-subtraction")
    x = np.array([[90, 80, 85, -90, 0], [-90, -80, -85, -88, -89]], np.float32)
    c.input("x", x).set(axis=-1).compute(lambda x: torch.softmax(x, -1))


def gemm_ref(alpha=1.0, beta=1.0, transA=0, transB=0):
    def f(a, b, cc=None):
        a = a.t() if transA else a
        b = b.t() if transB else b
        y = alpha * (a @ b)
        if cc is not None:
            y = y + beta * cc
        return y
    return f


def gemm_cases():
    c = Case("gemm_plain", "Gemm", "A (3,4) and B (4,5) both model inputs, no C")
    c.input("a", c.randn(3, 4)).input("b", c.randn(4, 5)).compute(gemm_ref())
    c = Case("gemm_transB_bias", "Gemm", "nn.Linear layout: B (N,K), transB=1, C (N,)")
    c.input("a", c.randn(2, 6)).param("b", c.randn(5, 6)).param("c", c.randn(5))
    c.set(transB=1).compute(gemm_ref(transB=1))
    c = Case("gemm_transA", "Gemm", "A (K,M) = (4,3), transA=1")
    c.input("a", c.randn(4, 3)).param("b", c.randn(4, 5)).param("c", c.randn(3, 5))
    c.set(transA=1).compute(gemm_ref(transA=1))
    c = Case("gemm_transAB", "Gemm")
    c.input("a", c.randn(4, 3)).param("b", c.randn(5, 4)).param("c", c.randn(5))
    c.set(transA=1, transB=1).compute(gemm_ref(transA=1, transB=1))
    c = Case("gemm_alpha_beta", "Gemm", "alpha=0.5 beta=2, C (M,N)")
    c.input("a", c.randn(3, 4)).param("b", c.randn(4, 5)).param("c", c.randn(3, 5))
    c.set(alpha=0.5, beta=2.0).compute(gemm_ref(alpha=0.5, beta=2.0))
    c = Case("gemm_bias_1n", "Gemm", "C (1,N)")
    c.input("a", c.randn(3, 4)).param("b", c.randn(4, 5)).param("c", c.randn(1, 5)).compute(gemm_ref())
    c = Case("gemm_bias_m1", "Gemm", "C (M,1)")
    c.input("a", c.randn(3, 4)).param("b", c.randn(4, 5)).param("c", c.randn(3, 1)).compute(gemm_ref())
    c = Case("gemm_bias_scalar", "Gemm", "C (1,), beta=0.5")
    c.input("a", c.randn(3, 4)).param("b", c.randn(4, 5)).param("c", c.randn(1))
    c.set(beta=0.5).compute(gemm_ref(beta=0.5))
    c = Case("gemm_large", "Gemm", "B (48,64) from weights.safetensors, transB=1")
    c.input("a", c.randn(2, 64)).param("b", c.randn(48, 64, scale=0.1)).param("c", c.randn(48))
    c.set(transB=1).compute(gemm_ref(transB=1))


def matmul_cases():
    mm = torch.matmul
    c = Case("matmul_2d", "MatMul")
    c.input("a", c.randn(3, 4)).input("b", c.randn(4, 5)).compute(mm)
    c = Case("matmul_batched", "MatMul", "(2,3,4) @ (2,4,5)")
    c.input("a", c.randn(2, 3, 4)).input("b", c.randn(2, 4, 5)).compute(mm)
    c = Case("matmul_bcast", "MatMul", "(2,1,3,4) @ (5,4,2) -> (2,5,3,2)")
    c.input("a", c.randn(2, 1, 3, 4)).input("b", c.randn(5, 4, 2)).compute(mm)
    c = Case("matmul_1d_2d", "MatMul", "(4,) @ (4,5) -> (5,)")
    c.input("a", c.randn(4)).input("b", c.randn(4, 5)).compute(mm)
    c = Case("matmul_2d_1d", "MatMul", "(3,4) @ (4,) -> (3,)")
    c.input("a", c.randn(3, 4)).input("b", c.randn(4)).compute(mm)
    c = Case("matmul_3d_2d_param", "MatMul", "(2,3,4) @ param (4,5)")
    c.input("a", c.randn(2, 3, 4)).param("b", c.randn(4, 5)).compute(mm)


def conv(name, x_shape, w_shape, bias=True, strides=(1, 1), pads=None, dilations=(1, 1), group=1,
         auto_pad=None, kernel_attr=True, doc=None):
    c = Case(name, "Conv", doc)
    x = c.randn(*x_shape)
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    w = c.randn(*w_shape, scale=1.0 / math.sqrt(fan_in))
    c.input("x", x).param("w", w)
    b = None
    if bias:
        b = c.randn(w_shape[0])
        c.param("b", b)
    k = tuple(w_shape[2:])
    if kernel_attr:
        c.set(kernel_shape=list(k))
    if strides != (1, 1):
        c.set(strides=list(strides))
    if dilations != (1, 1):
        c.set(dilations=list(dilations))
    if group != 1:
        c.set(group=group)
    if auto_pad:
        c.set(auto_pad=auto_pad)
        pads = auto_pads(x_shape[2:], k, strides, dilations, auto_pad)
    else:
        if pads is not None:
            c.set(pads=list(pads))
        pads = pads or (0, 0, 0, 0)
    c.check = lambda y: np_conv(x, w, b, strides, pads, dilations, group)
    return c.compute(lambda x, w, b=None: torch_conv(x, w, b, strides, pads, dilations, group))


def conv_cases():
    conv("conv_plain", (1, 3, 7, 7), (4, 3, 3, 3))
    conv("conv_nobias", (2, 3, 6, 5), (4, 3, 3, 3), bias=False, doc="batch 2, no bias, H != W")
    conv("conv_no_kernel_attr", (1, 2, 6, 6), (3, 2, 3, 3), kernel_attr=False,
         doc="kernel_shape omitted: inferred from W")
    conv("conv_stride2", (1, 2, 9, 9), (3, 2, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    conv("conv_pads_asym", (1, 2, 6, 7), (3, 2, 3, 3), pads=(1, 0, 2, 1),
         doc="pads [top=1, left=0, bottom=2, right=1]")
    conv("conv_dilation2", (1, 2, 9, 9), (3, 2, 3, 3), dilations=(2, 2), pads=(1, 1, 1, 1))
    conv("conv_group2", (1, 4, 6, 6), (6, 2, 3, 3), group=2, pads=(1, 1, 1, 1))
    conv("conv_depthwise", (1, 3, 7, 7), (3, 1, 3, 3), group=3, pads=(1, 1, 1, 1), doc="group = C")
    conv("conv_depthwise_mult2", (1, 3, 6, 6), (6, 1, 3, 3), group=3, bias=False,
         doc="group = C, 2 output channels per group")
    conv("conv_1x1", (2, 5, 4, 4), (3, 5, 1, 1))
    conv("conv_rect", (1, 2, 7, 9), (3, 2, 2, 3), strides=(1, 2), pads=(0, 1, 1, 0),
         doc="kernel 2x3, strides (1,2): catches H/W mix-ups")
    conv("conv_same_upper_s2", (1, 2, 8, 7), (3, 2, 3, 3), strides=(2, 2), auto_pad="SAME_UPPER",
         doc="H: total pad 1 -> [0 top, 1 bottom]; W: total 2 -> [1, 1]")
    conv("conv_same_lower_s2", (1, 2, 8, 7), (3, 2, 3, 3), strides=(2, 2), auto_pad="SAME_LOWER",
         doc="H: total pad 1 -> [1 top, 0 bottom]; W: total 2 -> [1, 1]")
    conv("conv_same_upper_k4", (1, 1, 5, 6), (2, 1, 4, 4), auto_pad="SAME_UPPER",
         doc="even kernel, stride 1: total pad 3 -> [1, 2]")
    conv("conv_valid", (1, 2, 7, 7), (3, 2, 3, 3), strides=(2, 2), auto_pad="VALID")
    conv("conv_large", (1, 8, 10, 10), (32, 8, 3, 3), pads=(1, 1, 1, 1),
         doc="W has 2304 elements: read from weights.safetensors")


def pool(name, op, x_shape, k, strides=None, pads=None, ceil_mode=0, dilations=None,
         count_include_pad=None, x=None, doc=None):
    c = Case(name, op, doc)
    x = c.randn(*x_shape) if x is None else x(c)
    c.input("x", x).set(kernel_shape=list(k))
    if strides is not None:
        c.set(strides=list(strides))
    if pads is not None:
        c.set(pads=list(pads))
    if ceil_mode:
        c.set(ceil_mode=1)
    if dilations is not None:
        c.set(dilations=list(dilations))
    if count_include_pad is not None:
        c.set(count_include_pad=count_include_pad)
    s = tuple(strides or (1, 1))
    p = tuple(pads or (0, 0, 0, 0))
    d = tuple(dilations or (1, 1))
    assert p[0] == p[2] and p[1] == p[3], "torch pools take symmetric padding only"
    if op == "MaxPool":
        c.check = lambda y: np_pool(x, "max", k, s, p, d, ceil_mode)
        return c.compute(lambda x: F.max_pool2d(x, tuple(k), s, (p[0], p[1]), d, bool(ceil_mode)))
    cip = count_include_pad or 0
    c.check = lambda y: np_pool(x, "avg", k, s, p, (1, 1), ceil_mode, cip)
    return c.compute(lambda x: F.avg_pool2d(x, tuple(k), s, (p[0], p[1]), bool(ceil_mode), bool(cip)))


def pool_cases():
    neg = lambda c: -np.abs(c.randn(1, 2, 6, 6)) - 0.1  # noqa: E731
    pool("maxpool_2x2_s2", "MaxPool", (1, 2, 6, 6), (2, 2), (2, 2))
    pool("maxpool_3x3_s1_p1", "MaxPool", (1, 2, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1))
    pool("maxpool_pad_negative", "MaxPool", None, (3, 3), (2, 2), (1, 1, 1, 1), x=neg,
         doc="all inputs < 0: padding must act as -inf, not 0")
    pool("maxpool_ceil", "MaxPool", (1, 2, 8, 8), (3, 3), (2, 2), ceil_mode=1,
         doc="3x3 s2 on 8x8: 4x4 with ceil_mode (3x3 without); last window starts inside")
    pool("maxpool_dilation2", "MaxPool", (1, 2, 7, 7), (2, 2), (1, 1), dilations=(2, 2))
    pool("maxpool_default_strides", "MaxPool", (1, 1, 4, 5), (2, 2), doc="no strides attribute: 1")
    pool("maxpool_rect", "MaxPool", (2, 1, 6, 7), (2, 3), (2, 1))
    pool("avgpool_2x2_s2", "AveragePool", (1, 2, 6, 6), (2, 2), (2, 2))
    pool("avgpool_3x3_p1_exclude", "AveragePool", (1, 2, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1),
         count_include_pad=0, doc="border windows divide by the number of real elements")
    pool("avgpool_3x3_p1_include", "AveragePool", (1, 2, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1),
         count_include_pad=1, doc="border windows divide by 9")
    pool("avgpool_ceil", "AveragePool", (1, 2, 7, 7), (2, 2), (2, 2), ceil_mode=1,
         doc="2x2 s2 on 7x7 -> 4x4; the last row/column windows hold 2 (corner 1) elements "
             "and divide by that (count_include_pad=0)")
    pool("avgpool_ceil_p1", "AveragePool", (1, 1, 8, 8), (3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=1,
         doc="3x3 s2 p1 on 8x8 -> 5x5, count_include_pad=0; every window starts inside the "
             "input, where torch and ONNX agree")
    pool("avgpool_rect", "AveragePool", (1, 2, 6, 8), (3, 2), (1, 2))


def shape_cases():
    c = Case("flatten_axis1", "Flatten")
    c.input("x", c.randn(2, 3, 4, 5)).set(axis=1).compute(lambda x: x.reshape(2, -1))
    c = Case("flatten_default", "Flatten", "no axis attribute: 1")
    c.input("x", c.randn(2, 3, 4)).compute(lambda x: x.reshape(2, -1))
    c = Case("flatten_axis0", "Flatten", "axis 0 -> (1, 120)")
    c.input("x", c.randn(2, 3, 4, 5)).set(axis=0).compute(lambda x: x.reshape(1, -1))
    c = Case("flatten_axis2", "Flatten", "axis 2 -> (6, 20)")
    c.input("x", c.randn(2, 3, 4, 5)).set(axis=2).compute(lambda x: x.reshape(6, 20))
    c = Case("flatten_axis_neg1", "Flatten", "axis -1 -> (24, 5)")
    c.input("x", c.randn(2, 3, 4, 5)).set(axis=-1).compute(lambda x: x.reshape(24, 5))

    def reshape(name, x_shape, shape, out_shape, doc=None):
        c = Case(name, "Reshape", doc)
        c.input("x", c.randn(*x_shape)).param("shape", np.array(shape, np.int64))
        c.compute(lambda x, s: x.reshape(out_shape))
    reshape("reshape_plain", (2, 3, 4), [4, 6], (4, 6))
    reshape("reshape_zero_neg1", (2, 3, 4), [0, -1], (2, 12), doc="0 copies dim 0, -1 infers 12")
    reshape("reshape_neg1_first", (2, 3, 4), [-1, 0, 2], (4, 3, 2), doc="-1 -> 4, 0 copies dim 1 (3)")
    reshape("reshape_expand_rank", (2, 3, 4), [0, 0, 2, 2], (2, 3, 2, 2))
    reshape("reshape_to_1d", (2, 3, 4), [-1], (24,))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    elementwise_cases()
    softmax_cases()
    gemm_cases()
    matmul_cases()
    conv_cases()
    pool_cases()
    shape_cases()

    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    # Remove only this script's cases (those in cases.txt): the other families' scripts own the
    # rest of tests/goldens/ops/.
    os.makedirs(root, exist_ok=True)
    listed = os.path.join(root, "cases.txt")
    if os.path.exists(listed):
        with open(listed) as f:
            for line in f:
                old = os.path.join(root, line.split()[0]) if line.strip() else None
                if old and os.path.isdir(old):
                    shutil.rmtree(old)
    worst = 0.0
    for c in CASES:
        y = write_case(root, c)
        check = getattr(c, "check", None)
        if check is not None:  # the torch result must match the literal ONNX definition
            ref = check(y)
            assert ref.shape == y.shape, (c.name, ref.shape, y.shape)
            err = float(np.max(np.abs(ref - y)))
            assert err < 1e-5, (c.name, err)
            worst = max(worst, err)
    with open(os.path.join(root, "cases.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {os.path.relpath(root, repo)}/ "
          f"(torch vs numpy ONNX reference: max |diff| {worst:.2e})")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Golden cases for the windowed ops over 1 and 3 spatial axes (and MaxPool's Indices output):
tests/goldens/ops/nd_<case>/ holds

    model.json           a single-op Kiln model named op_nd_<case> (params inline)
    <input>.npy          one per model input (seeded from the case name)
    <output>.npy         one per node output, computed by PyTorch (float32)

and tests/goldens/ops/cases-nd.txt with one line `nd_<case> <op>` per case.

Semantics are ONNX (opset 13+). Every case is also checked against a literal numpy implementation
of the ONNX definition over any number of spatial axes (np_conv, np_conv_transpose, np_maxpool,
np_avgpool below). Where PyTorch lacks the ONNX form the case says how it bridges the gap:
asymmetric pads are applied with F.pad first (zeros for Conv, -inf for MaxPool); ConvTranspose's
output_shape beyond what the transpose covers (negative total padding) is the unpadded result
shifted into a zero (bias) filled output; MaxPool's Indices are PyTorch's per-plane indices plus
the plane's offset (n * C + c) * plane size, and for storage_order 1 the position re-flattened
column-major within the plane.

Run: /usr/bin/python3 tools/goldens_nd.py     (rewrites tests/goldens/ops/nd_*/ and cases-nd.txt)
"""

import glob
import itertools
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

PREFIX = "nd_"
CASES = []


class Case:
    """One single-op model: inputs, params (inline), attrs, the torch computation and the check."""

    def __init__(self, name, op):
        self.name, self.op = PREFIX + name, op
        self.rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        self.inputs, self.params, self.node_inputs = [], [], []
        self.attrs, self.outputs = {}, ["y"]
        self.fn = self.check = None
        CASES.append(self)

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def input(self, name, a):
        self.inputs.append((name, np.ascontiguousarray(a)))
        self.node_inputs.append(name)
        return self

    def param(self, name, a):
        self.params.append((name, np.ascontiguousarray(a)))
        self.node_inputs.append(name)
        return self

    def set(self, **attrs):
        self.attrs.update({k: v for k, v in attrs.items() if v is not None})
        return self

    def arrays(self):
        vals = dict(self.inputs + self.params)
        return [vals[n] for n in self.node_inputs]

    def run(self):
        with torch.no_grad():
            ys = self.fn(*[torch.from_numpy(a.copy()) for a in self.arrays()])
        ys = ys if isinstance(ys, tuple) else (ys,)
        out = [np.ascontiguousarray(y.numpy() if hasattr(y, "numpy") else y) for y in ys]
        assert len(out) == len(self.outputs), self.name
        return out


# ================================================================ numpy references (ONNX, any rank)

def window_out(size, k, s, pb, pe, d, ceil_mode=False):
    ek = (k - 1) * d + 1
    span = size + pb + pe - ek
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def np_conv(x, w, b, strides, pads, dilations, group):
    x, w = x.astype(np.float64), w.astype(np.float64)
    r = x.ndim - 2
    N, C = x.shape[:2]
    M, CG = w.shape[:2]
    MG = M // group
    outs = [window_out(x.shape[2 + a], w.shape[2 + a], strides[a], pads[a], pads[r + a],
                       dilations[a]) for a in range(r)]
    y = np.zeros((N, M) + tuple(outs))
    for o in itertools.product(*[range(n) for n in outs]):
        for k in itertools.product(*[range(n) for n in w.shape[2:]]):
            pos = [o[a] * strides[a] - pads[a] + k[a] * dilations[a] for a in range(r)]
            if any(p < 0 or p >= x.shape[2 + a] for a, p in enumerate(pos)):
                continue
            for oc in range(M):
                c0 = oc // MG * CG
                y[(slice(None), oc) + o] += x[(slice(None), slice(c0, c0 + CG)) + tuple(pos)] @ \
                    w[(oc, slice(None)) + k]
    if b is not None:
        y += b.astype(np.float64).reshape((1, M) + (1,) * r)
    return y


def np_conv_transpose(x, w, b, strides, pad_begin, dilations, group, outs):
    """The scatter definition; pad_begin may be negative (output_shape beyond the transpose)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    r = x.ndim - 2
    N, C = x.shape[:2]
    MG = w.shape[1]
    M, CG = MG * group, C // group
    y = np.zeros((N, M) + tuple(outs))
    for i in itertools.product(*[range(n) for n in x.shape[2:]]):
        for k in itertools.product(*[range(n) for n in w.shape[2:]]):
            pos = [i[a] * strides[a] - pad_begin[a] + k[a] * dilations[a] for a in range(r)]
            if any(p < 0 or p >= outs[a] for a, p in enumerate(pos)):
                continue
            for ic in range(C):
                g = ic // CG
                y[(slice(None), slice(g * MG, (g + 1) * MG)) + tuple(pos)] += \
                    x[(slice(None), ic) + i][:, None] * w[(ic, slice(None)) + k]
    if b is not None:
        y += b.astype(np.float64).reshape((1, M) + (1,) * r)
    return y


def pool_windows(shape, kernel, strides, pads, dilations, ceil_mode):
    """Yields (output position, [input positions inside x], padded count) for every output."""
    r = len(kernel)
    sizes = shape[2:]
    outs = [window_out(sizes[a], kernel[a], strides[a], pads[a], pads[r + a], dilations[a],
                       ceil_mode) for a in range(r)]
    for o in itertools.product(*[range(n) for n in outs]):
        taps = []
        for k in itertools.product(*[range(n) for n in kernel]):
            pos = tuple(o[a] * strides[a] - pads[a] + k[a] * dilations[a] for a in range(r))
            if all(0 <= p < sizes[a] for a, p in enumerate(pos)):
                taps.append(pos)
        padded = 1
        for a in range(r):
            start = o[a] * strides[a] - pads[a]
            padded *= min(start + kernel[a], sizes[a] + pads[r + a]) - start
        yield o, taps, padded, outs


def np_maxpool(x, kernel, strides, pads, dilations, ceil_mode, storage_order=0):
    x = x.astype(np.float64)
    N, C = x.shape[:2]
    sizes = x.shape[2:]
    plane = int(np.prod(sizes))
    windows = list(pool_windows(x.shape, kernel, strides, pads, dilations, ceil_mode))
    outs = windows[0][3]
    y = np.zeros((N, C) + tuple(outs))
    idx = np.zeros((N, C) + tuple(outs), np.int64)
    for n in range(N):
        for c in range(C):
            for o, taps, _, _ in windows:
                vals = [x[(n, c) + p] for p in taps]
                best = taps[int(np.argmax(vals))]
                y[(n, c) + o] = max(vals)
                order = best if storage_order == 0 else best[::-1]
                dims = sizes if storage_order == 0 else sizes[::-1]
                idx[(n, c) + o] = (n * C + c) * plane + int(np.ravel_multi_index(order, dims))
    return y, idx


def np_avgpool(x, kernel, strides, pads, ceil_mode, count_include_pad):
    x = x.astype(np.float64)
    N, C = x.shape[:2]
    windows = list(pool_windows(x.shape, kernel, strides, pads, [1] * len(kernel), ceil_mode))
    y = np.zeros((N, C) + tuple(windows[0][3]))
    for o, taps, padded, _ in windows:
        total = sum(x[(slice(None), slice(None)) + p] for p in taps)
        y[(slice(None), slice(None)) + o] = total / (padded if count_include_pad else len(taps))
    return y


# ================================================================ Conv

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_pad_arg(pads):
    """ONNX pads [b0, b1, ..., e0, e1, ...] as F.pad's (last axis first) pairs."""
    r = len(pads) // 2
    out = []
    for a in reversed(range(r)):
        out += [pads[a], pads[r + a]]
    return out


def conv(name, x_shape, w_shape, group=1, strides=None, pads=None, dilations=None, bias=True,
         weight_input=False):
    r = len(x_shape) - 2
    c = Case(name, "Conv")
    strides, dilations = strides or [1] * r, dilations or [1] * r
    pads = pads or [0] * (2 * r)
    x = c.randn(*x_shape)
    w = c.randn(*w_shape, scale=1.0 / math.sqrt(np.prod(w_shape[1:])))
    b = c.randn(w_shape[0]) if bias else None
    c.input("x", x)
    (c.input if weight_input else c.param)("w", w)
    if bias:
        c.param("b", b)
    c.set(kernel_shape=list(w_shape[2:]), strides=strides, pads=pads, dilations=dilations,
          group=group if group != 1 else None)

    def fn(x, w, b=None):
        x = F.pad(x, torch_pad_arg(pads))
        return TORCH_CONV[r](x, w, b, stride=strides, dilation=dilations, groups=group)
    c.fn = fn
    c.check = lambda: [np_conv(x, w, b, strides, pads, dilations, group)]


def conv_cases():
    conv("conv3d", (1, 2, 5, 6, 7), (3, 2, 3, 3, 3), pads=[1, 1, 1, 1, 1, 1])
    conv("conv3d_groups_dilation_stride", (2, 4, 7, 6, 8), (6, 2, 2, 3, 2), group=2,
         strides=[2, 1, 2], dilations=[2, 1, 2], pads=[1, 0, 1, 0, 1, 1])
    conv("conv3d_weight_input_nobias", (1, 3, 4, 5, 4), (2, 3, 1, 2, 3), strides=[1, 2, 1],
         bias=False, weight_input=True)
    conv("conv1d_stride_pad", (2, 3, 11), (4, 3, 3), strides=[2], pads=[1, 2])  # blocked path
    conv("conv1d_groups_dilation", (1, 4, 12), (6, 2, 3), group=2, dilations=[2], pads=[2, 1],
         weight_input=True)  # gather path


# ================================================================ ConvTranspose

def convt(name, x_shape, w_shape, group=1, strides=None, pads=None, dilations=None,
          output_padding=None, output_shape=None, bias=True):
    r = len(x_shape) - 2
    c = Case(name, "ConvTranspose")
    strides, dilations = strides or [1] * r, dilations or [1] * r
    out_pad = output_padding or [0] * r
    x = c.randn(*x_shape)
    w = c.randn(*w_shape, scale=1.0 / math.sqrt(np.prod(w_shape[1:])))
    b = c.randn(w_shape[1] * group) if bias else None
    c.input("x", x).param("w", w)
    if bias:
        c.param("b", b)
    natural = [strides[a] * (x_shape[2 + a] - 1) + out_pad[a] + (w_shape[2 + a] - 1) * dilations[a]
               + 1 for a in range(r)]
    if output_shape:  # NOTSET: begin = total - floor(total / 2), negative when total < 0
        total = [natural[a] - output_shape[a] for a in range(r)]
        begin = [t - t // 2 for t in total]
        outs = list(output_shape)
    else:
        pads = pads or [0] * (2 * r)
        begin = pads[:r]
        outs = [natural[a] - pads[a] - pads[r + a] for a in range(r)]
    c.set(kernel_shape=list(w_shape[2:]), strides=strides, dilations=dilations, pads=pads,
          output_padding=output_padding, output_shape=output_shape,
          group=group if group != 1 else None)

    def fn(x, w, b=None):
        full = TORCH_CONVT[r](x, w, None, stride=strides, output_padding=out_pad, groups=group,
                              dilation=dilations)
        y = torch.zeros(full.shape[:2] + tuple(outs))
        src, dst = [], []
        for a in range(r):  # output o is full[o + begin]
            lo, hi = max(0, -begin[a]), min(outs[a], natural[a] - begin[a])
            dst.append(slice(lo, hi))
            src.append(slice(lo + begin[a], hi + begin[a]))
        y[(slice(None), slice(None)) + tuple(dst)] = full[(slice(None), slice(None)) + tuple(src)]
        return y + b.reshape((1, -1) + (1,) * r) if b is not None else y
    c.fn = fn
    c.check = lambda: [np_conv_transpose(x, w, b, strides, begin, dilations, group, outs)]


def convt_cases():
    convt("convt3d", (1, 2, 3, 4, 3), (2, 3, 3, 2, 3), strides=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0],
          output_padding=[1, 0, 1])
    convt("convt3d_groups_dilation", (2, 4, 3, 3, 2), (4, 1, 2, 2, 2), group=2,
          dilations=[2, 1, 2], strides=[1, 2, 1], bias=False)
    convt("convt1d", (2, 3, 5), (3, 2, 4), strides=[3], pads=[1, 2])
    # output_shape beyond the transpose's reach: totals -1 and -3, pads (0, -1) and (-1, -2)
    convt("convt2d_output_shape_beyond", (1, 2, 3, 3), (2, 2, 3, 3), strides=[3, 2],
          output_shape=[10, 10])


# ================================================================ MaxPool and AveragePool

TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def maxpool(name, x_shape, kernel, strides=None, pads=None, dilations=None, ceil_mode=0,
            indices=False, storage_order=0):
    r = len(kernel)
    c = Case(name, "MaxPool")
    strides, dilations = strides or [1] * r, dilations or [1] * r
    pads = pads or [0] * (2 * r)
    x = c.randn(*x_shape)
    c.input("x", x)
    c.set(kernel_shape=list(kernel), strides=strides, pads=pads, dilations=dilations,
          ceil_mode=ceil_mode or None, storage_order=storage_order or None)
    if indices:
        c.outputs = ["y", "indices"]
    assert pads[:r] == pads[r:], "torch pads symmetrically"

    def fn(x):
        y, i = TORCH_MAX[r](x, kernel, strides, pads[:r], dilations, bool(ceil_mode),
                            return_indices=True)
        if not indices:
            return y
        sizes = x.shape[2:]
        if storage_order:  # row-major within the plane -> column-major
            pos = np.unravel_index(i.numpy(), sizes)
            i = torch.from_numpy(np.ravel_multi_index(pos[::-1], sizes[::-1]).astype(np.int64))
        N, C = x.shape[:2]
        plane = int(np.prod(sizes))
        offset = (torch.arange(N * C, dtype=torch.int64) * plane).reshape((N, C) + (1,) * r)
        return y, i + offset
    c.fn = fn

    def check():
        y, i = np_maxpool(x, kernel, strides, pads, dilations, ceil_mode, storage_order)
        return [y, i] if indices else [y]
    c.check = check


def avgpool(name, x_shape, kernel, strides=None, pads=None, ceil_mode=0, count_include_pad=0):
    r = len(kernel)
    c = Case(name, "AveragePool")
    strides = strides or [1] * r
    pads = pads or [0] * (2 * r)
    x = c.randn(*x_shape)
    c.input("x", x)
    c.set(kernel_shape=list(kernel), strides=strides, pads=pads, ceil_mode=ceil_mode or None,
          count_include_pad=count_include_pad or None)
    assert pads[:r] == pads[r:], "torch pads symmetrically"
    c.fn = lambda x: TORCH_AVG[r](x, kernel, strides, pads[:r], bool(ceil_mode),
                                  bool(count_include_pad))
    c.check = lambda: [np_avgpool(x, kernel, strides, pads, ceil_mode, count_include_pad)]


def pool_cases():
    maxpool("maxpool3d", (2, 3, 6, 7, 5), [3, 2, 3], strides=[2, 2, 1], pads=[1, 0, 1, 1, 0, 1])
    maxpool("maxpool3d_dilation_ceil", (1, 2, 7, 6, 8), [2, 2, 3], strides=[2, 2, 2],
            dilations=[1, 2, 1], ceil_mode=1)
    maxpool("maxpool1d", (2, 3, 13), [3], strides=[2], pads=[1, 1], ceil_mode=1)
    maxpool("maxpool2d_indices", (2, 3, 7, 8), [3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
            indices=True)
    maxpool("maxpool2d_indices_storage_order", (1, 2, 6, 7), [2, 3], strides=[2, 2],
            indices=True, storage_order=1)
    maxpool("maxpool3d_indices", (1, 2, 5, 4, 6), [2, 2, 3], strides=[1, 2, 2],
            dilations=[2, 1, 1], indices=True)
    maxpool("maxpool1d_indices", (2, 2, 9), [3], strides=[2], pads=[1, 1], indices=True)
    avgpool("avgpool3d_exclude_pad", (2, 3, 6, 7, 5), [3, 3, 2], strides=[2, 2, 1],
            pads=[1, 1, 1, 1, 1, 1])
    avgpool("avgpool3d_include_pad", (2, 3, 6, 7, 5), [3, 3, 2], strides=[2, 2, 1],
            pads=[1, 1, 1, 1, 1, 1], count_include_pad=1)
    avgpool("avgpool3d_ceil_include_pad", (1, 2, 7, 6, 8), [3, 2, 3], strides=[2, 2, 3],
            pads=[1, 0, 1, 1, 0, 1], ceil_mode=1, count_include_pad=1)
    avgpool("avgpool3d_ceil", (1, 2, 7, 6, 8), [3, 2, 3], strides=[2, 2, 3], ceil_mode=1)
    avgpool("avgpool1d", (2, 3, 10), [4], strides=[3], pads=[2, 2], ceil_mode=1)


# ================================================================ writing

def param_json(n, a):
    values = kiln_io.f32_values(a) if a.dtype == np.float32 else kiln_io.int_values(a)
    return {"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape),
            "init": {"kind": "values", "values": values}}


def write_case(root, c):
    d = os.path.join(root, c.name)
    ys = c.run()
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": c.outputs}
    if c.attrs:
        node["attrs"] = c.attrs
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    model["inputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                       for n, a in c.inputs]
    model["outputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[y.dtype], "shape": list(y.shape)}
                        for n, y in zip(c.outputs, ys)]
    if c.params:
        model["params"] = [param_json(n, a) for n, a in c.params]
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        kiln_io.save_npy(os.path.join(d, f"{n}.npy"), a)
    for n, y in zip(c.outputs, ys):
        kiln_io.save_npy(os.path.join(d, f"{n}.npy"), y)
    return ys


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    conv_cases()
    convt_cases()
    pool_cases()
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for d in glob.glob(os.path.join(root, PREFIX + "*")):
        shutil.rmtree(d)
    worst = 0.0
    for c in CASES:
        ys = write_case(root, c)
        for y, ref in zip(ys, c.check()):
            ref = np.asarray(ref)
            assert ref.shape == y.shape, (c.name, ref.shape, y.shape)
            if y.dtype == np.int64:
                assert np.array_equal(ref, y), (c.name, "indices differ")
                continue
            err = float(np.max(np.abs(ref - y.astype(np.float64))))
            assert err <= 1e-5, (c.name, err)
            worst = max(worst, err)
    with open(os.path.join(root, "cases-nd.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {os.path.relpath(root, repo)}/{PREFIX}* "
          f"(PyTorch vs the numpy ONNX definition: max |diff| {worst:.2e})")


if __name__ == "__main__":
    main()

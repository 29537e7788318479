#!/usr/bin/python3
"""Golden cases for the tensor op family (Concat, Split, Slice, Transpose, Squeeze, Unsqueeze,
Gather, Pad, Resize, Upsample, Expand, Constant, Shape, ConstantOfShape). For each case,
tests/goldens/ops/tensor_<case>/ holds

    model.json      a single-op Kiln model named op_tensor_<case> (params inline)
    <input>.npy     one per model input (seeded from the case name; any dtype)
    <output>.npy    one per output (y, or y0, y1, ... for Split), computed with PyTorch

and tests/goldens/ops/cases-tensor.txt lists `<case> <op>`, one a line.

Semantics are ONNX's. Where PyTorch has no equivalent (ONNX Resize nearest modes other than
asymmetric+floor and half_pixel+round_prefer_ceil, Upsample's asymmetric linear mode, Slice steps
other than 1 and -1), the golden comes from a literal numpy implementation of the ONNX definition,
and the case says so in its model's `doc`. Every Resize / Upsample case that PyTorch computes is
also checked against that numpy implementation, so the two references agree.

Run: /usr/bin/python3 tools/goldens_tensor.py   (rewrites only tests/goldens/ops/tensor_* and
cases-tensor.txt)
"""

import glob
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

CASES = []
I64_MAX = 2 ** 63 - 1


class Case:
    def __init__(self, name, op, doc=None, outputs=1):
        name = "tensor_" + name
        assert name.replace("_", "a").isalnum(), name
        self.name, self.op, self.doc = name, op, doc
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.inputs, self.params, self.node_inputs, self.attrs = [], [], [], {}
        self.outputs = ["y"] if outputs == 1 else [f"y{i}" for i in range(outputs)]
        self.fn, self.check = None, None
        CASES.append(self)

    def randn(self, *shape):
        return self.rng.standard_normal(shape).astype(np.float32)

    def ints(self, lo, hi, *shape, dtype=np.int64):
        return self.rng.integers(lo, hi, shape).astype(dtype)

    def input(self, name, arr):
        self.inputs.append((name, np.array(arr, order="C")))
        self.node_inputs.append(name)
        return self

    def param(self, name, arr):
        self.params.append((name, np.array(arr, order="C")))
        self.node_inputs.append(name)
        return self

    def skip(self):
        self.node_inputs.append("")
        return self

    def set(self, **attrs):
        self.attrs.update(attrs)
        return self

    def compute(self, fn):
        """fn(*torch tensors in node-input order, None for skipped) -> tensor or tuple."""
        self.fn = fn
        return self

    def onnx_check(self, fn):
        """fn(*numpy arrays) -> the literal ONNX result; must equal the torch result."""
        self.check = fn
        return self

    def run(self):
        vals = dict(self.inputs + self.params)
        args = [torch.from_numpy(vals[n].copy()) if n else None for n in self.node_inputs]
        with torch.no_grad():
            ys = self.fn(*args)
        ys = ys if isinstance(ys, (tuple, list)) else (ys,)
        ys = [np.array(y.numpy() if hasattr(y, "numpy") else y, order="C") for y in ys]
        assert len(ys) == len(self.outputs), self.name
        if self.check:
            refs = self.check(*[vals[n] if n else None for n in self.node_inputs])
            refs = refs if isinstance(refs, (tuple, list)) else (refs,)
            for y, r in zip(ys, refs):
                assert y.shape == r.shape and y.dtype == r.dtype, (self.name, y.shape, r.shape)
                err = float(np.max(np.abs(y.astype(np.float64) - r.astype(np.float64))))
                assert err < 1e-5, (self.name, err)
        return ys


def write_case(root, c):
    d = os.path.join(root, c.name)
    ys = c.run()
    params = []
    for n, a in c.params:
        p = {"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
        values = kiln_io.f32_values(a) if a.dtype == np.float32 else kiln_io.int_values(a)
        p["init"] = {"kind": "values", "values": values}
        params.append(p)
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
    for n, a in c.inputs + list(zip(c.outputs, ys)):
        np.save(os.path.join(d, f"{n}.npy"), a, allow_pickle=False)  # keeps 0-d arrays 0-d


def i64(*v):
    return np.array(v, np.int64)


# ---------------------------------------------------------------- Concat, Split

def concat_cases():
    c = Case("concat_axis1", "Concat")
    c.input("a", c.randn(2, 3, 4)).input("b", c.randn(2, 1, 4)).input("c", c.randn(2, 5, 4))
    c.set(axis=1).compute(lambda a, b, x: torch.cat([a, b, x], 1))
    c = Case("concat_neg_axis", "Concat", "axis -1, one input a param")
    c.input("a", c.randn(3, 2)).param("w", c.randn(3, 4)).set(axis=-1)
    c.compute(lambda a, w: torch.cat([a, w], -1))
    c = Case("concat_i64", "Concat")
    c.input("a", c.ints(-5, 5, 2, 3)).input("b", c.ints(-5, 5, 4, 3)).set(axis=0)
    c.compute(lambda a, b: torch.cat([a, b], 0))
    c = Case("concat_bool", "Concat")
    c.input("a", c.ints(0, 2, 2, 2).astype(bool)).input("b", c.ints(0, 2, 2, 3).astype(bool))
    c.set(axis=1).compute(lambda a, b: torch.cat([a, b], 1))
    c = Case("concat_single", "Concat")
    c.input("a", c.randn(4)).set(axis=0).compute(lambda a: torch.cat([a], 0))


def split_cases():
    c = Case("split_equal", "Split", outputs=3)
    c.input("x", c.randn(2, 6, 3)).set(axis=1).compute(lambda x: torch.split(x, 2, 1))
    c = Case("split_attr_uneven", "Split", "split as the opset < 13 attribute", outputs=3)
    c.input("x", c.randn(6, 2)).set(split=[2, 3, 1]).compute(lambda x: torch.split(x, [2, 3, 1]))
    c = Case("split_input", "Split", "split as the opset 13 input", outputs=2)
    c.input("x", c.randn(3, 7)).param("split", i64(5, 2)).set(axis=-1)
    c.compute(lambda x, s: torch.split(x, [5, 2], -1))
    c = Case("split_num_outputs", "Split", "opset 18: 7 into 3, the last piece smaller", outputs=3)
    c.input("x", c.randn(7, 2)).set(num_outputs=3).compute(lambda x: torch.split(x, 3, 0))
    c = Case("split_u8", "Split", outputs=2)
    c.input("x", c.ints(0, 255, 4, 2, dtype=np.uint8)).compute(lambda x: torch.split(x, 2, 0))


# ---------------------------------------------------------------- Slice

def np_slice(x, starts, ends, axes=None, steps=None):
    """ONNX Slice is numpy basic slicing per axis (numpy clamps the same way)."""
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[a] = slice(int(s), int(e), int(st))
    return np.ascontiguousarray(x[tuple(sl)])


def slice_cases():
    c = Case("slice_basic", "Slice")
    c.input("x", c.randn(4, 6)).param("starts", i64(1, 2)).param("ends", i64(3, 5))
    c.compute(lambda x, s, e: x[1:3, 2:5])
    c = Case("slice_axes_steps", "Slice", "axes and steps inputs")
    c.input("x", c.randn(3, 8, 5)).param("starts", i64(1, 0)).param("ends", i64(8, 4))
    c.param("axes", i64(1, -1)).param("steps", i64(2, 3))
    c.compute(lambda x, s, e, a, st: x[:, 1:8:2, 0:4:3])
    c = Case("slice_clamp", "Slice", "starts -100, ends INT64_MAX: clamped")
    c.input("x", c.randn(5, 4)).param("starts", i64(-100, -3)).param("ends", i64(I64_MAX, 100))
    c.compute(lambda x, s, e: x[0:, 1:])
    c = Case("slice_neg_step", "Slice", "step -1 from the end: torch.flip")
    c.input("x", c.randn(3, 6)).param("starts", i64(-1)).param("ends", i64(-I64_MAX))
    c.param("axes", i64(1)).param("steps", i64(-1))
    c.compute(lambda x, s, e, a, st: torch.flip(x, [1]))
    c = Case("slice_neg_step2", "Slice",
             "step -2, start past the end, end before the start: golden from numpy slicing "
             "(torch has no negative steps)")
    x = c.randn(9, 2)
    c.input("x", x).param("starts", i64(20)).param("ends", i64(-20)).param("axes", i64(0))
    c.param("steps", i64(-2))
    c.compute(lambda *a, x=x: torch.from_numpy(np_slice(x, [20], [-20], [0], [-2])))
    c = Case("slice_neg_bounds", "Slice", "negative start and end, step -1, i32 params")
    x = c.randn(7)
    c.input("x", x).param("starts", np.array([-2], np.int32)).param("ends", np.array([-6], np.int32))
    c.skip().param("steps", np.array([-1], np.int32))
    c.compute(lambda *a, x=x: torch.flip(torch.from_numpy(x)[2:6], [0]))
    c.onnx_check(lambda *a, x=x: np_slice(x, [-2], [-6], None, [-1]))
    c = Case("slice_attrs", "Slice", "opset < 10: starts/ends/axes attributes")
    c.input("x", c.randn(2, 5, 4)).set(starts=[1, -3], ends=[2, 100], axes=[0, 2])
    c.compute(lambda x: x[1:2, :, 1:])
    c = Case("slice_i32_data", "Slice")
    c.input("x", c.ints(-100, 100, 6, 3, dtype=np.int32)).param("starts", i64(2))
    c.param("ends", i64(5)).compute(lambda x, s, e: x[2:5])


# ---------------------------------------------------------------- Transpose, Squeeze, Unsqueeze

def layout_cases():
    c = Case("transpose_4d", "Transpose", "NCHW -> NHWC")
    c.input("x", c.randn(2, 3, 4, 5)).set(perm=[0, 2, 3, 1])
    c.compute(lambda x: x.permute(0, 2, 3, 1).contiguous())
    c = Case("transpose_default", "Transpose", "no perm: reverse the axes")
    c.input("x", c.randn(2, 3, 4)).compute(lambda x: x.permute(2, 1, 0).contiguous())
    c = Case("transpose_i8", "Transpose")
    c.input("x", c.ints(-128, 127, 3, 5, dtype=np.int8)).set(perm=[1, 0])
    c.compute(lambda x: x.t().contiguous())
    c = Case("transpose_6d", "Transpose")
    c.input("x", c.randn(2, 1, 3, 2, 2, 3)).set(perm=[5, 3, 0, 4, 2, 1])
    c.compute(lambda x: x.permute(5, 3, 0, 4, 2, 1).contiguous())
    c = Case("squeeze_attr", "Squeeze", "axes attribute (opset < 13)")
    c.input("x", c.randn(3, 1, 4, 1)).set(axes=[1]).compute(lambda x: x.squeeze(1))
    c = Case("squeeze_input_neg", "Squeeze", "axes input (opset 13), negative")
    c.input("x", c.randn(1, 3, 1)).param("axes", i64(-1, 0)).compute(lambda x, a: x.reshape(3))
    c = Case("squeeze_all", "Squeeze", "no axes: every size-1 axis")
    c.input("x", c.ints(0, 2, 1, 2, 1, 3).astype(bool)).compute(lambda x: x.squeeze())
    c = Case("unsqueeze_attr", "Unsqueeze", "axes attribute (opset < 13)")
    c.input("x", c.randn(3, 4)).set(axes=[0, 3]).compute(lambda x: x.reshape(1, 3, 4, 1))
    c = Case("unsqueeze_input_neg", "Unsqueeze", "axes input (opset 13), negative")
    c.input("x", c.ints(0, 9, 2, 3)).param("axes", i64(-1, 1))
    c.compute(lambda x, a: x.reshape(2, 1, 3, 1))


# ---------------------------------------------------------------- Gather, Expand

def torch_gather(x, idx, axis):
    """ONNX Gather: negative indices count from the end."""
    axis = axis % x.dim()
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    y = torch.index_select(x, axis, idx.reshape(-1))
    return y.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def gather_cases():
    c = Case("gather_embedding", "Gather", "an embedding table (param) by i64 token ids, some <0")
    c.param("table", c.randn(10, 4)).input("ids", i64([[1, -1, 3], [9, 0, -10]]))
    c.compute(lambda t, i: torch_gather(t, i, 0))
    c = Case("gather_axis1_i32", "Gather")
    c.input("x", c.randn(3, 5, 2)).input("idx", np.array([4, -5, 2, 2], np.int32)).set(axis=1)
    c.compute(lambda x, i: torch_gather(x, i, 1))
    c = Case("gather_scalar_index", "Gather", "a scalar index drops the axis")
    c.input("x", c.randn(4, 3)).param("idx", np.array(-2, np.int64)).set(axis=-1)
    c.compute(lambda x, i: torch_gather(x, i, -1))
    c = Case("gather_i64_data", "Gather")
    c.input("x", c.ints(-1000, 1000, 5, 2)).input("idx", i64([[0, 4], [2, -1]]))
    c.compute(lambda x, i: torch_gather(x, i, 0))
    c = Case("gather_u8_data", "Gather")
    c.input("x", c.ints(0, 255, 2, 6, dtype=np.uint8)).input("idx", i64(5, 0, -3)).set(axis=1)
    c.compute(lambda x, i: torch_gather(x, i, 1))


def expand_cases():
    c = Case("expand_bcast", "Expand")
    c.input("x", c.randn(3, 1)).param("shape", i64(2, 3, 4))
    c.compute(lambda x, s: x.expand(2, 3, 4).contiguous())
    c = Case("expand_bidirectional", "Expand", "shape smaller than x: x's dims are kept")
    c.input("x", c.randn(2, 1, 5)).param("shape", i64(3, 1))
    c.compute(lambda x, s: x.expand(2, 3, 5).contiguous())
    c = Case("expand_bool", "Expand")
    c.input("x", c.ints(0, 2, 1, 4).astype(bool)).param("shape", i64(3, 4))
    c.compute(lambda x, s: x.expand(3, 4).contiguous())


# ---------------------------------------------------------------- Pad

def pad_cases():
    def tpads(pads):  # ONNX [b0, b1, ..., e0, e1, ...] -> F.pad (last axis first)
        r = len(pads) // 2
        out = []
        for a in reversed(range(r)):
            out += [pads[a], pads[r + a]]
        return out

    c = Case("pad_constant", "Pad", "pads and constant_value inputs (opset 11+)")
    pads = [0, 1, 2, 1, 0, 3]
    c.input("x", c.randn(2, 3, 4)).param("pads", i64(*pads)).param("value", np.array(1.5, np.float32))
    c.compute(lambda x, p, v, pads=pads: F.pad(x, tpads(pads), value=1.5))
    c = Case("pad_default_zero", "Pad", "no constant_value: 0")
    pads = [1, 1, 1, 1]
    c.input("x", c.randn(3, 2)).param("pads", i64(*pads)).compute(lambda x, p, pads=pads: F.pad(x, tpads(pads)))
    c = Case("pad_negative", "Pad", "negative pads crop")
    pads = [-1, 2, 1, -2]
    c.input("x", c.randn(4, 5)).param("pads", i64(*pads)).compute(lambda x, p, pads=pads: F.pad(x, tpads(pads)))
    c = Case("pad_reflect", "Pad")
    pads = [0, 0, 2, 1, 0, 0, 1, 3]
    c.input("x", c.randn(1, 2, 4, 5)).param("pads", i64(*pads)).set(mode="reflect")
    c.compute(lambda x, p, pads=pads: F.pad(x, tpads(pads)[:4], mode="reflect"))
    c = Case("pad_edge", "Pad")
    pads = [0, 0, 3, 0, 0, 0, 1, 2]
    c.input("x", c.randn(2, 1, 3, 4)).param("pads", i64(*pads)).set(mode="edge")
    c.compute(lambda x, p, pads=pads: F.pad(x, tpads(pads)[:4], mode="replicate"))
    c = Case("pad_edge_crop", "Pad", "edge with one side cropped")
    pads = [0, 0, -1, 2, 0, 0, 2, -1]
    c.input("x", c.randn(1, 1, 4, 4)).param("pads", i64(*pads)).set(mode="edge")
    c.compute(lambda x, p: F.pad(x[:, :, 1:, :3], [2, 0, 0, 2], mode="replicate"))
    c = Case("pad_attrs", "Pad", "opset < 11: pads and value attributes")
    pads = [1, 0, 0, 2]
    c.input("x", c.randn(2, 3)).set(pads=pads, value=-2.0)
    c.compute(lambda x, pads=pads: F.pad(x, tpads(pads), value=-2.0))
    c = Case("pad_axes", "Pad", "opset 18: axes input")
    c.input("x", c.randn(2, 3, 4)).param("pads", i64(1, 2, 0, 1)).skip().param("axes", i64(-1, 0))
    c.compute(lambda x, p, v, a: F.pad(x, [1, 0, 0, 0, 2, 1]))
    c = Case("pad_i32_value", "Pad", "integer data, runtime constant_value")
    pads = [2, 0, 1, 1]
    c.input("x", c.ints(-50, 50, 2, 3, dtype=np.int32)).param("pads", i64(*pads))
    c.input("v", np.array([7], np.int32))
    c.compute(lambda x, p, v, pads=pads: F.pad(x, tpads(pads), value=7))


# ---------------------------------------------------------------- Resize, Upsample (numpy ONNX)

def np_coord(o, in_, out, scale, mode):
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out > 1 else 0.0
    if mode == "align_corners":
        return o * (in_ - 1) / (out - 1) if out > 1 else 0.0
    return o / scale


def np_round(x, mode):
    if mode == "round_prefer_floor":
        return math.floor(x) if x == math.floor(x) + 0.5 else round(x)
    if mode == "round_prefer_ceil":
        return math.ceil(x) if x == math.floor(x) + 0.5 else round(x)
    return math.floor(x) if mode == "floor" else math.ceil(x)


def np_resize(x, out_shape, scales, mode, coord, nearest="round_prefer_floor"):
    """ONNX Resize, axis by axis (separable): nearest picks round(x_original) clamped into the
    input; linear mixes floor(x) and floor(x) + 1 (clamped) with weights 1 - lambda, lambda."""
    y = x.astype(np.float64)
    for a in range(x.ndim):
        in_, out = y.shape[a], out_shape[a]
        if in_ == out and scales[a] == 1.0:
            continue
        moved = np.moveaxis(y, a, 0)
        res = np.empty((out,) + moved.shape[1:])
        for o in range(out):
            xo = np_coord(o, in_, out, scales[a], coord)
            if mode == "nearest":
                res[o] = moved[min(max(np_round(xo, nearest), 0), in_ - 1)]
            else:
                f = math.floor(xo)
                lam = xo - f
                lo, hi = min(max(f, 0), in_ - 1), min(max(f + 1, 0), in_ - 1)
                res[o] = (1 - lam) * moved[lo] + lam * moved[hi]
        y = np.moveaxis(res, 0, a)
    return np.ascontiguousarray(y.astype(x.dtype))


def resize_case(name, shape, mode, coord, torch_fn=None, scales=None, sizes=None, nearest=None,
                dtype=np.float32, doc=None, axes=None):
    c = Case(name, "Resize", doc)
    x = c.randn(*shape) if dtype == np.float32 else c.ints(0, 255, *shape, dtype=dtype)
    rank = len(shape)
    ax = list(range(rank)) if axes is None else axes
    c.input("x", x).skip()
    if scales is not None:
        c.param("scales", np.array(scales, np.float32)).skip()
        full = [1.0] * rank
        for a, s in zip(ax, scales):
            full[a] = float(np.float32(s))
        out = [int(math.floor(shape[a] * full[a])) for a in range(rank)]
    else:
        c.skip().param("sizes", i64(*sizes))
        out = list(shape)
        for a, s in zip(ax, sizes):
            out[a] = s
        full = [out[a] / shape[a] for a in range(rank)]
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if nearest:
        attrs["nearest_mode"] = nearest
    if axes is not None:
        attrs["axes"] = axes
    c.set(**attrs)
    ref = lambda *a: np_resize(x, out, full, mode, coord, nearest or "round_prefer_floor")
    if torch_fn is None:
        c.doc = (doc + "; " if doc else "") + "golden from the numpy ONNX reference (no torch equal)"
        c.compute(lambda *a: torch.from_numpy(ref()))
    else:
        c.compute(lambda t, *a: torch_fn(t)).onnx_check(ref)


def interp(**kw):
    return lambda t: F.interpolate(t, **kw)


def resize_cases():
    # nearest: PyTorch's 'nearest' is asymmetric + floor; 'nearest-exact' is half_pixel + round_prefer_ceil
    resize_case("resize_nearest_up", (1, 2, 3, 4), "nearest", "asymmetric", nearest="floor",
                scales=[1, 1, 2, 3], torch_fn=interp(scale_factor=(2, 3), mode="nearest"))
    resize_case("resize_nearest_down", (2, 1, 8, 9), "nearest", "asymmetric", nearest="floor",
                sizes=[2, 1, 4, 3], torch_fn=interp(size=(4, 3), mode="nearest"))
    resize_case("resize_nearest_down_frac", (1, 1, 7, 9), "nearest", "asymmetric", nearest="floor",
                sizes=[1, 1, 4, 5], torch_fn=interp(size=(4, 5), mode="nearest"))
    resize_case("resize_nearest_exact_up", (1, 2, 3, 5), "nearest", "half_pixel",
                nearest="round_prefer_ceil", sizes=[1, 2, 7, 8],
                torch_fn=interp(size=(7, 8), mode="nearest-exact"))
    resize_case("resize_nearest_exact_down", (1, 1, 9, 10), "nearest", "half_pixel",
                nearest="round_prefer_ceil", sizes=[1, 1, 4, 6],
                torch_fn=interp(size=(4, 6), mode="nearest-exact"))
    resize_case("resize_nearest_default", (1, 1, 4, 6), "nearest", "half_pixel",
                sizes=[1, 1, 6, 4], doc="ONNX defaults: half_pixel, round_prefer_floor")
    resize_case("resize_nearest_align_ceil", (1, 1, 5, 3), "nearest", "align_corners",
                nearest="ceil", sizes=[1, 1, 3, 7])
    resize_case("resize_nearest_u8", (1, 3, 2, 3), "nearest", "asymmetric", nearest="floor",
                scales=[1, 1, 2, 2], dtype=np.uint8,
                torch_fn=lambda t: F.interpolate(t.float(), scale_factor=2, mode="nearest").to(torch.uint8))
    resize_case("resize_nearest_axes", (2, 3, 4), "nearest", "asymmetric", nearest="floor",
                sizes=[8, 2], axes=[2, 1], doc="opset 18 axes",
                torch_fn=lambda t: F.interpolate(t.unsqueeze(0), size=(2, 8), mode="nearest")[0])
    # linear: bilinear align_corners=False is half_pixel (and pytorch_half_pixel), True is align_corners
    resize_case("resize_bilinear_up", (1, 2, 4, 5), "linear", "half_pixel", scales=[1, 1, 2, 2],
                torch_fn=interp(scale_factor=2, mode="bilinear", align_corners=False))
    resize_case("resize_bilinear_down", (2, 2, 9, 8), "linear", "half_pixel", sizes=[2, 2, 4, 3],
                torch_fn=interp(size=(4, 3), mode="bilinear", align_corners=False))
    resize_case("resize_bilinear_pytorch_half_pixel", (1, 1, 5, 6), "linear", "pytorch_half_pixel",
                sizes=[1, 1, 7, 4],
                torch_fn=interp(size=(7, 4), mode="bilinear", align_corners=False))
    resize_case("resize_bilinear_align_up", (1, 3, 4, 4), "linear", "align_corners",
                sizes=[1, 3, 7, 9], torch_fn=interp(size=(7, 9), mode="bilinear", align_corners=True))
    resize_case("resize_bilinear_align_down", (1, 1, 10, 7), "linear", "align_corners",
                sizes=[1, 1, 4, 5], torch_fn=interp(size=(4, 5), mode="bilinear", align_corners=True))
    resize_case("resize_linear_1d", (2, 3, 6), "linear", "half_pixel", scales=[1, 1, 2.5],
                torch_fn=interp(scale_factor=2.5, mode="linear", align_corners=False,
                                recompute_scale_factor=False))
    resize_case("resize_trilinear", (1, 1, 3, 4, 2), "linear", "align_corners",
                sizes=[1, 1, 5, 3, 4],
                torch_fn=interp(size=(5, 3, 4), mode="trilinear", align_corners=True))
    resize_case("resize_linear_identity", (1, 2, 3, 3), "linear", "half_pixel",
                scales=[1, 1, 1, 1], torch_fn=lambda t: t.clone())
    resize_case("resize_linear_asymmetric", (1, 1, 3, 4), "linear", "asymmetric",
                scales=[1, 1, 2, 1.5])


def upsample_cases():
    c = Case("upsample_nearest_attr", "Upsample", "opset 7: scales attribute")
    c.input("x", c.randn(1, 2, 2, 3)).set(mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])
    c.compute(lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest"))
    c = Case("upsample_nearest_input", "Upsample", "opset 9: scales input; i64 data")
    x = c.ints(-9, 9, 1, 1, 2, 2)
    c.input("x", x).param("scales", np.array([1, 1, 3, 2], np.float32))
    c.compute(lambda x, s: x.repeat_interleave(3, 2).repeat_interleave(2, 3))
    c = Case("upsample_linear", "Upsample",
             "asymmetric linear (no torch equal): golden from the numpy ONNX reference")
    x = c.randn(1, 1, 3, 4)
    c.input("x", x).param("scales", np.array([1, 1, 2, 2], np.float32)).set(mode="linear")
    c.compute(lambda *a: torch.from_numpy(np_resize(x, [1, 1, 6, 8], [1, 1, 2, 2], "linear",
                                                    "asymmetric")))


# ---------------------------------------------------------------- Constant, Shape, ConstantOfShape

def constant_cases():
    c = Case("constant_floats", "Constant")
    c.set(value_floats=[1.5, -2.25, 3.0]).compute(lambda: torch.tensor([1.5, -2.25, 3.0]))
    c = Case("constant_float", "Constant")
    c.set(value_float=0.1).compute(lambda: torch.tensor(0.1, dtype=torch.float32))
    c = Case("constant_ints", "Constant")
    c.set(value_ints=[4, -1, 2 ** 40]).compute(lambda: torch.tensor([4, -1, 2 ** 40]))
    c = Case("constant_int", "Constant")
    c.set(value_int=-7).compute(lambda: torch.tensor(-7))
    c = Case("shape_full", "Shape")
    c.input("x", c.randn(2, 3, 4)).compute(lambda x: torch.tensor(x.shape))
    c = Case("shape_start_end", "Shape", "opset 15 start/end, negative end")
    c.input("x", c.randn(2, 3, 4, 5)).set(start=1, end=-1).compute(lambda x: torch.tensor(x.shape[1:-1]))
    c = Case("shape_clamp", "Shape", "start/end out of range are clamped")
    c.input("x", c.ints(0, 2, 3, 1, 2).astype(bool)).set(start=-10, end=100)
    c.compute(lambda x: torch.tensor(x.shape))
    c = Case("constantofshape_zeros", "ConstantOfShape", "no value: f32 zeros")
    c.param("shape", i64(2, 3)).compute(lambda s: torch.zeros(2, 3))
    c = Case("constantofshape_value", "ConstantOfShape")
    c.param("shape", i64(4, 1, 2)).set(value=[2.5]).compute(lambda s: torch.full((4, 1, 2), 2.5))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    for cases in (concat_cases, split_cases, slice_cases, layout_cases, gather_cases,
                  expand_cases, pad_cases, resize_cases, upsample_cases, constant_cases):
        cases()
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for d in glob.glob(os.path.join(root, "tensor_*")):
        shutil.rmtree(d)
    for c in CASES:
        write_case(root, c)
    with open(os.path.join(root, "cases-tensor.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {os.path.relpath(root, repo)}/tensor_*")


if __name__ == "__main__":
    main()

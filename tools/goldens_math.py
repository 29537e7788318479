#!/usr/bin/python3
"""Writes the golden cases of the math op family (elementwise math, activations, comparisons and
logic, reductions, Cast, Where, RandomNormalLike, integer Add/Sub/Mul/Div) for the C test-suite:
tests/goldens/ops/math_<case>/ holds

    model.json      a single-op Kiln model named op_math_<case> (params inline)
    <input>.npy     one per model input (random data seeded from the case name)
    out.npy         the output `out`, computed by PyTorch (torch / torch.nn.functional)

and tests/goldens/ops/cases-math.txt with one line `<case> <op>` per case.

Semantics are ONNX's. Where PyTorch has no direct equivalent the case says how the reference is
built from PyTorch ops (PRelu's unidirectional broadcasting: torch.where; ArgMax's
select_last_index: argmax of the flipped tensor). Where ONNX leaves the result undefined and Kiln
defines it (float -> int Cast out of range, integer division by zero), the reference is numpy
applying Kiln's documented rule, and the case says so. Cases whose semantics are easy to get
wrong also get a `check`: an independent numpy implementation of the ONNX definition that must
agree with the PyTorch result.

RandomNormalLike has no PyTorch equivalent that gives the same numbers: its out.npy comes from
`random_normal_like` below, a numpy/Python reimplementation of the counter-based generator
documented in compiler/ops/math/randomnormallike.c (log, sqrt and cos from Python's math module,
i.e. the C library). The statistical reference is a check: the sample mean and standard deviation
must be within 5 standard errors of N(mean, scale^2), and the values must look normal (fraction
within one sigma). The tests then hold the interpreter and the generated code to out.npy exactly.

Run: /usr/bin/python3 tools/goldens_math.py   (deletes and rewrites tests/goldens/ops/math_*/)
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

PREFIX = "math_"
CASES = []


class Case:
    def __init__(self, name, op, doc=None):
        name = PREFIX + name
        assert name.replace("_", "a").isalnum(), name
        self.name, self.op, self.doc = name, op, doc
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.inputs = []  # [(name, ndarray)]
        self.params = []  # [(name, ndarray)]
        self.node_inputs = []
        self.attrs = {}
        self.fn = None  # torch reference
        self.numpy_fn = None  # numpy reference (only where the case says why)
        self.checks = []  # independent numpy implementations the result must match
        CASES.append(self)

    # random data
    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def ints(self, lo, hi, *shape, dtype=np.int64):
        return self.rng.integers(lo, hi, shape).astype(dtype)

    def bools(self, *shape):
        return self.rng.random(shape) < 0.5

    def nonzero(self, *shape):  # |v| in [0.5, 2], random sign
        return (self.uniform(0.5, 2.0, *shape) * self.rng.choice([-1.0, 1.0], shape)).astype(np.float32)

    # graph
    def input(self, name, arr):
        self.inputs.append((name, np.asarray(arr).copy(order="C")))
        self.node_inputs.append(name)
        return self

    def param(self, name, arr):
        self.params.append((name, np.asarray(arr).copy(order="C")))
        self.node_inputs.append(name)
        return self

    def skip(self):  # an omitted optional input ("")
        self.node_inputs.append("")
        return self

    def set(self, **attrs):
        self.attrs.update(attrs)
        return self

    def compute(self, fn):
        """fn(*torch tensors in node-input order, None for skipped) -> torch tensor."""
        self.fn = fn
        return self

    def compute_numpy(self, fn):
        """fn(*numpy arrays in node-input order) -> ndarray; for Kiln-defined behaviour only."""
        self.numpy_fn = fn
        return self

    def check(self, fn, atol=1e-5):
        """fn(*numpy arrays) -> ndarray that must match the reference within atol."""
        self.checks.append((fn, atol))
        return self

    def arrays(self):
        vals = dict(self.inputs + self.params)
        return [vals[n] if n else None for n in self.node_inputs]

    def run(self):
        arrays = self.arrays()
        if self.numpy_fn:
            y = np.asarray(self.numpy_fn(*arrays))
        else:
            args = [torch.from_numpy(a.copy()) if a is not None else None for a in arrays]
            with torch.no_grad():
                y = self.fn(*args).numpy()
        if y.dtype.kind == "f":
            assert np.all(np.isfinite(y)), self.name
        for fn, atol in self.checks:
            want = np.asarray(fn(*arrays))
            assert want.shape == y.shape, (self.name, want.shape, y.shape)
            assert np.allclose(want.astype(np.float64), y.astype(np.float64), atol=atol, rtol=1e-5), \
                (self.name, np.max(np.abs(want.astype(np.float64) - y.astype(np.float64))))
        return y.copy(order="C")


def save_npy(path, a):
    """Like kiln_io.save_npy, but keeps rank 0 (np.ascontiguousarray makes it rank 1)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.asarray(a).copy(order="C"), allow_pickle=False)


def values(a):
    return kiln_io.f32_values(a) if a.dtype == np.float32 else (
        [float(v) for v in a.reshape(-1)] if a.dtype == np.float64 else kiln_io.int_values(a))


def write_case(root, c):
    d = os.path.join(root, c.name)
    y = c.run()
    params = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape),
               "init": {"kind": "values", "values": values(a)}} for n, a in c.params]
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": ["out"]}
    if c.attrs:
        node["attrs"] = c.attrs
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    if c.doc:
        model["doc"] = c.doc
    model["inputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                       for n, a in c.inputs]
    model["outputs"] = [{"name": "out", "dtype": kiln_io.KILN_DTYPES[y.dtype], "shape": list(y.shape)}]
    if params:
        model["params"] = params
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        save_npy(os.path.join(d, f"{n}.npy"), a)
    save_npy(os.path.join(d, "out.npy"), y)


# ---------------------------------------------------------------- unary elementwise

def unary_cases():
    c = Case("exp", "Exp", "includes -20, 0 and 20")
    c.input("x", np.concatenate([np.array([-20, 0, 20], np.float32), c.randn(21)]).reshape(4, 6))
    c.compute(torch.exp)
    c = Case("log", "Log", "includes 1 (log = 0) and small values")
    c.input("x", np.concatenate([np.array([1, 0.001, 100], np.float32), c.uniform(0.01, 10, 21)]))
    c.compute(torch.log)
    c = Case("sqrt", "Sqrt", "includes 0 and perfect squares")
    c.input("x", np.concatenate([np.array([0, 4, 9], np.float32), c.uniform(0, 10, 13)]).reshape(2, 8))
    c.compute(torch.sqrt)
    c = Case("neg", "Neg")
    c.input("x", c.randn(3, 5)).compute(torch.neg)
    c = Case("neg_i64", "Neg", "integer input")
    c.input("x", c.ints(-1000, 1000, 12)).compute(torch.neg)
    c = Case("abs", "Abs")
    c.input("x", c.randn(3, 5)).compute(torch.abs)
    c = Case("abs_i32", "Abs", "integer input")
    c.input("x", c.ints(-1000, 1000, 4, 3, dtype=np.int32)).compute(torch.abs)
    c = Case("reciprocal", "Reciprocal")
    c.input("x", c.nonzero(4, 4)).compute(torch.reciprocal)
    c = Case("erf", "Erf")
    c.input("x", np.concatenate([np.array([0, -4, 4], np.float32), c.randn(21, scale=1.5)]))
    c.compute(torch.erf).check(lambda x: np.vectorize(math.erf)(x.astype(np.float64)))
    c = Case("softplus", "Softplus", "includes -30, 0, 30 (PyTorch returns x above 20)")
    c.input("x", np.concatenate([np.array([-30, 0, 30], np.float32), c.randn(21, scale=5)]))
    c.compute(F.softplus).check(lambda x: np.log1p(np.exp(-np.abs(x.astype(np.float64))))
                                + np.maximum(x.astype(np.float64), 0))
    c = Case("leakyrelu_default", "LeakyRelu", "alpha defaults to 0.01")
    c.input("x", c.randn(2, 3, 4)).compute(lambda x: F.leaky_relu(x, 0.01))
    c = Case("leakyrelu_alpha", "LeakyRelu")
    c.input("x", c.randn(2, 3, 4)).set(alpha=0.2).compute(lambda x: F.leaky_relu(x, 0.2))
    c = Case("elu_default", "Elu", "alpha defaults to 1")
    c.input("x", c.randn(3, 7, scale=2)).compute(F.elu)
    c = Case("elu_alpha", "Elu")
    c.input("x", c.randn(3, 7, scale=2)).set(alpha=0.5).compute(lambda x: F.elu(x, 0.5))
    c = Case("gelu_default", "Gelu", "approximate absent: the erf form")
    c.input("x", c.uniform(-4, 4, 3, 8)).compute(F.gelu)
    c = Case("gelu_none", "Gelu")
    c.input("x", c.uniform(-4, 4, 3, 8)).set(approximate="none").compute(F.gelu)
    c = Case("gelu_tanh", "Gelu", "the tanh approximation")
    c.input("x", c.uniform(-4, 4, 3, 8)).set(approximate="tanh")
    c.compute(lambda x: F.gelu(x, approximate="tanh"))
    c.check(lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))))
    c = Case("hardsigmoid_default", "HardSigmoid", "alpha 0.2, beta 0.5 (ONNX defaults)")
    c.input("x", c.uniform(-4, 4, 4, 6)).compute(lambda x: torch.clamp(0.2 * x + 0.5, 0, 1))
    c = Case("hardsigmoid_torch", "HardSigmoid", "alpha 1/6, beta 0.5: torch.nn.Hardsigmoid")
    c.input("x", c.uniform(-4, 4, 4, 6)).set(alpha=1 / 6, beta=0.5).compute(F.hardsigmoid)
    c = Case("identity", "Identity")
    c.input("x", c.randn(2, 5)).compute(lambda x: x.clone())
    c = Case("identity_i64", "Identity")
    c.input("x", c.ints(-5, 5, 7)).compute(lambda x: x.clone())
    c = Case("not", "Not")
    c.input("x", c.bools(3, 4)).compute(torch.logical_not)


# ---------------------------------------------------------------- broadcasting elementwise

def pow_cases():
    c = Case("pow_bcast", "Pow", "positive base (2, 3, 4), exponent (4,)")
    c.input("x", c.uniform(0.1, 3, 2, 3, 4)).input("y", c.randn(4)).compute(torch.pow)
    c = Case("pow_neg_base_int_exp", "Pow", "negative bases with integral float exponents")
    x = c.uniform(-3, 3, 3, 5)
    c.input("x", x).input("y", np.array([[0], [2], [3]], np.float32)).compute(torch.pow)
    c.check(lambda x, y: np.power(x.astype(np.float64), y.astype(np.float64)))
    c = Case("pow_int_exponent", "Pow", "i64 exponent, negative bases")
    c.input("x", c.uniform(-2, 2, 2, 4)).param("y", np.array([3, -1, 2, 1], np.int64))
    c.compute(lambda x, y: torch.pow(x, y.to(torch.float32)))
    c = Case("pow_square_param", "Pow", "exponent a one-element param")
    c.input("x", c.randn(4, 3)).param("y", np.array([2], np.float32)).compute(torch.pow)


def minmax_cases():
    for op, fn in (("Min", torch.minimum), ("Max", torch.maximum)):
        low = op.lower()
        c = Case(f"{low}_one", op, "a single input: a copy")
        c.input("a", c.randn(3, 4)).compute(lambda a: a.clone())
        c = Case(f"{low}_two_bcast", op, "(3, 1) and (4,)")
        c.input("a", c.randn(3, 1)).input("b", c.randn(4)).compute(fn)
        c = Case(f"{low}_three_bcast", op, "(2, 3, 4), (3, 1) and a (4,) param")
        c.input("a", c.randn(2, 3, 4)).input("b", c.randn(3, 1)).param("c", c.randn(4))
        c.compute(lambda a, b, p, fn=fn: fn(fn(a, b), p))
        c = Case(f"{low}_i64", op, "integers, with ties")
        c.input("a", c.ints(-3, 3, 10)).input("b", c.ints(-3, 3, 10)).compute(fn)


def clip_cases():
    c = Case("clip_inputs", "Clip", "min and max as scalar params (opset 11+)")
    c.input("x", c.randn(3, 6, scale=2)).param("min", np.array(-1, np.float32))
    c.param("max", np.array(0.5, np.float32)).compute(lambda x, lo, hi: torch.clamp(x, lo, hi))
    c = Case("clip_min_only", "Clip", "max omitted")
    c.input("x", c.randn(3, 6, scale=2)).param("min", np.array(-0.5, np.float32))
    c.compute(lambda x, lo: torch.clamp(x, min=lo))
    c = Case("clip_max_only", "Clip", "min omitted (\"\")")
    c.input("x", c.randn(3, 6, scale=2)).skip().param("max", np.array(0.25, np.float32))
    c.compute(lambda x, _, hi: torch.clamp(x, max=hi))
    c = Case("clip_attrs", "Clip", "min and max as attributes (opset 6)")
    c.input("x", c.randn(3, 6, scale=2)).set(min=-0.75, max=1.25)
    c.compute(lambda x: torch.clamp(x, -0.75, 1.25))
    c = Case("clip_attr_min_only", "Clip", "only the min attribute")
    c.input("x", c.randn(3, 6, scale=2)).set(min=0.0).compute(lambda x: torch.clamp(x, min=0.0))
    c = Case("clip_none", "Clip", "no bounds: a copy")
    c.input("x", c.randn(2, 3)).compute(lambda x: x.clone())
    c = Case("clip_min_gt_max", "Clip", "min > max: every value becomes max (ONNX)")
    c.input("x", c.randn(8)).param("min", np.array(1, np.float32)).param("max", np.array(-1, np.float32))
    c.compute(lambda x, lo, hi: torch.full_like(x, -1.0))
    c.check(lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi))
    c = Case("clip_i32", "Clip", "integers")
    c.input("x", c.ints(-10, 10, 12, dtype=np.int32)).param("min", np.array(-3, np.int32))
    c.param("max", np.array(4, np.int32)).compute(lambda x, lo, hi: torch.clamp(x, lo, hi))


def compare_cases():
    ops = (("Equal", torch.eq), ("Less", torch.lt), ("Greater", torch.gt),
           ("LessOrEqual", torch.le), ("GreaterOrEqual", torch.ge))
    for op, fn in ops:
        low = op.lower()
        c = Case(f"{low}_bcast", op, "integral floats so that ties occur; (3, 1) vs (4,)")
        c.input("a", c.ints(-2, 3, 3, 1).astype(np.float32)).input("b", c.ints(-2, 3, 4).astype(np.float32))
        c.compute(fn)
        c = Case(f"{low}_i64", op, "i64 (shape arithmetic)")
        c.input("a", c.ints(-3, 3, 2, 5)).input("b", c.ints(-3, 3, 2, 5)).compute(fn)
    c = Case("equal_bool", "Equal", "bool inputs")
    c.input("a", c.bools(6)).input("b", c.bools(6)).compute(torch.eq)
    c = Case("less_i32_param", "Less", "i32 against a param")
    c.input("a", c.ints(-3, 3, 2, 3, dtype=np.int32)).param("b", np.array([0], np.int32)).compute(torch.lt)
    for op, fn in (("And", torch.logical_and), ("Or", torch.logical_or)):
        c = Case(f"{op.lower()}_bcast", op, "(2, 3, 1) and (4,)")
        c.input("a", c.bools(2, 3, 1)).input("b", c.bools(4)).compute(fn)
        c = Case(f"{op.lower()}_same", op)
        c.input("a", c.bools(5, 2)).input("b", c.bools(5, 2)).compute(fn)


def where_cases():
    c = Case("where_same", "Where")
    c.input("cond", c.bools(3, 4)).input("x", c.randn(3, 4)).input("y", c.randn(3, 4)).compute(torch.where)
    c = Case("where_bcast", "Where", "cond (3, 1), x (1, 4), y (4,) -> (3, 4)")
    c.input("cond", c.bools(3, 1)).input("x", c.randn(1, 4)).input("y", c.randn(4)).compute(torch.where)
    c.check(lambda cond, x, y: np.where(cond, x, y))
    c = Case("where_i64_scalar", "Where", "i64 values, y a rank-0 param: masks in shape code")
    c.input("cond", c.bools(2, 5)).input("x", c.ints(-9, 9, 2, 5)).param("y", np.array(-1, np.int64))
    c.compute(torch.where)
    c = Case("where_mask_fill", "Where", "attention-style mask: cond (1, 1, 4), fill -1e9")
    c.input("cond", c.bools(1, 1, 4)).param("x", np.array([-1e9], np.float32)).input("y", c.randn(2, 3, 4))
    c.compute(torch.where)


def prelu_cases():
    def ref(x, s):  # ONNX: x if x >= 0 else slope * x, slope broadcast to x
        return torch.where(x >= 0, x, s * x)

    c = Case("prelu_channel", "PRelu", "slope (C, 1, 1) for x (N, C, H, W), as PyTorch exports")
    c.input("x", c.randn(2, 3, 4, 4)).param("slope", c.uniform(0, 0.5, 3, 1, 1)).compute(ref)
    c.check(lambda x, s: np.where(x >= 0, x, s * x))
    c = Case("prelu_scalar", "PRelu", "one slope")
    c.input("x", c.randn(3, 5)).param("slope", np.array([0.25], np.float32))
    c.compute(lambda x, s: F.prelu(x, s))
    c = Case("prelu_last", "PRelu", "slope (W,) along the last axis")
    c.input("x", c.randn(2, 3, 5)).input("slope", c.uniform(0, 1, 5)).compute(ref)
    c = Case("prelu_full", "PRelu", "slope with x's shape")
    c.input("x", c.randn(4, 3)).input("slope", c.uniform(0, 1, 4, 3)).compute(ref)


def integer_binary_cases():
    c = Case("add_i64", "Add", "shape arithmetic in i64, broadcast")
    c.input("a", c.ints(-100, 100, 3, 4)).input("b", c.ints(-100, 100, 4)).compute(torch.add)
    c = Case("sub_i32", "Sub")
    c.input("a", c.ints(-100, 100, 3, 4, dtype=np.int32)).input("b", c.ints(-100, 100, 3, 1, dtype=np.int32))
    c.compute(torch.sub)
    c = Case("mul_i64_param", "Mul")
    c.input("a", c.ints(-100, 100, 2, 3)).param("b", np.array([2, -3, 5], np.int64)).compute(torch.mul)
    c = Case("div_i64_trunc", "Div", "integer division truncates toward zero (ONNX), negatives")
    a = np.array([7, -7, 7, -7, 9, -9, 1, -1, 0, 100], np.int64)
    b = np.array([2, 2, -2, -2, 3, 4, 5, 5, 3, -7], np.int64)
    c.input("a", a).input("b", b).compute(lambda a, b: torch.div(a, b, rounding_mode="trunc"))
    c.check(lambda a, b: np.trunc(a / b))
    c = Case("div_i32_bcast", "Div")
    c.input("a", c.ints(-50, 50, 3, 4, dtype=np.int32)).param("b", np.array([3, -2, 7, 1], np.int32))
    c.compute(lambda a, b: torch.div(a, b, rounding_mode="trunc"))
    c = Case("div_i64_by_zero", "Div",
             "Kiln-defined: integer division by zero gives 0 (ONNX: undefined); numpy reference")
    c.input("a", np.array([5, -5, 0, 8], np.int64)).input("b", np.array([0, 0, 0, 3], np.int64))
    c.compute_numpy(lambda a, b: np.where(b == 0, 0, np.trunc(a / np.where(b == 0, 1, b))).astype(np.int64))


# ---------------------------------------------------------------- reductions

def reduce_cases():
    torch_fns = {
        "ReduceMean": lambda x, dims, keep: torch.mean(x, dim=dims, keepdim=keep),
        "ReduceSum": lambda x, dims, keep: torch.sum(x, dim=dims, keepdim=keep),
        "ReduceMax": lambda x, dims, keep: torch.amax(x, dim=dims, keepdim=keep),
        "ReduceMin": lambda x, dims, keep: torch.amin(x, dim=dims, keepdim=keep),
    }
    numpy_fns = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min}
    for op, fn in torch_fns.items():
        low = op.lower()
        nfn = numpy_fns[op]

        def reducer(axes, keep, fn=fn, rank=3):
            dims = tuple(range(rank)) if axes is None else tuple(axes)
            return lambda x, *rest: fn(x, dims, bool(keep))

        def checker(axes, keep, nfn=nfn):
            return lambda x, *rest: nfn(x.astype(np.float64), axis=None if axes is None else tuple(axes),
                                        keepdims=bool(keep))

        c = Case(f"{low}_axis1", op, "axes [1], keepdims default (1)")
        c.input("x", c.randn(2, 5, 3)).set(axes=[1]).compute(reducer([1], 1))
        c = Case(f"{low}_neg_axis_nokeep", op, "axes [-1], keepdims 0")
        c.input("x", c.randn(2, 5, 3)).set(axes=[-1], keepdims=0).compute(reducer([-1], 0))
        c = Case(f"{low}_axes_0_2", op, "axes [0, -1]: non-adjacent, keepdims 1")
        c.input("x", c.randn(3, 4, 5)).set(axes=[0, -1]).compute(reducer([0, 2], 1))
        c.check(checker([0, 2], 1))
        c = Case(f"{low}_all_nokeep", op, "no axes: every axis, keepdims 0 -> a scalar")
        c.input("x", c.randn(4, 3, 2)).set(keepdims=0).compute(reducer(None, 0))
        c = Case(f"{low}_all_keep", op, "no axes, keepdims 1 -> (1, 1, 1)")
        c.input("x", c.randn(4, 3, 2)).compute(reducer(None, 1))
        c = Case(f"{low}_axes_input", op, "axes as a constant i64 input (opset 13 ReduceSum / 18)")
        c.input("x", c.randn(3, 4, 5)).param("axes", np.array([-2, 0], np.int64)).set(keepdims=0)
        c.compute(reducer([0, 1], 0))
        c = Case(f"{low}_noop", op, "noop_with_empty_axes 1 and no axes: a copy")
        c.input("x", c.randn(2, 3)).set(noop_with_empty_axes=1).compute(lambda x: x.clone())
        c = Case(f"{low}_long_rows", op, "rows of 96 along the last axis")
        c.input("x", c.randn(4, 96)).set(axes=[1], keepdims=0).compute(reducer([1], 0, rank=2))
    c = Case("reducesum_i64", "ReduceSum", "integers (shape arithmetic)")
    c.input("x", c.ints(-50, 50, 3, 4)).set(axes=[0]).compute(lambda x: torch.sum(x, 0, keepdim=True))
    c = Case("reducemax_i32", "ReduceMax", "integers")
    c.input("x", c.ints(-50, 50, 3, 4, dtype=np.int32)).set(axes=[1], keepdims=0)
    c.compute(lambda x: torch.amax(x, 1))


def argmax_ref(x, axis, keep, last):
    if last:  # the last maximal index: argmax of the flipped tensor, mapped back
        n = x.shape[axis]
        return n - 1 - torch.argmax(torch.flip(x, [axis]), dim=axis, keepdim=keep)
    return torch.argmax(x, dim=axis, keepdim=keep)


def argmax_numpy(x, axis, keep, last):
    m = np.max(x, axis=axis, keepdims=True)
    idx = np.arange(x.shape[axis]).reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    hits = np.where(x == m, idx, -1 if last else x.shape[axis])
    r = hits.max(axis=axis, keepdims=keep) if last else hits.min(axis=axis, keepdims=keep)
    return r.astype(np.int64)


def argmax_cases():
    def case(name, x, axis=None, keepdims=None, last=None, doc=None):
        c = Case(name, "ArgMax", doc)
        c.input("x", x(c))
        if axis is not None:
            c.set(axis=axis)
        if keepdims is not None:
            c.set(keepdims=keepdims)
        if last is not None:
            c.set(select_last_index=last)
        a, k, s = axis or 0, keepdims if keepdims is not None else 1, bool(last)
        c.compute(lambda x: argmax_ref(x, a, bool(k), s)).check(lambda x: argmax_numpy(x, a, bool(k), s))

    case("argmax_default", lambda c: c.randn(4, 5), doc="axis 0, keepdims 1 (defaults)")
    case("argmax_axis1", lambda c: c.randn(2, 6, 3), axis=1)
    case("argmax_neg_nokeep", lambda c: c.randn(3, 7), axis=-1, keepdims=0, doc="axis -1, keepdims 0")
    ties = lambda c: c.ints(0, 3, 5, 6).astype(np.float32)  # noqa: E731
    case("argmax_ties_first", ties, axis=1, last=0, doc="many ties: the first index")
    case("argmax_ties_last", ties, axis=1, last=1, doc="many ties: select_last_index 1")
    case("argmax_ties_last_axis0", ties, axis=0, keepdims=0, last=1)
    case("argmax_i32", lambda c: c.ints(-5, 5, 3, 4, dtype=np.int32), axis=1)


def logsoftmax_cases():
    def case(name, x, axis=None, doc=None):
        c = Case(name, "LogSoftmax", doc)
        c.input("x", x(c))
        if axis is not None:
            c.set(axis=axis)
        a = -1 if axis is None else axis
        c.compute(lambda x: F.log_softmax(x, dim=a))
        c.check(lambda x: (x - x.max(axis=a, keepdims=True)) -
                np.log(np.exp(x - x.max(axis=a, keepdims=True)).sum(axis=a, keepdims=True)))

    case("logsoftmax_default", lambda c: c.randn(3, 10), doc="axis defaults to -1")
    case("logsoftmax_axis0", lambda c: c.randn(4, 5), axis=0)
    case("logsoftmax_axis1_3d", lambda c: c.randn(2, 5, 3), axis=1)
    case("logsoftmax_neg_axis", lambda c: c.randn(2, 3, 4), axis=-2)
    case("logsoftmax_large", lambda c: c.randn(4, 8, scale=300),
         doc="logits up to ~1000: exp(x) alone would overflow")


# ---------------------------------------------------------------- Cast

ONNX_TYPES = {np.float32: 1, np.float64: 11, np.int8: 3, np.uint8: 2, np.int32: 6, np.int64: 7,
              np.bool_: 9}
TORCH_TYPES = {np.float32: torch.float32, np.float64: torch.float64, np.int8: torch.int8,
               np.uint8: torch.uint8, np.int32: torch.int32, np.int64: torch.int64, np.bool_: torch.bool}


def kiln_float_to_int(x, to):
    """Kiln's documented float -> integer Cast: clamp to the type's range, then truncate."""
    info = np.iinfo(to)
    hi = 9223372036854774784.0 if to == np.int64 else float(info.max)
    return np.trunc(np.clip(x.astype(np.float64), float(info.min), hi)).astype(to)


def cast_cases():
    def case(name, x, to, doc=None):
        c = Case(name, "Cast", doc)
        c.input("x", x(c)).set(to=ONNX_TYPES[to])
        c.compute(lambda x: x.to(TORCH_TYPES[to]))
        return c

    frac = lambda c: np.concatenate([np.array([-2.7, -0.5, -0.0, 0.5, 2.7, -3.0], np.float32),  # noqa: E731
                                     c.uniform(-100, 100, 10)])
    case("cast_f32_i32", frac, np.int32, "negative values truncate toward zero").check(
        lambda x: np.trunc(x).astype(np.int32))
    case("cast_f32_i64", frac, np.int64, "negative values truncate toward zero")
    case("cast_f32_i8", lambda c: c.uniform(-120, 120, 12), np.int8)
    case("cast_f32_u8", lambda c: c.uniform(0, 255, 12), np.uint8)
    case("cast_f32_bool", lambda c: np.array([0, -0.0, 0.5, -2, 1e-30, 3], np.float32), np.bool_,
         "nonzero -> true, -0 -> false")
    case("cast_bool_f32", lambda c: c.bools(7), np.float32)
    case("cast_i64_f32", lambda c: c.ints(-10 ** 6, 10 ** 6, 8), np.float32)
    case("cast_i32_i64", lambda c: c.ints(-10 ** 9, 10 ** 9, 8, dtype=np.int32), np.int64)
    case("cast_f32_f64", lambda c: c.randn(2, 3), np.float64)
    case("cast_f64_f32", lambda c: c.randn(2, 3).astype(np.float64) / 3, np.float32,
         "f64 values that f32 cannot hold: round to nearest")
    case("cast_i64_bool", lambda c: c.ints(-2, 3, 9), np.bool_)
    c = Case("cast_i64_i8_wrap", "Cast", "Kiln-defined integer narrowing wraps (numpy astype)")
    c.input("x", np.array([1, 127, 128, 255, 256, -129, -1000], np.int64)).set(to=3)
    c.compute_numpy(lambda x: x.astype(np.int8))
    c = Case("cast_f32_i8_saturate", "Cast",
             "Kiln-defined out-of-range float -> int: clamp then truncate (ONNX: undefined); "
             "numpy reference")
    c.input("x", np.array([-1e10, -300, -128.9, 127.9, 300, 1e10], np.float32)).set(to=3)
    c.compute_numpy(lambda x: kiln_float_to_int(x, np.int8))
    c = Case("cast_f32_i64_saturate", "Cast", "Kiln-defined saturation at the i64 range; numpy reference")
    c.input("x", np.array([-1e30, -9.3e18, 1e19, 1e30, -5.5], np.float32)).set(to=7)
    c.compute_numpy(lambda x: kiln_float_to_int(x, np.int64))


# ---------------------------------------------------------------- RandomNormalLike

SEED_MIX = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


def mix64(z):
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & M64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def random_normal_like(shape, mean, scale, seed, dtype):
    """The generator of compiler/ops/math/randomnormallike.c, element by element."""
    base = mix64((int(seed) & M64) ^ SEED_MIX)
    n = int(np.prod(shape))
    out = np.empty(n, np.float64)
    for i in range(n):
        h1, h2 = mix64(base ^ (2 * i)), mix64(base ^ (2 * i + 1))
        u1 = float((h1 >> 11) + 1) * 2.0 ** -53
        u2 = float(h2 >> 11) * 2.0 ** -53
        out[i] = mean + scale * (math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2))
    return out.reshape(shape).astype(dtype)


def check_normal(name, y, mean, scale):
    """The statistical reference: y must look like N(mean, scale^2)."""
    v = y.astype(np.float64).reshape(-1)
    n = v.size
    se_mean, se_std = scale / math.sqrt(n), scale / math.sqrt(2 * n)
    assert abs(v.mean() - mean) < 5 * se_mean, (name, v.mean(), mean)
    assert abs(v.std() - scale) < 5 * se_std, (name, v.std(), scale)
    within = np.mean(np.abs(v - mean) < scale)  # 68.27% for a normal distribution
    assert abs(within - 0.6827) < 5 * math.sqrt(0.6827 * 0.3173 / n), (name, within)


def random_cases():
    def case(name, x, mean, scale, seed, dtype_code=None, doc=None):
        c = Case(name, "RandomNormalLike", doc)
        c.input("x", x)
        c.set(mean=mean, scale=scale)
        if seed is not None:
            c.set(seed=seed)
        if dtype_code is not None:
            c.set(dtype=dtype_code)
        out_dtype = np.float64 if dtype_code == 11 else np.float32

        def gen(x):
            y = random_normal_like(x.shape, mean, scale, seed or 0, out_dtype)
            check_normal(c.name, y, mean, scale)
            return y
        c.compute_numpy(gen)

    rng = np.random.default_rng(7)
    case("randomnormallike", rng.standard_normal((64, 64)).astype(np.float32), 1.5, 2.0, 42.0,
         doc="4096 draws of N(1.5, 2^2), seed 42")
    case("randomnormallike_f64_noseed", np.zeros((50, 40), np.int64), -3.0, 0.5, None, 11,
         doc="no seed (0), dtype 11 (f64) from an i64 input")



def write_family(family, write=None):
    """Writes CASES (each by write(root, case), default write_case) as tests/goldens/ops/<case>/
    and the list cases-FAMILY.txt, after removing the case directories that list named before
    (not by prefix: one family's prefix may start another's, quant_ and quant_vnni_)."""
    root = os.path.join(kiln_io.repo_root(), "tests", "goldens", "ops")
    listing = os.path.join(root, f"cases-{family}.txt")
    if os.path.exists(listing):
        for line in open(listing):
            if line.split():
                shutil.rmtree(os.path.join(root, line.split()[0]), ignore_errors=True)
    names = set()
    for c in CASES:
        assert c.name not in names, c.name
        names.add(c.name)
        (write or write_case)(root, c)
    with open(listing, "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {root}")

def main():
    unary_cases()
    pow_cases()
    minmax_cases()
    clip_cases()
    compare_cases()
    where_cases()
    prelu_cases()
    integer_binary_cases()
    reduce_cases()
    argmax_cases()
    logsoftmax_cases()
    cast_cases()
    random_cases()
    write_family("math")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes the golden cases of the ops added for ONNX conformance (issue 4): the trigonometric and
rounding unary ops, Selu/Celu/Softsign/HardSwish/ThresholdedRelu, IsNaN/IsInf, Xor, the variadic
Sum/Mean, ArgMin and the Reduce* family (Prod, SumSquare, L1, L2, LogSum, LogSumExp), plus Clip
with bounds computed at run time. Same layout as tools/goldens_math.py (whose Case and write_case
it reuses): tests/goldens/ops/onnxops_<case>/ with model.json, <input>.npy, out.npy, and
tests/goldens/ops/cases-onnxops.txt.

References are PyTorch; each op without a one-call PyTorch equivalent says how it is built, and
gets a `check` against numpy applying the ONNX definition.

Run: /usr/bin/python3 tools/goldens_onnxops.py   (deletes and rewrites tests/goldens/ops/onnxops_*/)
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_math as gm  # noqa: E402

gm.PREFIX = "onnxops_"
Case = gm.Case
f64 = np.float64


def unary_cases():
    c = Case("ceil", "Ceil", "includes integers, halves and negatives")
    c.input("x", np.concatenate([np.array([-2, -1.5, -0.5, 0, 0.5, 2], np.float32), c.randn(18, scale=3)]))
    c.compute(torch.ceil).check(np.ceil)
    c = Case("floor", "Floor", "includes integers, halves and negatives")
    c.input("x", np.concatenate([np.array([-2, -1.5, -0.5, 0, 0.5, 2], np.float32), c.randn(18, scale=3)]))
    c.compute(torch.floor).check(np.floor)
    c = Case("round", "Round", "halves round to even: -2.5, -1.5, 0.5, 1.5, 2.5")
    c.input("x", np.concatenate([np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32), c.randn(18, scale=3)]))
    c.compute(torch.round).check(np.round)
    c = Case("sign", "Sign", "includes 0")
    c.input("x", np.concatenate([np.array([0, -3, 3], np.float32), c.randn(21)])).compute(torch.sign).check(np.sign)
    for name, fn, npfn, x in [
            ("sin", torch.sin, np.sin, lambda c: c.uniform(-7, 7, 4, 6)),
            ("cos", torch.cos, np.cos, lambda c: c.uniform(-7, 7, 4, 6)),
            ("tan", torch.tan, np.tan, lambda c: c.uniform(-1.4, 1.4, 4, 6)),
            ("sinh", torch.sinh, np.sinh, lambda c: c.uniform(-5, 5, 4, 6)),
            ("cosh", torch.cosh, np.cosh, lambda c: c.uniform(-5, 5, 4, 6)),
            ("asinh", torch.asinh, np.arcsinh, lambda c: c.uniform(-20, 20, 4, 6)),
            ("acosh", torch.acosh, np.arccosh, lambda c: c.uniform(1, 20, 4, 6)),
            ("atanh", torch.atanh, np.arctanh, lambda c: c.uniform(-0.95, 0.95, 4, 6))]:
        c = Case(name, name.capitalize() if name[0] != "a" else "A" + name[1:])
        c.input("x", x(c)).compute(fn).check(lambda a, npfn=npfn: npfn(a.astype(f64)))
    c = Case("softsign", "Softsign")
    c.input("x", c.randn(3, 8, scale=3)).compute(F.softsign).check(lambda x: x / (1 + np.abs(x)))
    c = Case("hardswish", "HardSwish", "includes the gate's ends -3 and 3")
    c.input("x", np.concatenate([np.array([-3, 3, 0], np.float32), c.randn(21, scale=3)]))
    c.compute(F.hardswish).check(lambda x: x * np.clip(x / 6 + 0.5, 0, 1))
    c = Case("selu", "Selu", "ONNX default alpha and gamma (PyTorch's constants)")
    c.input("x", c.randn(3, 8, scale=2)).compute(F.selu)
    c = Case("selu_attrs", "Selu", "alpha 2, gamma 3: gamma * elu(x, alpha)")
    c.input("x", c.randn(3, 8, scale=2)).set(alpha=2.0, gamma=3.0)
    c.compute(lambda x: 3.0 * F.elu(x, 2.0)).check(lambda x: 3 * np.where(x > 0, x, 2 * (np.exp(x) - 1)))
    c = Case("celu", "Celu")
    c.input("x", c.randn(3, 8, scale=2)).compute(F.celu)
    c = Case("celu_alpha", "Celu")
    c.input("x", c.randn(3, 8, scale=2)).set(alpha=2.0).compute(lambda x: F.celu(x, 2.0))
    c = Case("thresholdedrelu", "ThresholdedRelu", "alpha defaults to 1; PyTorch: threshold")
    c.input("x", np.concatenate([np.array([1, 1.5, 0.5], np.float32), c.randn(21, scale=2)]))
    c.compute(lambda x: F.threshold(x, 1.0, 0.0)).check(lambda x: np.where(x > 1, x, 0))
    c = Case("thresholdedrelu_alpha", "ThresholdedRelu")
    c.input("x", c.randn(3, 8, scale=2)).set(alpha=0.5).compute(lambda x: F.threshold(x, 0.5, 0.0))
    special = np.array([np.nan, np.inf, -np.inf, 0, 1, -1], np.float32)
    c = Case("isnan", "IsNaN")
    c.input("x", np.concatenate([special, c.randn(6)])).compute(torch.isnan)
    c = Case("isinf", "IsInf")
    c.input("x", np.concatenate([special, c.randn(6)])).compute(torch.isinf)
    c = Case("isinf_positive", "IsInf", "detect_negative = 0")
    c.input("x", np.concatenate([special, c.randn(6)])).set(detect_negative=0).compute(torch.isposinf)
    c = Case("isinf_negative", "IsInf", "detect_positive = 0")
    c.input("x", np.concatenate([special, c.randn(6)])).set(detect_positive=0).compute(torch.isneginf)


def variadic_cases():
    c = Case("xor", "Xor", "broadcast (3, 1) with (4)")
    c.input("a", c.bools(3, 1)).input("b", c.bools(4)).compute(torch.logical_xor)
    c = Case("sum_3", "Sum", "three inputs, broadcast")
    c.input("a", c.randn(2, 3, 4)).input("b", c.randn(3, 1)).input("c", c.randn(4))
    c.compute(lambda a, b, d: a + b + d)
    c = Case("sum_1", "Sum", "one input: a copy")
    c.input("a", c.randn(2, 3)).compute(lambda a: a.clone())
    c = Case("sum_i32", "Sum")
    c.input("a", c.ints(-100, 100, 3, 4, dtype=np.int32)).input("b", c.ints(-100, 100, 4, dtype=np.int32))
    c.compute(lambda a, b: a + b)
    c = Case("mean_3", "Mean", "three inputs, broadcast")
    c.input("a", c.randn(2, 3, 4)).input("b", c.randn(3, 1)).input("c", c.randn(4))
    c.compute(lambda a, b, d: (a + b + d) / 3)


def argmin_cases():
    x = np.array([[3, 1, 1, 2], [0, 5, 0, 0], [7, 7, 6, 6]], np.float32)
    c = Case("argmin_axis1_ties", "ArgMin", "first index on ties")
    c.input("x", x).set(axis=1).compute(lambda t: torch.argmin(t, 1, keepdim=True))
    c.check(lambda a: np.argmin(a, 1)[:, None])
    c = Case("argmin_last", "ArgMin", "select_last_index: argmin of the flipped rows")
    c.input("x", x).set(axis=1, keepdims=0, select_last_index=1)
    c.compute(lambda t: 3 - torch.argmin(torch.flip(t, [1]), 1))
    c = Case("argmin_axis0", "ArgMin", "axis defaults to 0")
    c.input("x", c.randn(4, 3, 5)).compute(lambda t: torch.argmin(t, 0, keepdim=True))


def reduce_cases():
    def lse(t, axes, keep):
        return torch.logsumexp(t, axes, keepdim=keep)
    ops = [
        ("prod", "ReduceProd", lambda t, a, k: prod(t, a, k), lambda x, a, k: np.prod(x, tuple(a), keepdims=k)),
        ("sumsquare", "ReduceSumSquare", lambda t, a, k: torch.sum(t * t, a, keepdim=k),
         lambda x, a, k: np.sum(x.astype(f64) ** 2, tuple(a), keepdims=k)),
        ("l1", "ReduceL1", lambda t, a, k: torch.sum(torch.abs(t), a, keepdim=k),
         lambda x, a, k: np.sum(np.abs(x.astype(f64)), tuple(a), keepdims=k)),
        ("l2", "ReduceL2", lambda t, a, k: torch.linalg.vector_norm(t, 2, a, keepdim=k),
         lambda x, a, k: np.sqrt(np.sum(x.astype(f64) ** 2, tuple(a), keepdims=k))),
        ("logsum", "ReduceLogSum", lambda t, a, k: torch.log(torch.sum(t, a, keepdim=k)),
         lambda x, a, k: np.log(np.sum(x.astype(f64), tuple(a), keepdims=k))),
        ("logsumexp", "ReduceLogSumExp", lse,
         lambda x, a, k: np.log(np.sum(np.exp(x.astype(f64)), tuple(a), keepdims=k))),
    ]
    for name, op, fn, npfn in ops:
        for axes, keep in [([1], 1), ([0, 2], 0), ([-1], 1), (None, 1)]:
            tag = "all" if axes is None else "_".join(str(a).replace("-", "m") for a in axes)
            c = Case(f"{name}_{tag}_k{keep}", op)
            x = c.uniform(0.5, 1.5, 2, 3, 4) if name in ("prod", "logsum") else c.randn(2, 3, 4)
            c.input("x", x)
            all_axes = [0, 1, 2] if axes is None else axes
            if axes is not None:
                c.set(axes=axes)
            if not keep:
                c.set(keepdims=0)
            c.compute(lambda t, a=all_axes, k=bool(keep), fn=fn: fn(t, a, k))
            c.check(lambda x, a=all_axes, k=bool(keep), npfn=npfn: npfn(x, a, k))


def prod(t, axes, keep):
    for a in sorted((a % t.dim() for a in axes), reverse=True):
        t = torch.prod(t, a, keepdim=keep)
    return t


def clip_cases():
    c = Case("clip_runtime_bounds", "Clip", "min and max are model inputs, not constants")
    c.input("x", c.randn(3, 5, scale=2)).input("lo", np.array(-0.5, np.float32))
    c.input("hi", np.array(0.7, np.float32))
    c.compute(lambda x, lo, hi: torch.clamp(x, lo.item(), hi.item()))
    c = Case("clip_runtime_max", "Clip", "min omitted, max a model input")
    c.input("x", c.randn(3, 5, scale=2)).skip().input("hi", np.array(0.25, np.float32))
    c.compute(lambda x, lo, hi: torch.clamp(x, max=hi.item()))


def main():
    unary_cases()
    variadic_cases()
    argmin_cases()
    reduce_cases()
    clip_cases()
    gm.write_family("onnxops")


if __name__ == "__main__":
    main()

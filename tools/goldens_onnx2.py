#!/usr/bin/python3
"""Writes the golden cases of the ONNX conformance round 2 (issue 4): u8 Add/Sub/Mul/Div wrapping
around modulo 256 like numpy and ONNX, Pow with an integer base, LayerNormalization's optional Mean
and InvStdDev outputs, and Resize's tf_half_pixel_for_nn coordinates. Same layout as
tools/goldens_math.py (whose Case and write_case it reuses): tests/goldens/ops/onnx2_<case>/ with
model.json, <input>.npy, one <output>.npy per output, and tests/goldens/ops/cases-onnx2.txt.

References are PyTorch; the u8 and integer Pow cases are also checked against numpy, the Resize
case against numpy applying the ONNX definition.

Run: /usr/bin/python3 tools/goldens_onnx2.py   (deletes and rewrites tests/goldens/ops/onnx2_*/)
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_math as gm  # noqa: E402
import kiln_io  # noqa: E402

gm.PREFIX = "onnx2_"
Case = gm.Case
u8 = np.uint8
MULTI = {}  # case name -> (output names, torch fn returning one tensor per output)


def u8_cases():
    # Values near 255 and 0 so that sums, differences and products all leave [0, 255].
    a = np.array([250, 200, 3, 0, 255, 128, 17, 99], u8)
    b = np.array([10, 100, 5, 1, 255, 2, 16, 3], u8)
    for name, op, tfn, nfn in [("add", "Add", torch.add, np.add),
                               ("sub", "Sub", torch.sub, np.subtract),
                               ("mul", "Mul", torch.mul, np.multiply)]:
        c = Case(f"{name}_u8_wraps", op, "u8 results wrap around modulo 256 (numpy, ONNX)")
        c.input("a", a).input("b", b).compute(tfn).check(lambda x, y, nfn=nfn: nfn(x, y))
    c = Case("div_u8_bcast", "Div", "u8 division truncates; divisor broadcast")
    c.input("a", a.reshape(2, 4)).param("b", np.array([3, 7, 1, 200], u8))
    c.compute(lambda x, y: torch.div(x, y, rounding_mode="trunc")).check(lambda x, y: x // y)


def pow_cases():
    c = Case("pow_i64", "Pow", "integer base and exponent: exact integer powers, negative bases")
    c.input("x", np.array([[2, -3, 5, 0], [1, 7, -2, 10]], np.int64))
    c.input("y", np.array([3, 2, 4, 1], np.int64))
    c.compute(torch.pow).check(np.power)
    c = Case("pow_i32_f32_exponent", "Pow",
             "i32 base, f32 exponent: computed in floating point, truncated to i32 (ONNX)")
    c.input("x", np.array([1, 2, 3, 4, 9, 16], np.int32))
    c.input("y", np.array([4, 5, 2, 0.5, 0.5, 1.5], np.float32))
    c.compute(lambda x, y: torch.pow(x.double(), y.double()).to(torch.int32))
    c.check(lambda x, y: np.trunc(np.power(x.astype(np.float64), y)).astype(np.int32))


def layer_norm_stats(x, scale, bias, axis, eps):
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    inv = 1 / torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)
    y = F.layer_norm(x, x.shape[axis:], scale, bias, eps)
    return y, mean, inv


def layer_norm_cases():
    for axis in (1, -1):
        c = Case(f"layernorm_mean_invstddev_axis{axis % 3}", "LayerNormalization",
                 "the optional Mean and InvStdDev outputs (x.shape with the normalized axes 1)")
        shape = (2, 3, 5)
        norm = shape[axis % 3:]
        c.input("x", c.randn(*shape, scale=2) + 1).param("scale", c.randn(*norm))
        c.param("bias", c.randn(*norm)).set(axis=axis, epsilon=1e-3)
        c.compute(lambda x, s, b, axis=axis: layer_norm_stats(x, s, b, axis % 3, 1e-3))
        MULTI[c.name] = ["out", "mean", "inv_std_dev"]


def resize_nearest_tf(x, sizes):  # ONNX: x_original = (o + 0.5) / scale, nearest_mode floor
    y = x
    for axis, out in enumerate(sizes):
        n = x.shape[axis]
        src = np.minimum(np.floor((np.arange(out) + 0.5) / (out / n)), n - 1).astype(np.int64)
        y = np.take(y, src, axis=axis)
    return y


def resize_cases():
    c = Case("resize_tf_half_pixel_for_nn", "Resize",
             "nearest with tf_half_pixel_for_nn and floor: PyTorch's nearest-exact")
    sizes = np.array([1, 2, 7, 3], np.int64)
    c.input("x", c.randn(1, 2, 4, 5)).skip().skip().param("sizes", sizes)
    c.set(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor")
    c.compute(lambda x, roi, scales, s: F.interpolate(x, size=(7, 3), mode="nearest-exact"))
    c.check(lambda x, roi, scales, s: resize_nearest_tf(x, s))


def write_multi(root, c):
    """Like gm.write_case, for a case whose reference returns one tensor per output."""
    outs = MULTI[c.name]
    args = [torch.from_numpy(a.copy()) if a is not None else None for a in c.arrays()]
    with torch.no_grad():
        ys = [y.numpy().copy(order="C") for y in c.fn(*args)]
    d = os.path.join(root, c.name)
    params = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape),
               "init": {"kind": "values", "values": gm.values(a)}} for n, a in c.params]
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": outs,
            "attrs": c.attrs}
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}", "doc": c.doc,
             "inputs": [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                        for n, a in c.inputs],
             "outputs": [{"name": n, "dtype": kiln_io.KILN_DTYPES[y.dtype], "shape": list(y.shape)}
                         for n, y in zip(outs, ys)],
             "params": params, "nodes": [node]}
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        gm.save_npy(os.path.join(d, f"{n}.npy"), a)
    for n, y in zip(outs, ys):
        gm.save_npy(os.path.join(d, f"{n}.npy"), y)


def main():
    u8_cases()
    pow_cases()
    layer_norm_cases()
    resize_cases()
    gm.write_family("onnx2", lambda root, c: (write_multi if c.name in MULTI else gm.write_case)(root, c))


if __name__ == "__main__":
    main()

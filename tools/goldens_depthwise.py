#!/usr/bin/python3
"""Golden cases of depthwise convolutions in the channel-blocked layout NCHWc and of convolutions
that change layout (FusedConv `input_layout`), against PyTorch's conv2d (float64):
tests/goldens/ops/cases-depthwise.txt and its case directories. tests/test_ops.c holds the
interpreter to these references and the generated code (both backends) to the interpreter.

    /usr/bin/python3 tools/goldens_depthwise.py

- dw_nchwc_s1_relu6: FusedConv NCHWc (16 lanes), 3x3 stride 1, bias, ReLU6; 13 output columns
  (a register tile of 8 and a tail of 5).
- dw_nchwc_s2_lanes8_residual: 24 channels (no multiple of 16) in 8 lanes, stride 2, batch 2,
  residual and ReLU.
- conv_layout_change: a stem conv reading planar x and writing NCHWc (3 -> 8 channels, 4 lanes),
  then a 1x1 conv reading NCHWc and writing planar (8 -> 6 channels, planar residual).
- dw_chain_mobilenet: raw ONNX ops (Conv, Clip) as MobileNet-V2 has them — stem 3 -> 16 stride 2,
  1x1 16 -> 32, depthwise 32, 1x1 32 -> 24, depthwise 24 stride 2, 1x1 24 -> 16, ReLU6 between —
  left to the select-layout pass: with 16 lanes the stem reads planar x and writes NCHWc, the
  1x1 16 -> 32, the depthwise 32 and the 1x1 32 -> 24 read NCHWc (the last writes planar), the
  24-channel depthwise conv falls back to the planar kernel; no Reorder anywhere
  (tests/test_kernels.c checks that).
Tiny shapes: the test suite builds every case twice (C and LLVM backends).
"""
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens_layout import blocked, param  # noqa: E402
from kiln_io import repo_root, save_npy, write_model  # noqa: E402

DOC = "tools/goldens_depthwise.py"
RELU6 = {"activation": "Clip", "activation_params": [0.0, 6.0]}


def conv(x, w, b=None, stride=1, pad=0, group=1):
    """PyTorch's conv2d in float64."""
    t = lambda a: None if a is None else torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return torch.nn.functional.conv2d(t(x), t(w), t(b), stride=stride, padding=pad,
                                      groups=group).numpy()


def relu6(a):
    return np.clip(a, 0.0, 6.0)


def weights(rng, m, cg, k):
    return (rng.standard_normal((m, cg, k, k)) / np.sqrt(cg * k * k)).astype(np.float32)


def vector(rng, n):
    return rng.standard_normal(n).astype(np.float32)


def reorder(name, src, dst, layout, lanes):
    return {"op": "Reorder", "name": name, "inputs": [src], "outputs": [dst],
            "attrs": {"layout": layout, "lanes": lanes}}


def write_case(name, op, inputs, params, nodes, y):
    """tests/goldens/ops/NAME: model.json (the nodes over inputs and params, output y), x.npy ...
    and y.npy. Returns the cases-depthwise.txt line."""
    d = os.path.join(repo_root(), "tests", "goldens", "ops", name)
    shutil.rmtree(d, ignore_errors=True)
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name, "doc": DOC,
             "inputs": [{"name": k, "dtype": "f32", "shape": list(v.shape)} for k, v in inputs],
             "outputs": [{"name": "y", "dtype": "f32", "shape": list(y.shape)}],
             "params": [param(k, v) for k, v in params], "nodes": nodes}
    write_model(os.path.join(d, "model.json"), model)
    for k, v in inputs + [("y", y)]:
        save_npy(os.path.join(d, k + ".npy"), np.asarray(v, dtype=np.float32))
    return f"{name} {op}\n"


def depthwise_case(name, x_shape, stride, lanes, residual, attrs, seed):
    """Reorder(x) -> FusedConv depthwise 3x3 pad 1 NCHWc -> Reorder -> y."""
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w, b = weights(rng, c, 1, 3), vector(rng, c)
    y = conv(x, w, b, stride=stride, pad=1, group=c)
    z = rng.standard_normal(y.shape).astype(np.float32) if residual else None
    y = y + z if residual else y
    y = relu6(y) if attrs.get("activation") == "Clip" else np.maximum(y, 0)
    fused = dict(attrs, kernel_shape=[3, 3], strides=[stride] * 2, pads=[1] * 4, group=c,
                 layout="NCHWc", lanes=lanes)
    nodes = [reorder("to_x", "x", "x.b", "NCHWc", lanes)]
    if residual:
        nodes.append(reorder("to_z", "z", "z.b", "NCHWc", lanes))
    nodes += [{"op": "FusedConv", "name": "dw", "outputs": ["y.b"], "attrs": fused,
               "inputs": ["x.b", "w", "b"] + (["z.b"] if residual else [])},
              reorder("to_y", "y.b", "y", "NCHW", lanes)]
    inputs = [("x", x)] + ([("z", z)] if residual else [])
    return write_case(name, "FusedConv", inputs, [("w", w), ("b", b)], nodes, y)


def layout_change_case():
    """x planar -> stem (NCHW in, NCHWc out) -> 1x1 conv (NCHWc in, NCHW out, + z) -> y."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    w1, b1, w2 = weights(rng, 8, 3, 3), vector(rng, 8), weights(rng, 6, 8, 1)
    h = relu6(conv(x, w1, b1, stride=2, pad=1))
    z = rng.standard_normal((1, 6, 5, 5)).astype(np.float32)
    y = conv(h, w2) + z
    stem = dict(RELU6, kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, layout="NCHWc",
                input_layout="NCHW", lanes=4)
    nodes = [{"op": "FusedConv", "name": "stem", "inputs": ["x", "w1", "b1"], "outputs": ["h.b"],
              "attrs": stem},
             {"op": "FusedConv", "name": "project", "inputs": ["h.b", "w2", "", "z"],
              "outputs": ["y"], "attrs": {"layout": "NCHW", "input_layout": "NCHWc", "lanes": 4}}]
    return write_case("conv_layout_change", "FusedConv", [("x", x), ("z", z)],
                      [("w1", w1), ("b1", b1), ("w2", w2)], nodes, y)


def chain_case():
    """MobileNet-V2's pattern in raw ops, for select-layout to place (see the module doc)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 14, 14)).astype(np.float32)
    # name, weight shape, bias?, attrs, conv2d keywords
    layers = [("stem", (16, 3, 3), True, {"strides": [2, 2], "pads": [1] * 4},
               {"stride": 2, "pad": 1}),
              ("pw32", (32, 16, 1), False, {}, {}),
              ("dw32", (32, 1, 3), False, {"group": 32, "pads": [1] * 4},
               {"pad": 1, "group": 32}),
              ("pw24", (24, 32, 1), True, {}, {}),
              ("dw24", (24, 1, 3), False, {"group": 24, "strides": [2, 2], "pads": [1] * 4},
               {"stride": 2, "pad": 1, "group": 24}),
              ("pw16", (16, 24, 1), False, {}, {})]
    params = [("lo", np.zeros(1, np.float32)), ("hi", np.full(1, 6, np.float32))]
    nodes, prev, h = [], "x", x
    for i, (name, (m, cg, k), has_bias, attrs, kw) in enumerate(layers):
        w, b = weights(rng, m, cg, k), vector(rng, m) if has_bias else None
        params += [("w" + name, w)] + ([("b" + name, b)] if has_bias else [])
        h = conv(h, w, b, **kw)
        ins = [prev, "w" + name] + (["b" + name] if has_bias else [])
        last = i == len(layers) - 1
        nodes.append({"op": "Conv", "name": name, "inputs": ins,
                      "outputs": ["y" if last else f"c{i}"], "attrs": attrs})
        if not last:
            h = relu6(h)
            nodes.append({"op": "Clip", "name": name + "_relu6",
                          "inputs": [f"c{i}", "lo", "hi"], "outputs": [f"r{i}"]})
            prev = f"r{i}"
    return write_case("dw_chain_mobilenet", "FusedConv", [("x", x)], params, nodes, h)


def main():
    lines = [
        depthwise_case("dw_nchwc_s1_relu6", (1, 32, 5, 13), 1, 16, False, RELU6, seed=1),
        depthwise_case("dw_nchwc_s2_lanes8_residual", (2, 24, 7, 9), 2, 8, True,
                       {"activation": "Relu"}, seed=2),
        layout_change_case(),
        chain_case(),
    ]
    path = os.path.join(repo_root(), "tests", "goldens", "ops", "cases-depthwise.txt")
    with open(path, "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

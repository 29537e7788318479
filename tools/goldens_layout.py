#!/usr/bin/python3
"""Golden cases of the channel-blocked layout (the select-layout pass): Reorder both ways, and
FusedConv with layout "NCHWc" between Reorders, against PyTorch's conv2d (+ residual, ReLU):
tests/goldens/ops/cases-layout.txt and its case directories. tests/test_ops.c holds the
interpreter to these references and the generated code to the interpreter.

    /usr/bin/python3 tools/goldens_layout.py

The convolution cases cover what the blocked kernel must get right: padding (the padded copy is
NCHWc too), strided 1x1 convs (x read at the stride in place, strides 2 and 3; with padding, the
padded copy), an unpadded 1x1 conv (x read in place), the residual read in the output's layout,
4 and 8 lanes (generic and AVX2 widths) as well as 16; and MaxPool on NCHWc (padding,
ceil_mode, 4 and 16 lanes).
"""
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import f32_values, repo_root, save_npy, write_model, write_op_case  # noqa: E402

DOC = "tools/goldens_layout.py"


def blocked(a, lanes):  # (N, C, H, W) -> (N, C / L, H, W, L)
    n, c, h, w = a.shape
    return a.reshape(n, c // lanes, lanes, h, w).transpose(0, 1, 3, 4, 2).copy()


def reorder_cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 3, 5)).astype(np.float32)
    lines = [write_op_case("layout_reorder_to_blocked", "Reorder", [("x", x)],
                           {"layout": "NCHWc", "lanes": 8}, [("y", blocked(x, 8))], DOC)]
    xb = rng.standard_normal((1, 3, 4, 2, 4)).astype(np.float32)
    planar = xb.transpose(0, 1, 4, 2, 3).reshape(1, 12, 4, 2)
    lines.append(write_op_case("layout_reorder_to_planar", "Reorder", [("x", xb)],
                               {"layout": "NCHW", "lanes": 4}, [("y", planar)], DOC))
    return lines


def param(name, a):
    return {"name": name, "dtype": "f32", "shape": list(a.shape),
            "init": {"kind": "values", "values": f32_values(a)}}


def conv_case(name, x_shape, m, k, stride=1, pad=0, lanes=16, residual=True, relu=True, seed=0,
              doc=DOC, algo=None):
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    y = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                   torch.tensor(w, dtype=torch.float64),
                                   torch.tensor(b, dtype=torch.float64), stride=stride,
                                   padding=pad).numpy()
    z = rng.standard_normal(y.shape).astype(np.float32) if residual else None
    if residual:
        y = y + z
    if relu:
        y = np.maximum(y, 0)
    d = os.path.join(repo_root(), "tests", "goldens", "ops", name)
    shutil.rmtree(d, ignore_errors=True)
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4,
             "layout": "NCHWc", "lanes": lanes}
    if relu:
        attrs["activation"] = "Relu"
    if algo:
        attrs["algo"] = algo
    ins = ["x.b", "w", "b"] + (["z.b"] if residual else [])
    nodes = [{"op": "Reorder", "name": "to_x", "inputs": ["x"], "outputs": ["x.b"],
              "attrs": {"layout": "NCHWc", "lanes": lanes}}]
    if residual:
        nodes.append({"op": "Reorder", "name": "to_z", "inputs": ["z"], "outputs": ["z.b"],
                      "attrs": {"layout": "NCHWc", "lanes": lanes}})
    nodes += [{"op": "FusedConv", "name": "conv", "inputs": ins, "outputs": ["y.b"],
               "attrs": attrs},
              {"op": "Reorder", "name": "to_y", "inputs": ["y.b"], "outputs": ["y"],
               "attrs": {"layout": "NCHW", "lanes": lanes}}]
    inputs = [("x", x)] + ([("z", z)] if residual else [])
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name, "doc": doc,
             "inputs": [{"name": k_, "dtype": "f32", "shape": list(v.shape)} for k_, v in inputs],
             "outputs": [{"name": "y", "dtype": "f32", "shape": list(y.shape)}],
             "params": [param("w", w), param("b", b)], "nodes": nodes}
    write_model(os.path.join(d, "model.json"), model)
    for k_, v in inputs + [("y", y)]:
        save_npy(os.path.join(d, k_ + ".npy"), np.asarray(v, dtype=np.float32))
    return f"{name} FusedConv\n"


def maxpool_case(name, x_shape, k, stride, pad, lanes, ceil_mode=0, seed=0):
    """MaxPool with layout "NCHWc" between Reorders (the select-layout pass puts a stem's MaxPool
    there), against PyTorch's max_pool2d."""
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    y = torch.nn.functional.max_pool2d(torch.tensor(x), k, stride, pad,
                                       ceil_mode=bool(ceil_mode)).numpy()
    d = os.path.join(repo_root(), "tests", "goldens", "ops", name)
    shutil.rmtree(d, ignore_errors=True)
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4,
             "ceil_mode": ceil_mode, "layout": "NCHWc", "lanes": lanes}
    nodes = [{"op": "Reorder", "name": "to_x", "inputs": ["x"], "outputs": ["x.b"],
              "attrs": {"layout": "NCHWc", "lanes": lanes}},
             {"op": "MaxPool", "name": "pool", "inputs": ["x.b"], "outputs": ["y.b"],
              "attrs": attrs},
             {"op": "Reorder", "name": "to_y", "inputs": ["y.b"], "outputs": ["y"],
              "attrs": {"layout": "NCHW", "lanes": lanes}}]
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name, "doc": DOC,
             "inputs": [{"name": "x", "dtype": "f32", "shape": list(x.shape)}],
             "outputs": [{"name": "y", "dtype": "f32", "shape": list(y.shape)}],
             "params": [], "nodes": nodes}
    write_model(os.path.join(d, "model.json"), model)
    save_npy(os.path.join(d, "x.npy"), x)
    save_npy(os.path.join(d, "y.npy"), y)
    return f"{name} MaxPool\n"


def main():
    lines = reorder_cases()
    lines += [
        conv_case("layout_conv3x3_pad_residual", (1, 16, 9, 7), 32, 3, pad=1),
        conv_case("layout_conv3x3_stride2_lanes8", (2, 16, 9, 9), 16, 3, stride=2, pad=1,
                  lanes=8, residual=False),
        conv_case("layout_conv1x1_in_place", (1, 32, 5, 6), 16, 1, residual=True, relu=False),
        conv_case("layout_conv1x1_stride2_lanes4", (1, 8, 7, 7), 12, 1, stride=2, lanes=4,
                  residual=False, relu=True),
        # strided 1x1 convs read the NCHWc x at the stride in place (4 x 6 tiles and a tail of
        # 2 over 26 columns; stride 3 with a batch of 2), or its padded copy
        conv_case("layout_conv1x1_stride2_wide", (1, 32, 5, 51), 64, 1, stride=2, seed=2),
        conv_case("layout_conv1x1_stride3_lanes8", (2, 16, 10, 11), 24, 1, stride=3, lanes=8,
                  seed=3),
        conv_case("layout_conv1x1_stride2_pad1", (1, 16, 9, 8), 32, 1, stride=2, pad=1,
                  residual=False, seed=4),
        maxpool_case("layout_maxpool3x3_stride2_pad1", (1, 32, 11, 9), 3, 2, 1, lanes=16),
        maxpool_case("layout_maxpool3x3_ceil_lanes4", (2, 8, 8, 7), 3, 2, 0, lanes=4,
                     ceil_mode=1, seed=1),
    ]
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-layout.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

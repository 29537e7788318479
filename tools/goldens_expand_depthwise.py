#!/usr/bin/python3
"""Golden cases of FusedExpandDepthwise (an inverted-bottleneck block's 1x1 expansion and depthwise
conv in one kernel, compiler/ops/nn/expand_depthwise.c) against PyTorch's conv2d (float64):
tests/goldens/ops/cases-expand-depthwise.txt and its case directories. tests/test_ops.c holds the
interpreter to these references and the generated code (both backends) to the interpreter.

    /usr/bin/python3 tools/goldens_expand_depthwise.py

- expand_dw_s1_planar_x: x planar (8 channels), expansion to 32 channels (16 lanes) with ReLU6,
  depthwise 3x3 stride 1 pad 1 with ReLU6; 30 x 11 maps: two bands of 15 output rows (the halo
  rows computed twice), an expansion tile of 11 columns and depthwise tiles 8 + 3.
- expand_dw_s2_nchwc_residual: batch 2, x NCHWc (16 channels in 8 lanes), expansion to 24
  channels with Relu, depthwise stride 2 without activation; 58 x 7 -> 29 x 4 output rows, so two
  bands of 15 and 14 rows; then the block's projection (1x1 NCHWc -> planar) with a residual.
- expand_dw_5x3_s2x1: 3 planar channels to 8 (4 lanes), a 5x3 depthwise kernel, strides (2, 1),
  pads (2, 1, 2, 1), no activations: a ring of 5 rows, the first and last rows all padding.
Tiny shapes: the test suite builds every case twice (C and LLVM backends).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_depthwise  # noqa: E402
from goldens_depthwise import conv, relu6, reorder, vector, weights, write_case  # noqa: E402

DOC = "tools/goldens_expand_depthwise.py"
goldens_depthwise.DOC = DOC  # the "doc" of the models write_case writes
ACTS = {"Clip": ({"activation": "Clip", "activation_params": [0.0, 6.0]}, relu6),
        "Relu": ({"activation": "Relu"}, lambda a: np.maximum(a, 0.0)),
        None: ({}, lambda a: a)}


def prefixed(attrs, prefix):
    return {prefix + k: v for k, v in attrs.items()}


def block(rng, x, m, k, stride, pad, lanes, expand_act, act):
    """The fused node's attrs, its params and its planar output."""
    c = x.shape[1]
    we, be = weights(rng, m, c, 1), vector(rng, m)
    wd = (rng.standard_normal((m, 1) + k) / np.sqrt(k[0] * k[1])).astype(np.float32)
    bd = vector(rng, m)
    e = ACTS[expand_act][1](conv(x, we, be))
    y = ACTS[act][1](conv(e, wd, bd, stride=stride, pad=pad, group=m))
    attrs = dict(ACTS[act][0], **prefixed(ACTS[expand_act][0], "expand_"),
                 kernel_shape=list(k), strides=list(stride), group=m, lanes=lanes,
                 pads=[pad[0], pad[1], pad[0], pad[1]], layout="NCHWc")
    params = [("we", we), ("be", be), ("wd", wd), ("bd", bd)]
    return attrs, params, y


def fused(attrs, x_name, input_layout):
    return {"op": "FusedExpandDepthwise", "name": "block", "outputs": ["y.b"],
            "inputs": [x_name, "we", "be", "wd", "bd"],
            "attrs": dict(attrs, input_layout=input_layout)}


def planar_case():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 8, 30, 11)).astype(np.float32)
    attrs, params, y = block(rng, x, 32, (3, 3), (1, 1), (1, 1), 16, "Clip", "Clip")
    nodes = [fused(attrs, "x", "NCHW"), reorder("to_y", "y.b", "y", "NCHW", 16)]
    return write_case("expand_dw_s1_planar_x", "FusedExpandDepthwise", [("x", x)], params, nodes,
                      y)


def residual_case():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 16, 58, 7)).astype(np.float32)
    attrs, params, h = block(rng, x, 24, (3, 3), (2, 2), (1, 1), 8, "Relu", None)
    wp = weights(rng, 16, 24, 1)
    z = rng.standard_normal((2, 16) + h.shape[2:]).astype(np.float32)
    y = conv(h, wp) + z
    project = {"op": "FusedConv", "name": "project", "inputs": ["y.b", "wp", "", "z"],
               "outputs": ["y"], "attrs": {"layout": "NCHW", "input_layout": "NCHWc", "lanes": 8}}
    nodes = [reorder("to_x", "x", "x.b", "NCHWc", 8), fused(attrs, "x.b", "NCHWc"), project]
    return write_case("expand_dw_s2_nchwc_residual", "FusedExpandDepthwise",
                      [("x", x), ("z", z)], params + [("wp", wp)], nodes, y)


def odd_kernel_case():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 3, 9, 6)).astype(np.float32)
    attrs, params, y = block(rng, x, 8, (5, 3), (2, 1), (2, 1), 4, None, None)
    nodes = [fused(attrs, "x", "NCHW"), reorder("to_y", "y.b", "y", "NCHW", 4)]
    return write_case("expand_dw_5x3_s2x1", "FusedExpandDepthwise", [("x", x)], params, nodes, y)


def main():
    lines = [planar_case(), residual_case(), odd_kernel_case()]
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "goldens", "ops", "cases-expand-depthwise.txt")
    with open(path, "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

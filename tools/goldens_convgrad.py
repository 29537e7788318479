#!/usr/bin/python3
"""Golden cases of Conv's two backward kernels, ConvGradInput and ConvGradFilter
(compiler/ops/train/conv_grad.c), from PyTorch's own conv2d_input / conv2d_weight
(torch.nn.grad): tests/goldens/ops/cases-convgrad.txt and its case directories. tests/test_ops.c
holds the interpreter to PyTorch and the generated code of both backends to the interpreter.

    /usr/bin/python3 tools/goldens_convgrad.py

The cases cover what the row-by-row lowering must get right: strides, dilations, uneven pads,
groups, a kernel wider than part of the input, batch > 1.
"""
import os
import sys

import numpy as np
import torch
from torch.nn import grad as nngrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import repo_root, write_op_case  # noqa: E402

DOC = "tools/goldens_convgrad.py"


def case(name, x_shape, w_shape, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), group=1,
         seed=0, filter=True, input=True):
    """pads: (top, left, bottom, right) as ONNX; PyTorch takes symmetric padding, so uneven pads
    pad x explicitly first (and crop dx after). filter=False: the ConvGradInput case only;
    input=False: the ConvGradFilter case only."""
    rng = np.random.default_rng(seed)
    # Training-like magnitudes: x ~ N(0, 1), weights at PyTorch's default scale (std
    # 1/sqrt(fan_in)), gradients dy ~ N(0, 0.1^2). The reference is computed in float64 from the
    # float32 inputs, so its own rounding error is one f32 rounding.
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
    x64, w64 = torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
    xp = torch.nn.functional.pad(x64, (pads[1], pads[3], pads[0], pads[2]))
    y = torch.nn.functional.conv2d(xp, w64, stride=stride, dilation=dilation, groups=group)
    dy = (0.1 * rng.standard_normal(tuple(y.shape))).astype(np.float32)
    dy64 = torch.tensor(dy, dtype=torch.float64)
    dxp = nngrad.conv2d_input(tuple(xp.shape), w64, dy64, stride=stride, dilation=dilation,
                              groups=group)
    H, W = x_shape[2], x_shape[3]
    dx = dxp[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + W]
    dw = nngrad.conv2d_weight(xp, tuple(w_shape), dy64, stride=stride, dilation=dilation,
                              groups=group)
    attrs = {"kernel_shape": list(w_shape[2:]), "strides": list(stride), "pads": list(pads),
             "dilations": list(dilation), "group": group}
    lines = ""
    if input:
        lines += write_op_case(name + "_input", "ConvGradInput", [("dy", dy), ("w", w)],
                               dict(attrs, input_shape=list(x_shape)), [("dx", dx.numpy())], DOC)
    if filter:
        lines += write_op_case(name + "_filter", "ConvGradFilter", [("x", x), ("dy", dy)], attrs,
                               [("dw", dw.numpy())], DOC)
    return lines


def main():
    lines = case("convgrad_plain", (2, 3, 9, 11), (4, 3, 3, 3), seed=1)
    lines += case("convgrad_stride2_pads", (2, 2, 10, 9), (3, 2, 3, 3), stride=(2, 2),
                  pads=(1, 1, 1, 1), seed=2)
    lines += case("convgrad_uneven_dilated_groups", (1, 4, 9, 12), (6, 2, 3, 2), stride=(2, 3),
                  pads=(1, 0, 2, 1), dilation=(1, 2), group=2, seed=3)
    lines += case("convgrad_5x5_lenet", (3, 6, 14, 14), (16, 6, 5, 5), seed=4)
    lines += case("convgrad_kernel_over_edges", (1, 1, 4, 5), (2, 1, 3, 5), pads=(2, 2, 2, 2),
                  seed=5)
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-convgrad.txt"), "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Golden cases of MaxPoolGrad (compiler/ops/train/pool_grad.c) and ReluGrad (relu_grad.c), from PyTorch:
tests/goldens/ops/cases-poolgrad.txt and its case directories. tests/test_ops.c holds the
interpreter to PyTorch and the generated code of both backends to the interpreter.

    /usr/bin/python3 tools/goldens_pool_grad.py

dx = the gradient of F.max_pool2d(x) for upstream dy, by autograd in float64: each window's dy
goes to the window's first maximal element (PyTorch's index rule, the op's tie rule). The cases
cover the lowering's three column ranges (windows clipped by the left pad, windows inside x,
windows clipped by the right pad or ceil_mode), ties between overlapping windows, dilation and
rectangular windows. ReluGrad's dx is autograd's through F.relu at x (0 where x <= 0), from y =
relu(x) with zeros in x. dy is of a gradient's size (0.1 x normal): an element that takes up to 9
windows' dy sums them in float32, within the op's tolerance (1e-7 + 4e-7 relative) at that size.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import repo_root, write_op_case  # noqa: E402

DOC = "tools/goldens_pool_grad.py"


def case(name, x, kernel, stride, pad, dilation=(1, 1), ceil=False, seed=0):
    rng = np.random.default_rng(seed)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = F.max_pool2d(xt, kernel, stride, pad, dilation, ceil_mode=ceil)
    dy = (0.1 * rng.standard_normal(tuple(y.shape))).astype(np.float32)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    attrs = {"kernel_shape": list(kernel), "strides": list(stride),
             "pads": [pad[0], pad[1], pad[0], pad[1]], "dilations": list(dilation),
             "ceil_mode": int(ceil)}
    return write_op_case(name, "MaxPoolGrad", [("x", x), ("dy", dy)], attrs,
                         [("dx", xt.grad.numpy())], DOC)


def relu_case(name, x, seed):
    rng = np.random.default_rng(seed)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = F.relu(xt)
    dy = (0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return write_op_case(name, "ReluGrad", [("y", y.detach().numpy()), ("dy", dy)], {},
                         [("dx", xt.grad.numpy())], DOC)


def main():
    rng = np.random.default_rng(1)
    normal = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    # ResNet's stem pool: 3x3 stride 2 pad 1; W = 11: the last window reaches past the right edge
    lines = case("mpg_3x3_s2_p1", normal(2, 3, 9, 11), (3, 3), (2, 2), (1, 1), seed=2)
    # ties everywhere (values on a coarse grid), overlapping windows sharing their maximum
    ties = (np.round(2 * rng.standard_normal((1, 2, 6, 19))) / 2).astype(np.float32)
    lines += case("mpg_ties_3x3_s1_p1", ties, (3, 3), (1, 1), (1, 1), seed=3)
    # dilation 2 along W, rectangular window, strides (2, 1), ceil_mode: clipped last row
    lines += case("mpg_dil_rect_ceil", normal(1, 2, 8, 13), (2, 3), (2, 1), (1, 1),
                  dilation=(1, 2), ceil=True, seed=4)
    # no column whose window lies inside x (W = 2 < kernel): every column clamped
    lines += case("mpg_narrow", normal(2, 1, 5, 2), (3, 3), (1, 1), (1, 1), seed=5)
    # ReluGrad: x with exact zeros (ReLU'(0) = 0), 3 x 37 elements (not a multiple of a vector)
    x = normal(3, 37)
    x[:, ::5] = 0
    lines += relu_case("relugrad_zeros", x, seed=6)
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-poolgrad.txt"),
              "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()

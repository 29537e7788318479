#!/usr/bin/python3
"""Golden cases of the fuse-epilogue pass's FusedGemm (Gemm, then an elementwise activation
applied to each sum before it is stored), against PyTorch in float64:
tests/goldens/ops/cases-epilogue.txt and its case directories. tests/test_ops.c holds the
interpreter to these references and the generated code to the interpreter.

    /usr/bin/python3 tools/goldens_epilogue.py

The cases cover both lowerings of Gemm (transB = 1: a dot product per output, the activation in
the store; transB = 0: rows accumulated in column tiles, the activation over each finished tile,
with N = 300 cut into two tiles of 150), transA, alpha and beta, and C broadcast from a row, a
column or a full matrix.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import repo_root, write_op_case  # noqa: E402

DOC = "tools/goldens_epilogue.py"
ACTIVATIONS = {"Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid}


def gemm_case(name, activation, m, k, n, c_shape, trans_a=0, trans_b=0, alpha=1.0, beta=1.0,
              seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) / np.sqrt(k)).astype(np.float32)
    c = rng.standard_normal(c_shape).astype(np.float32) if c_shape else None
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    y = alpha * ((ta.T if trans_a else ta) @ (tb.T if trans_b else tb))
    if c is not None:
        y = y + beta * torch.tensor(c, dtype=torch.float64)
    y = ACTIVATIONS[activation](y).numpy()
    attrs = {"activation": activation, "transA": trans_a, "transB": trans_b}
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    inputs = [("a", a), ("b", b)] + ([("c", c)] if c is not None else [])
    return write_op_case(name, "FusedGemm", inputs, attrs, [("y", y)], DOC)


def main():
    lines = [
        gemm_case("epilogue_gemm_dot_tanh", "Tanh", 3, 37, 19, (19,), trans_b=1),
        gemm_case("epilogue_gemm_rows_relu", "Relu", 2, 20, 300, (1, 300), seed=1),
        gemm_case("epilogue_gemm_transa_sigmoid", "Sigmoid", 5, 8, 7, (5, 7), trans_a=1,
                  alpha=0.5, beta=2.0, seed=2),
        gemm_case("epilogue_gemm_column_bias_relu", "Relu", 4, 9, 6, (4, 1), trans_b=1, seed=3),
        gemm_case("epilogue_gemm_no_bias_tanh", "Tanh", 1, 64, 33, None, seed=4),
    ]
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-epilogue.txt"),
              "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

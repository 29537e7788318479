#!/usr/bin/python3
"""Golden cases of Gemm's kernels, against PyTorch in float64: the fuse-epilogue pass's FusedGemm
(Gemm, then an elementwise activation applied to each finished block of outputs) and the sparse
kernel of a constant, mostly zero B (a pruned layer): tests/goldens/ops/cases-gemm.txt and its
case directories. tests/test_ops.c holds the interpreter to these references and the generated
code to the interpreter.

    /usr/bin/python3 tools/goldens_gemm.py

The cases cover both lowerings of Gemm (transB = 1: a dot product per output, the activation in
the store; transB = 0: rows accumulated in column tiles, the activation over each finished tile,
with N = 300 cut into two tiles of 150), transA, alpha and beta, and C broadcast from a row, a
column or a full matrix. The sparse cases (B a param, at least 3/4 zeros, M <= 4) cover both
transB, transA, an all-zero column of B' (an empty run), alpha and beta, an activation.
"""
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import f32_values, repo_root, save_npy, write_model, write_op_case  # noqa: E402

DOC = "tools/goldens_gemm.py"
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


def sparse_case(name, m, k, n, zeros, trans_a=0, trans_b=0, alpha=1.0, beta=1.0, bias=True,
                activation=None, seed=0):
    """Gemm (or FusedGemm) with B a param of which the fraction `zeros` is 0; column 0 of B' all 0."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    bt = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)  # B' (K, N)
    bt.flat[rng.permutation(k * n)[:int(zeros * k * n)]] = 0
    bt[:, 0] = 0
    b = bt.T.copy() if trans_b else bt
    c = rng.standard_normal((n,)).astype(np.float32)
    y = alpha * (torch.tensor(a.T if trans_a else a, dtype=torch.float64) @
                 torch.tensor(bt, dtype=torch.float64))
    if bias:
        y = y + beta * torch.tensor(c, dtype=torch.float64)
    if activation:
        y = ACTIVATIONS[activation](y)
    op = "FusedGemm" if activation else "Gemm"
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
    if activation:
        attrs["activation"] = activation
    params = [{"name": "b", "dtype": "f32", "shape": list(b.shape),
               "init": {"kind": "values", "values": f32_values(b)}}]
    if bias:
        params.append({"name": "c", "dtype": "f32", "shape": [n],
                       "init": {"kind": "values", "values": f32_values(c)}})
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name, "doc": DOC,
             "inputs": [{"name": "a", "dtype": "f32", "shape": list(a.shape)}],
             "outputs": [{"name": "y", "dtype": "f32", "shape": [m, n]}], "params": params,
             "nodes": [{"op": op, "name": "n", "inputs": ["a", "b"] + (["c"] if bias else []),
                        "outputs": ["y"], "attrs": attrs}]}
    d = os.path.join(repo_root(), "tests", "goldens", "ops", name)
    shutil.rmtree(d, ignore_errors=True)
    write_model(os.path.join(d, "model.json"), model)
    save_npy(os.path.join(d, "a.npy"), a)
    save_npy(os.path.join(d, "y.npy"), y.numpy().astype(np.float32))
    return f"{name} {op}\n"


def main():
    lines = [
        gemm_case("gemm_epilogue_dot_tanh", "Tanh", 3, 37, 19, (19,), trans_b=1),
        gemm_case("gemm_epilogue_rows_relu", "Relu", 2, 20, 300, (1, 300), seed=1),
        gemm_case("gemm_epilogue_transa_sigmoid", "Sigmoid", 5, 8, 7, (5, 7), trans_a=1,
                  alpha=0.5, beta=2.0, seed=2),
        gemm_case("gemm_epilogue_column_bias_relu", "Relu", 4, 9, 6, (4, 1), trans_b=1, seed=3),
        gemm_case("gemm_epilogue_no_bias_tanh", "Tanh", 1, 64, 33, None, seed=4),
        sparse_case("gemm_sparse_dot", 1, 50, 37, 0.8, trans_b=1, seed=5),
        sparse_case("gemm_sparse_rows_transa_relu", 3, 20, 40, 0.9, trans_a=1, activation="Relu",
                    seed=6),
        sparse_case("gemm_sparse_alpha_beta_no_bias", 4, 33, 9, 0.75, trans_b=1, alpha=0.5,
                    bias=False, seed=7),
        sparse_case("gemm_sparse_beta_sigmoid", 2, 64, 24, 0.85, beta=2.0, activation="Sigmoid",
                    seed=8),
    ]
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-gemm.txt"),
              "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes the MLP and XOR samples and their goldens.

    samples/mlp.json, samples/mlp.safetensors   784-512-256-10 ReLU MLP, untrained nn.Linear init
                                                (torch.manual_seed(0)); Gemm with transB=1
    tests/goldens/mlp/x.npy (4,784), y.npy (4,10)
    samples/xor_mlp.json                        the XOR example of docs/model-format.md
    tests/goldens/xor_mlp/x.npy (4,2), y.npy (4,1)

Run: /usr/bin/python3 tools/make_mlp.py
"""

import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

MLP_DIMS = [784, 512, 256, 10]


def make_mlp(root):
    torch.manual_seed(0)
    layers = [nn.Linear(a, b) for a, b in zip(MLP_DIMS[:-1], MLP_DIMS[1:])]
    tensors = {}
    for i, lin in enumerate(layers, 1):
        tensors[f"fc{i}.weight"] = lin.weight.detach().float().contiguous()
        tensors[f"fc{i}.bias"] = lin.bias.detach().float().contiguous()
    kiln_io.write_safetensors(os.path.join(root, "samples", "mlp.safetensors"), tensors)

    params = [{"name": n, "dtype": "f32", "shape": list(t.shape)} for n, t in tensors.items()]
    nodes = []
    cur = "x"
    for i in range(1, len(layers) + 1):
        last = i == len(layers)
        out = "y" if last else f"h{i}"
        nodes.append({"op": "Gemm", "name": f"fc{i}", "inputs": [cur, f"fc{i}.weight", f"fc{i}.bias"],
                      "outputs": [out], "attrs": {"transB": 1}})
        if not last:
            nodes.append({"op": "Relu", "name": f"relu{i}", "inputs": [out], "outputs": [f"a{i}"]})
            cur = f"a{i}"
    model = {
        "format": "kiln-model", "version": 1, "name": "mlp",
        "doc": "784-512-256-10 ReLU MLP, untrained PyTorch nn.Linear init (seed 0); tools/make_mlp.py",
        "weights": "mlp.safetensors",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 784]}],
        "outputs": [{"name": "y", "dtype": "f32", "shape": [1, 10]}],
        "params": params,
        "nodes": nodes,
    }
    kiln_io.write_model(os.path.join(root, "samples", "mlp.json"), model)

    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = x
        for i, lin in enumerate(layers):
            h = lin(h)
            if i + 1 < len(layers):
                h = torch.relu(h)
    gdir = os.path.join(root, "tests", "goldens", "mlp")
    kiln_io.save_npy(os.path.join(gdir, "x.npy"), x.float())
    kiln_io.save_npy(os.path.join(gdir, "y.npy"), h.float())


def make_xor(root):
    # Exactly the example of docs/model-format.md (Gemm without transB: w1 is (K=2, N=2)).
    # Hidden unit 0 is OR(x1, x2), unit 1 is AND(x1, x2); y = OR and not AND.
    w1 = [20, 20, 20, 20]
    b1 = [-10, -30]
    w2 = [20, -20]
    b2 = -10
    model = {
        "format": "kiln-model", "version": 1, "name": "xor_mlp",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [4, 2]}],
        "outputs": [{"name": "y"}],
        "params": [
            {"name": "w1", "dtype": "f32", "shape": [2, 2], "init": {"kind": "values", "values": w1}},
            {"name": "b1", "dtype": "f32", "shape": [2], "init": {"kind": "values", "values": b1}},
            {"name": "w2", "dtype": "f32", "shape": [2, 1], "init": {"kind": "values", "values": w2}},
            {"name": "b2", "dtype": "f32", "shape": [1], "init": {"kind": "constant", "value": b2}},
        ],
        "nodes": [
            {"op": "Gemm", "name": "fc1", "inputs": ["x", "w1", "b1"], "outputs": ["h"]},
            {"op": "Sigmoid", "inputs": ["h"], "outputs": ["hs"]},
            {"op": "Gemm", "name": "fc2", "inputs": ["hs", "w2", "b2"], "outputs": ["z"]},
            {"op": "Sigmoid", "inputs": ["z"], "outputs": ["y"]},
        ],
    }
    kiln_io.write_model(os.path.join(root, "samples", "xor_mlp.json"), model)

    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)
    W1 = torch.tensor(w1, dtype=torch.float32).reshape(2, 2)
    B1 = torch.tensor(b1, dtype=torch.float32)
    W2 = torch.tensor(w2, dtype=torch.float32).reshape(2, 1)
    B2 = torch.full((1,), b2, dtype=torch.float32)
    y = torch.sigmoid(torch.sigmoid(x @ W1 + B1) @ W2 + B2)
    gdir = os.path.join(root, "tests", "goldens", "xor_mlp")
    kiln_io.save_npy(os.path.join(gdir, "x.npy"), x)
    kiln_io.save_npy(os.path.join(gdir, "y.npy"), y)
    print("xor_mlp y =", [round(v, 4) for v in y.reshape(-1).tolist()])


def main():
    torch.set_num_threads(2)
    root = kiln_io.repo_root()
    make_mlp(root)
    make_xor(root)
    print("wrote samples/mlp.{json,safetensors}, samples/xor_mlp.json, tests/goldens/{mlp,xor_mlp}/")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Trains LeNet-5 (tanh + average pooling, Fashion-MNIST adaptation) and writes Kiln reference data.

Input: (N, 1, 28, 28) float32 = pixel / 255 (no mean/std normalisation).
Writes:
    samples/lenet5.json                 the Kiln model (written first; --json-only writes just it)
    samples/lenet5.safetensors          PyTorch-layout weights (Gemm uses transB=1)
    tests/goldens/lenet5/x.npy          (8, 1, 28, 28) first 8 test images
    tests/goldens/lenet5/logits.npy     (8, 10) PyTorch float32 logits
    tests/goldens/lenet5/labels.npy     (8,) int64 true labels
    tests/goldens/lenet5/README.md      the PyTorch test accuracy on all 10,000 test images

Run from anywhere: /usr/bin/python3 tools/train_lenet5.py [--epochs N] [--json-only]
Data: Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*-ubyte.gz).
"""

import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

DATA_DIRS = ["/usr/share/datasets/fashion-mnist", "/usr/share/dataset-fashion-mnist"]


def find_data_dir():
    for d in DATA_DIRS:
        if os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")):
            return d
    sys.exit("Fashion-MNIST not found; install dataset-fashion-mnist (dpkg -L dataset-fashion-mnist)")


def read_idx(path):
    """Reads a gzipped IDX file (big-endian header: magic, dims; u8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x00 0x00 0x08 (u8) ndim
        raise ValueError(f"{path}: not a u8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_split(d, prefix):
    images = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)  # (N,1,28,28)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2, 2)  # (N,6,14,14)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2, 2)  # (N,16,5,5)
        x = torch.flatten(x, 1)  # (N,400)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


WEIGHT_SHAPES = [
    ("conv1.weight", [6, 1, 5, 5]), ("conv1.bias", [6]),
    ("conv2.weight", [16, 6, 5, 5]), ("conv2.bias", [16]),
    ("fc1.weight", [120, 400]), ("fc1.bias", [120]),
    ("fc2.weight", [84, 120]), ("fc2.bias", [84]),
    ("fc3.weight", [10, 84]), ("fc3.bias", [10]),
]


def write_model_json(path):
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    model = {
        "format": "kiln-model", "version": 1, "name": "lenet5",
        "doc": "LeNet-5 (tanh, average pooling) trained on Fashion-MNIST by tools/train_lenet5.py; "
               "input = pixel/255, output = 10 logits",
        "weights": "lenet5.safetensors",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "f32", "shape": [1, 10]}],
        "params": [{"name": n, "dtype": "f32", "shape": s} for n, s in WEIGHT_SHAPES],
        "nodes": [
            {"op": "Conv", "name": "conv1", "inputs": ["x", "conv1.weight", "conv1.bias"], "outputs": ["c1"],
             "attrs": {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}},
            {"op": "Tanh", "name": "act1", "inputs": ["c1"], "outputs": ["a1"]},
            {"op": "AveragePool", "name": "pool1", "inputs": ["a1"], "outputs": ["p1"], "attrs": pool},
            {"op": "Conv", "name": "conv2", "inputs": ["p1", "conv2.weight", "conv2.bias"], "outputs": ["c2"],
             "attrs": {"kernel_shape": [5, 5]}},
            {"op": "Tanh", "name": "act2", "inputs": ["c2"], "outputs": ["a2"]},
            {"op": "AveragePool", "name": "pool2", "inputs": ["a2"], "outputs": ["p2"], "attrs": pool},
            {"op": "Flatten", "name": "flatten", "inputs": ["p2"], "outputs": ["f"], "attrs": {"axis": 1}},
            {"op": "Gemm", "name": "fc1", "inputs": ["f", "fc1.weight", "fc1.bias"], "outputs": ["h1"],
             "attrs": {"transB": 1}},
            {"op": "Tanh", "name": "act3", "inputs": ["h1"], "outputs": ["a3"]},
            {"op": "Gemm", "name": "fc2", "inputs": ["a3", "fc2.weight", "fc2.bias"], "outputs": ["h2"],
             "attrs": {"transB": 1}},
            {"op": "Tanh", "name": "act4", "inputs": ["h2"], "outputs": ["a4"]},
            {"op": "Gemm", "name": "fc3", "inputs": ["a4", "fc3.weight", "fc3.bias"], "outputs": ["logits"],
             "attrs": {"transB": 1}},
        ],
    }
    kiln_io.write_model(path, model)


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-only", action="store_true", help="write samples/lenet5.json and stop")
    args = ap.parse_args()
    root = kiln_io.repo_root()
    write_model_json(os.path.join(root, "samples", "lenet5.json"))
    if args.json_only:
        print("wrote samples/lenet5.json")
        return

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    d = find_data_dir()
    xtr, ytr = load_split(d, "train")
    xte, yte = load_split(d, "t10k")

    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}: train loss {total / len(xtr):.4f}  test acc {acc:.4f}  "
              f"({time.time() - t0:.0f} s)", flush=True)

    acc = evaluate(model, xte, yte)
    print(f"PyTorch test accuracy (10000 images): {acc:.4f}")
    if acc < 0.85:
        sys.exit(f"accuracy {acc:.4f} < 0.85: not writing outputs")

    sd = model.state_dict()
    for n, shape in WEIGHT_SHAPES:
        assert list(sd[n].shape) == shape, (n, sd[n].shape)
    kiln_io.write_safetensors(os.path.join(root, "samples", "lenet5.safetensors"),
                              {n: sd[n].float().contiguous() for n, _ in WEIGHT_SHAPES})

    gdir = os.path.join(root, "tests", "goldens", "lenet5")
    x = xte[:8].contiguous()
    model.eval()
    with torch.no_grad():
        logits = model(x)
    kiln_io.save_npy(os.path.join(gdir, "x.npy"), x)
    kiln_io.save_npy(os.path.join(gdir, "logits.npy"), logits.float())
    kiln_io.save_npy(os.path.join(gdir, "labels.npy"), yte[:8])
    with open(os.path.join(gdir, "README.md"), "w") as f:
        f.write(f"PyTorch test accuracy on all 10,000 Fashion-MNIST test images: {acc:.4f} "
                f"(tools/train_lenet5.py, {args.epochs} epochs, Adam lr 1e-3, batch 64, seed 0); "
                f"x.npy = test images 0-7 as pixel/255, logits.npy = PyTorch float32 logits, "
                f"labels.npy = their labels.\n")
    print(f"wrote samples/lenet5.safetensors and {os.path.relpath(gdir, root)}/")


if __name__ == "__main__":
    main()

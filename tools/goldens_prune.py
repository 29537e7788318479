#!/usr/bin/python3
"""Pruning goldens for tests/test_prune.c (`kiln prune`, docs/pruning.md).

    /usr/bin/python3 tools/goldens_prune.py        # tests/goldens/prune/{net,res}/

net: a small CNN, x (2, 2, 8, 8) -> conv1 (6 filters, 3x3, pad 1) -> bn1 -> Relu -> MaxPool 2
     -> conv2 (8 filters, 3x3) -> Tanh -> Flatten (8 x 2 x 2 = 32) -> fc1 (Gemm, 10) -> Relu
     -> fc2 (Gemm, 4: the output), seeded weights and BatchNorm statistics, with a training
     section (cross-entropy, Adam) for the fine-tuning test. Files:
  model.json, weights.safetensors, x.npy, labels.npy;
  masks.safetensors - PyTorch's torch.nn.utils.prune keep-masks (1 kept, 0 pruned) of the four
     weights under "<case>/<param>": case layerwise_0.5 (l1_unstructured, amount 0.5, per
     tensor), global_0.5 and global_0.8 (global_unstructured with L1Unstructured);
  kept.safetensors - structured filter pruning at 0.5, the filters kept (ascending i64 indices)
     of conv1, conv2 and fc1 (fc2's output is the graph output: it is not pruned). Layers are
     taken in order and each one's L1 norms are over the input channels the layer before kept
     (through the Flatten, fc1's columns c*4 .. c*4+3 for channel c); round(0.5 * M) of the
     filters of smallest L1 norm go;
  y_zeroed.npy - the original model (PyTorch, eval mode) on x with the removed filters zeroed:
     their weights and biases, and bn1's beta and running mean for conv1's channels, so that
     a removed channel is exactly 0 downstream; the pruned model must compute the same.
res: conv1 -> Relu -> conv2, Add(relu, conv2) (a residual), Flatten, fc (the output): no layer
     can lose filters (model.json with its weights in `init` values).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import f32_values, repo_root, save_npy, write_model, write_safetensors  # noqa: E402

OUT = os.path.join(repo_root(), "tests", "goldens", "prune")
PRUNABLE = ["conv1", "conv2", "fc1", "fc2"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.fc1 = nn.Linear(32, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x):
        h = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        h = torch.flatten(torch.tanh(self.conv2(h)), 1)
        return self.fc2(torch.relu(self.fc1(h)))


def make_net():
    torch.manual_seed(7)
    net = Net()
    with torch.no_grad():
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


def net_model():
    p = lambda name, shape, role=None: dict(  # noqa: E731
        {"name": name, "dtype": "f32", "shape": list(shape)}, **({"role": role} if role else {}))
    return {
        "format": "kiln-model", "version": 1, "name": "prune_net",
        "doc": "tools/goldens_prune.py: a small CNN for kiln prune's tests",
        "weights": "weights.safetensors",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [2, 2, 8, 8]}],
        "outputs": [{"name": "y", "dtype": "f32", "shape": [2, 4]}],
        "params": [
            p("conv1.weight", (6, 2, 3, 3)), p("conv1.bias", (6,)),
            p("bn1.weight", (6,)), p("bn1.bias", (6,)),
            p("bn1.running_mean", (6,), "buffer"), p("bn1.running_var", (6,), "buffer"),
            p("conv2.weight", (8, 6, 3, 3)), p("conv2.bias", (8,)),
            p("fc1.weight", (10, 32)), p("fc1.bias", (10,)),
            p("fc2.weight", (4, 10)), p("fc2.bias", (4,)),
        ],
        "nodes": [
            {"op": "Conv", "name": "conv1", "inputs": ["x", "conv1.weight", "conv1.bias"],
             "outputs": ["c1"], "attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}},
            {"op": "BatchNormalization", "name": "bn1",
             "inputs": ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"],
             "outputs": ["b1"], "attrs": {"epsilon": 1e-5}},
            {"op": "Relu", "name": "relu1", "inputs": ["b1"], "outputs": ["r1"]},
            {"op": "MaxPool", "name": "pool1", "inputs": ["r1"], "outputs": ["p1"],
             "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
            {"op": "Conv", "name": "conv2", "inputs": ["p1", "conv2.weight", "conv2.bias"],
             "outputs": ["c2"], "attrs": {"kernel_shape": [3, 3]}},
            {"op": "Tanh", "name": "tanh2", "inputs": ["c2"], "outputs": ["t2"]},
            {"op": "Flatten", "name": "flatten", "inputs": ["t2"], "outputs": ["f"],
             "attrs": {"axis": 1}},
            {"op": "Gemm", "name": "fc1", "inputs": ["f", "fc1.weight", "fc1.bias"],
             "outputs": ["h1"], "attrs": {"transB": 1}},
            {"op": "Relu", "name": "relu3", "inputs": ["h1"], "outputs": ["a3"]},
            {"op": "Gemm", "name": "fc2", "inputs": ["a3", "fc2.weight", "fc2.bias"],
             "outputs": ["y"], "attrs": {"transB": 1}},
        ],
        "training": {
            "batch_size": 2,
            "loss": {"kind": "cross_entropy", "output": "y",
                     "target": {"name": "label", "dtype": "i64"}},
            "optimizer": {"kind": "adam", "lr": 0.01},
        },
    }


def state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def unstructured_masks(make):
    """{case/param: keep-mask} from torch.nn.utils.prune."""
    out = {}
    net = make()
    for name in PRUNABLE:
        prune.l1_unstructured(getattr(net, name), "weight", amount=0.5)
        out[f"layerwise_0.5/{name}.weight"] = getattr(net, name).weight_mask
    for amount in (0.5, 0.8):
        net = make()
        prune.global_unstructured([(getattr(net, n), "weight") for n in PRUNABLE],
                                  pruning_method=prune.L1Unstructured, amount=amount)
        for name in PRUNABLE:
            out[f"global_{amount}/{name}.weight"] = getattr(net, name).weight_mask
    return {k: v.detach().float() for k, v in out.items()}


def kept_filters(w, drop):
    """Ascending indices of the filters (rows of w viewed as (M, -1)) kept: all but the `drop` of
    smallest L1 norm."""
    norms = w.reshape(w.shape[0], -1).abs().sum(1)
    order = sorted(range(w.shape[0]), key=lambda i: (float(norms[i]), i))
    return sorted(order[drop:])


def structured(net):
    """The filters kept by 0.5 filter pruning, layer by layer (greedy: each layer's norms over
    the inputs the layer before kept)."""
    w1, w2, f1 = net.conv1.weight, net.conv2.weight, net.fc1.weight
    k1 = kept_filters(w1, round(0.5 * 6))
    k2 = kept_filters(w2[:, k1], round(0.5 * 8))
    cols = [c * 4 + r for c in k2 for r in range(4)]
    k3 = kept_filters(f1[:, cols], round(0.5 * 10))
    return k1, k2, k3


def zeroed_output(net, x, kept):
    k1, k2, k3 = kept
    drop = lambda k, m: [i for i in range(m) if i not in k]  # noqa: E731
    with torch.no_grad():
        for i in drop(k1, 6):
            net.conv1.weight[i] = 0
            net.conv1.bias[i] = 0
            net.bn1.bias[i] = 0
            net.bn1.running_mean[i] = 0
        for i in drop(k2, 8):
            net.conv2.weight[i] = 0
            net.conv2.bias[i] = 0
        for i in drop(k3, 10):
            net.fc1.weight[i] = 0
            net.fc1.bias[i] = 0
        return net(x)


def write_net():
    d = os.path.join(OUT, "net")
    net = make_net()
    write_model(os.path.join(d, "model.json"), net_model())
    write_safetensors(os.path.join(d, "weights.safetensors"), state(net))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 2, 8, 8, generator=g)
    save_npy(os.path.join(d, "x.npy"), x.numpy().astype(np.float32))
    save_npy(os.path.join(d, "labels.npy"), np.array([1, 3], dtype=np.int64))
    write_safetensors(os.path.join(d, "masks.safetensors"), unstructured_masks(make_net))
    kept = structured(net)
    write_safetensors(os.path.join(d, "kept.safetensors"),
                      {n: np.array(k, dtype=np.int64) for n, k in zip(["conv1", "conv2", "fc1"], kept)})
    save_npy(os.path.join(d, "y_zeroed.npy"), zeroed_output(make_net(), x, kept).numpy())


def write_res():
    torch.manual_seed(3)
    c1, c2, fc = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Linear(8, 2)
    v = lambda name, t: {"name": name, "dtype": "f32", "shape": list(t.shape),  # noqa: E731
                         "init": {"kind": "values", "values": f32_values(t)}}
    model = {
        "format": "kiln-model", "version": 1, "name": "prune_res",
        "doc": "tools/goldens_prune.py: a residual block, nothing kiln prune can shrink",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 1, 2, 2]}],
        "outputs": [{"name": "y"}],
        "params": [v("c1.w", c1.weight), v("c1.b", c1.bias), v("c2.w", c2.weight),
                   v("c2.b", c2.bias), v("fc.w", fc.weight), v("fc.b", fc.bias)],
        "nodes": [
            {"op": "Conv", "name": "c1", "inputs": ["x", "c1.w", "c1.b"], "outputs": ["a"],
             "attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}},
            {"op": "Relu", "name": "r", "inputs": ["a"], "outputs": ["r"]},
            {"op": "Conv", "name": "c2", "inputs": ["r", "c2.w", "c2.b"], "outputs": ["b"],
             "attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}},
            {"op": "Add", "name": "residual", "inputs": ["r", "b"], "outputs": ["s"]},
            {"op": "Flatten", "name": "flatten", "inputs": ["s"], "outputs": ["f"]},
            {"op": "Gemm", "name": "fc", "inputs": ["f", "fc.w", "fc.b"], "outputs": ["y"],
             "attrs": {"transB": 1}},
        ],
    }
    write_model(os.path.join(OUT, "res", "model.json"), model)


if __name__ == "__main__":
    write_net()
    write_res()
    print(f"wrote {OUT}")

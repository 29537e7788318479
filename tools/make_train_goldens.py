#!/usr/bin/python3
"""Step-parity goldens for Kiln's training (docs/training.md), computed with PyTorch.

Each case is a small model with a `training` section. PyTorch trains the same model from the same
initial weights on the same batch for 5 steps; the script records the loss of each step (before
its update) and the params after the last one:

    tests/goldens/train/<case>/model.json        the model (weights inline as `values`)
    tests/goldens/train/<case>/x.npy, y.npy      the batch (inputs, targets or labels)
    tests/goldens/train/<case>/x2.npy            a second model input (two-input cases)
    tests/goldens/train/<case>/losses.npy        f64 (5,)
    tests/goldens/train/<case>/final.safetensors the trainable params after 5 steps
    tests/goldens/train/cases.txt                one case per line

Definitions are PyTorch 1.13's: torch.optim.SGD / Adam / AdamW / Adagrad, the losses of
torch.nn.functional, clip_grad_norm_, and the learning rate of step s (the number of updates done)
set on the optimizer before each step: lr * gamma^floor(s / step_size) (StepLR) or
min_lr + (lr - min_lr) (1 + cos(pi s / total_steps)) / 2 (CosineAnnealingLR's closed form).
Regularization adds l1 sum|w| + l2 sum w^2 over params of rank >= 2.
Training modes (docs/training.md): BatchNormalization uses batch statistics and updates its
running mean / variance (role "buffer", also in final.safetensors) with PyTorch's momentum
(ONNX momentum = 1 - PyTorch's) and unbiased running variance; the LSTM case computes ONNX's LSTM
equations (gates i, o, f, c) with torch ops, so autograd gives the gradient through time.

Run with Debian's python: /usr/bin/python3 tools/make_train_goldens.py
"""

import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

from kiln_io import f32_values, repo_root, save_npy, write_model, write_safetensors

STEPS = 5
OUT = os.path.join(repo_root(), "tests", "goldens", "train")


def param(name, shape, rng, scale=0.5):
    return name, (rng.standard_normal(shape) * scale).astype(np.float32)


# ---- Models: (kiln inputs, params, nodes, output name, torch forward) ----


def mlp(rng, n=8, out_act=None):
    params = dict([param("w1", (4, 6), rng), param("b1", (6,), rng, 0.1),
                   param("w2", (3, 6), rng), param("b2", (3,), rng, 0.1)])
    nodes = [
        {"op": "Gemm", "name": "fc1", "inputs": ["x", "w1", "b1"], "outputs": ["h"]},
        {"op": "Relu", "name": "act", "inputs": ["h"], "outputs": ["a"]},
        {"op": "Gemm", "name": "fc2", "inputs": ["a", "w2", "b2"], "outputs": ["z"],
         "attrs": {"transB": 1}},
    ]
    out = "z"
    if out_act == "softmax":
        nodes.append({"op": "Softmax", "name": "sm", "inputs": ["z"], "outputs": ["p"],
                      "attrs": {"axis": 1}})
        out = "p"

    def forward(p, x):
        z = F.linear(F.relu(x @ p["w1"] + p["b1"]), p["w2"], p["b2"])
        return torch.softmax(z, dim=1) if out_act == "softmax" else z

    return {"x_shape": (n, 4), "params": params, "nodes": nodes, "out": out, "forward": forward}


def cnn(rng, n=4):
    params = dict([param("c1w", (3, 1, 3, 3), rng), param("c1b", (3,), rng, 0.1),
                   param("c2w", (4, 3, 3, 3), rng, 0.3), param("c2b", (4,), rng, 0.1),
                   param("fw", (3, 4), rng), param("fb", (3,), rng, 0.1)])
    nodes = [
        {"op": "Conv", "name": "c1", "inputs": ["x", "c1w", "c1b"], "outputs": ["h1"],
         "attrs": {"pads": [1, 1, 1, 1]}},
        {"op": "Tanh", "name": "t1", "inputs": ["h1"], "outputs": ["a1"]},
        {"op": "MaxPool", "name": "p1", "inputs": ["a1"], "outputs": ["m1"],
         "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
        {"op": "Conv", "name": "c2", "inputs": ["m1", "c2w", "c2b"], "outputs": ["h2"],
         "attrs": {"strides": [1, 1]}},
        {"op": "Sigmoid", "name": "s2", "inputs": ["h2"], "outputs": ["a2"]},
        {"op": "AveragePool", "name": "p2", "inputs": ["a2"], "outputs": ["m2"],
         "attrs": {"kernel_shape": [2, 2], "strides": [2, 2]}},
        {"op": "Flatten", "name": "fl", "inputs": ["m2"], "outputs": ["f"], "attrs": {"axis": 1}},
        {"op": "Gemm", "name": "fc", "inputs": ["f", "fw", "fb"], "outputs": ["z"],
         "attrs": {"transB": 1}},
    ]

    def forward(p, x):
        h = F.max_pool2d(torch.tanh(F.conv2d(x, p["c1w"], p["c1b"], padding=1)), 2, 2)
        h = F.avg_pool2d(torch.sigmoid(F.conv2d(h, p["c2w"], p["c2b"])), 2, 2)
        return F.linear(h.flatten(1), p["fw"], p["fb"])

    return {"x_shape": (n, 1, 8, 8), "params": params, "nodes": nodes, "out": "z",
            "forward": forward}


def cnn_bn(rng, n=4):
    """Conv + BatchNormalization (training mode) + Relu + pooling + Gemm."""
    params = dict([param("cw", (3, 1, 3, 3), rng), param("cb", (3,), rng, 0.1),
                   ("bn_s", (1 + 0.2 * rng.standard_normal(3)).astype(np.float32)),
                   param("bn_b", (3,), rng, 0.1), param("fw", (3, 3), rng),
                   param("fb", (3,), rng, 0.1)])
    buffers = {"bn_m": (0.1 * rng.standard_normal(3)).astype(np.float32),
               "bn_v": (1 + 0.3 * rng.random(3)).astype(np.float32)}
    nodes = [
        {"op": "Conv", "name": "c", "inputs": ["x", "cw", "cb"], "outputs": ["h"],
         "attrs": {"pads": [1, 1, 1, 1], "strides": [2, 2]}},
        {"op": "BatchNormalization", "name": "bn",
         "inputs": ["h", "bn_s", "bn_b", "bn_m", "bn_v"], "outputs": ["hb"],
         "attrs": {"epsilon": 1e-5, "momentum": 0.9}},
        {"op": "Relu", "name": "r", "inputs": ["hb"], "outputs": ["a"]},
        {"op": "GlobalAveragePool", "name": "gap", "inputs": ["a"], "outputs": ["g"]},
        {"op": "Flatten", "name": "fl", "inputs": ["g"], "outputs": ["f"], "attrs": {"axis": 1}},
        {"op": "Gemm", "name": "fc", "inputs": ["f", "fw", "fb"], "outputs": ["z"],
         "attrs": {"transB": 1}},
    ]

    def forward(p, x, b):
        h = F.conv2d(x, p["cw"], p["cb"], stride=2, padding=1)
        h = F.batch_norm(h, b["bn_m"], b["bn_v"], p["bn_s"], p["bn_b"], training=True,
                         momentum=0.1, eps=1e-5)
        return F.linear(F.relu(h).mean((2, 3)), p["fw"], p["fb"])

    return {"x_shape": (n, 1, 6, 6), "params": params, "buffers": buffers, "nodes": nodes,
            "out": "z", "forward": forward}


def lstm(rng, n=3, T=4, I=3, H=4):
    """x (N, T, I) -> Transpose -> LSTM (ONNX layout) -> Y_h -> Gemm: logits (N, 3)."""
    params = dict([param("W", (1, 4 * H, I), rng), param("R", (1, 4 * H, H), rng),
                   param("B", (1, 8 * H), rng, 0.1), param("fw", (3, H), rng),
                   param("fb", (3,), rng, 0.1)])
    nodes = [
        {"op": "Transpose", "name": "tr", "inputs": ["x"], "outputs": ["xt"],
         "attrs": {"perm": [1, 0, 2]}},
        {"op": "LSTM", "name": "lstm", "inputs": ["xt", "W", "R", "B"],
         "outputs": ["Y", "Yh"], "attrs": {"hidden_size": H}},
        {"op": "Reshape", "name": "rs", "inputs": ["Yh", "hshape"], "outputs": ["h"]},
        {"op": "Gemm", "name": "fc", "inputs": ["h", "fw", "fb"], "outputs": ["z"],
         "attrs": {"transB": 1}},
    ]

    def forward(p, x):
        W, R, B = p["W"][0], p["R"][0], p["B"][0]
        h = torch.zeros(x.shape[0], H)
        c = torch.zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            g = x[:, t] @ W.T + h @ R.T + B[:4 * H] + B[4 * H:]
            i, o, f, cc = (g[:, k * H:(k + 1) * H] for k in range(4))
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cc)
            h = torch.sigmoid(o) * torch.tanh(c)
        return F.linear(h, p["fw"], p["fb"])

    return {"x_shape": (n, T, I), "params": params, "nodes": nodes, "out": "z",
            "forward": forward, "consts": {"hshape": np.array([-1, H], np.int64)}}


def two_inputs(rng, n=6):
    """A conditional model: Concat(x (N, 4), c (N, 3)) -> Gemm -> Tanh -> Gemm."""
    params = dict([param("w1", (7, 5), rng), param("b1", (5,), rng, 0.1),
                   param("w2", (5, 2), rng), param("b2", (2,), rng, 0.1)])
    nodes = [
        {"op": "Concat", "name": "cat", "inputs": ["x", "x2"], "outputs": ["xc"],
         "attrs": {"axis": 1}},
        {"op": "Gemm", "name": "fc1", "inputs": ["xc", "w1", "b1"], "outputs": ["h"]},
        {"op": "Tanh", "name": "act", "inputs": ["h"], "outputs": ["a"]},
        {"op": "Gemm", "name": "fc2", "inputs": ["a", "w2", "b2"], "outputs": ["z"]},
    ]

    def forward(p, x, x2):
        h = torch.tanh(torch.cat([x, x2], 1) @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    return {"x_shape": (n, 4), "x2_shape": (n, 3), "params": params, "nodes": nodes, "out": "z",
            "forward": forward}


def arith(rng, n=6):
    """MatMul, Sub, Mul, Div with broadcasting."""
    params = dict([param("w", (4, 3), rng), param("b", (3,), rng, 0.1), param("s", (1, 3), rng)])
    params["d"] = (1.0 + rng.random((n, 1))).astype(np.float32)
    nodes = [
        {"op": "MatMul", "name": "mm", "inputs": ["x", "w"], "outputs": ["m"]},
        {"op": "Sub", "name": "sub", "inputs": ["m", "b"], "outputs": ["u"]},
        {"op": "Mul", "name": "mul", "inputs": ["u", "s"], "outputs": ["v"]},
        {"op": "Div", "name": "div", "inputs": ["v", "d"], "outputs": ["z"]},
    ]

    def forward(p, x):
        return (x @ p["w"] - p["b"]) * p["s"] / p["d"]

    return {"x_shape": (n, 4), "params": params, "nodes": nodes, "out": "z", "forward": forward}


# ---- Losses ----


def torch_loss(spec, out, y):
    kind, red = spec["kind"], spec.get("reduction", "mean")
    if kind == "mse":
        return F.mse_loss(out, y, reduction=red)
    if kind == "mae":
        return F.l1_loss(out, y, reduction=red)
    if kind == "huber":
        return F.huber_loss(out, y, reduction=red, delta=spec.get("delta", 1.0))
    if kind == "bce":
        return F.binary_cross_entropy(out, y, reduction=red)
    if kind == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(out, y, reduction=red)
    if kind == "cross_entropy":
        return F.cross_entropy(out, y, reduction=red)
    if kind == "kl_div":
        return F.kl_div(out, y, reduction=red)
    if kind == "clipped_mse":
        e = torch.clamp((out - y) ** 2, max=spec["clip"])
        return e.mean() if red == "mean" else e.sum()
    raise ValueError(kind)


def make_targets(spec, shape, rng):
    kind = spec["kind"]
    if kind == "cross_entropy":
        return rng.integers(0, shape[1], size=(shape[0],)).astype(np.int64)
    if kind in ("bce", "bce_with_logits"):
        return rng.random(shape).astype(np.float32)
    if kind == "kl_div":
        p = rng.random(shape).astype(np.float32) + 0.1
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


# ---- Training ----


def lr_at(opt, sched, s):
    lr = opt["lr"]
    if not sched:
        return lr
    if sched["kind"] == "step":
        return lr * sched["gamma"] ** (s // sched["step_size"])
    lo = sched.get("min_lr", 0.0)
    return lo + (lr - lo) * (1 + math.cos(math.pi * s / sched["total_steps"])) / 2


def make_optimizer(opt, params):
    k = opt["kind"]
    if k == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt.get("momentum", 0),
                               dampening=opt.get("dampening", 0),
                               nesterov=opt.get("nesterov", False),
                               weight_decay=opt.get("weight_decay", 0))
    if k in ("adam", "adamw"):
        cls = torch.optim.Adam if k == "adam" else torch.optim.AdamW
        return cls(params, lr=opt["lr"], betas=(opt.get("beta1", 0.9), opt.get("beta2", 0.999)),
                   eps=opt.get("eps", 1e-8),
                   weight_decay=opt.get("weight_decay", 0 if k == "adam" else 0.01))
    return torch.optim.Adagrad(params, lr=opt["lr"], eps=opt.get("eps", 1e-10),
                               weight_decay=opt.get("weight_decay", 0),
                               initial_accumulator_value=opt.get("initial_accumulator_value", 0))


def call_forward(model, p, x, x2, buffers):
    if "buffers" in model:
        return model["forward"](p, x, buffers)
    if x2 is not None:
        return model["forward"](p, x, x2)
    return model["forward"](p, x)


def train(model, training, x, y, x2=None):
    frozen = set(training.get("frozen", []))
    p = {k: torch.tensor(v, requires_grad=k not in frozen) for k, v in model["params"].items()}
    buffers = {k: torch.tensor(v) for k, v in model.get("buffers", {}).items()}
    x2t = None if x2 is None else torch.tensor(x2)
    trainable = [p[k] for k in model["params"] if k not in frozen]
    opt = make_optimizer(training["optimizer"], trainable)
    reg = training.get("regularization", {})
    xt = torch.tensor(x)
    yt = torch.tensor(y)
    losses = []
    for s in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(training["optimizer"], training.get("lr_schedule"), s)
        opt.zero_grad()
        loss = torch_loss(training["loss"], call_forward(model, p, xt, x2t, buffers), yt)
        for k in model["params"]:
            if k not in frozen and p[k].dim() >= 2:
                loss = loss + reg.get("l1", 0) * p[k].abs().sum() + reg.get("l2", 0) * (p[k] ** 2).sum()
        losses.append(loss.item())
        loss.backward()
        if "clip_grad_norm" in training:
            torch.nn.utils.clip_grad_norm_(trainable, training["clip_grad_norm"])
        opt.step()
    final = {k: p[k].detach().numpy().copy() for k in model["params"] if k not in frozen}
    final.update({k: v.numpy().copy() for k, v in buffers.items()})
    return np.array(losses, np.float64), final


def write_case(name, model, training, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(model["x_shape"]).astype(np.float32)
    x2 = rng.standard_normal(model["x2_shape"]).astype(np.float32) if "x2_shape" in model else None
    with torch.no_grad():
        p0 = {k: torch.tensor(v) for k, v in model["params"].items()}
        b0 = {k: torch.tensor(v) for k, v in model.get("buffers", {}).items()}
        out_shape = tuple(call_forward(model, p0, torch.tensor(x),
                                       None if x2 is None else torch.tensor(x2), b0).shape)
    y = make_targets(training["loss"], out_shape, rng)
    losses, final = train(model, training, x, y, x2)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    target = {"name": "t", "dtype": "i64" if y.dtype == np.int64 else "f32"}
    training = dict(training)
    training["loss"] = dict(training["loss"], output=model["out"], target=target)
    training["batch_size"] = model["x_shape"][0]
    write_model(os.path.join(d, "model.json"), {
        "format": "kiln-model", "version": 1, "name": name,
        "doc": "step parity with PyTorch: tools/make_train_goldens.py",
        "inputs": [{"name": "x", "dtype": "f32", "shape": list(model["x_shape"])}] +
                  ([{"name": "x2", "dtype": "f32", "shape": list(model["x2_shape"])}]
                   if x2 is not None else []),
        "outputs": [{"name": model["out"]}],
        "params": [{"name": k, "dtype": "f32", "shape": list(v.shape),
                    "init": {"kind": "values", "values": f32_values(v)}}
                   for k, v in model["params"].items()] +
                  [{"name": k, "dtype": "f32", "shape": list(v.shape), "role": "buffer",
                    "init": {"kind": "values", "values": f32_values(v)}}
                   for k, v in model.get("buffers", {}).items()] +
                  [{"name": k, "dtype": "i64", "shape": list(v.shape), "role": "constant",
                    "init": {"kind": "values", "values": [int(e) for e in v]}}
                   for k, v in model.get("consts", {}).items()],
        "nodes": model["nodes"],
        "training": training,
    })
    save_npy(os.path.join(d, "x.npy"), x)
    save_npy(os.path.join(d, "y.npy"), y)
    if x2 is not None:
        save_npy(os.path.join(d, "x2.npy"), x2)
    save_npy(os.path.join(d, "losses.npy"), losses)
    write_safetensors(os.path.join(d, "final.safetensors"), final)
    return name


CASES = [
    ("mlp_mse_sgd", mlp, {"loss": {"kind": "mse"}, "optimizer": {"kind": "sgd", "lr": 0.1}}),
    ("mlp_mse_sgd_nesterov_wd", mlp,
     {"loss": {"kind": "mse"},
      "optimizer": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                    "weight_decay": 0.01}}),
    ("mlp_mae_sgd_dampening", mlp,
     {"loss": {"kind": "mae", "reduction": "sum"},
      "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.8, "dampening": 0.3}}),
    ("mlp_huber_adagrad", mlp,
     {"loss": {"kind": "huber", "delta": 0.5},
      "optimizer": {"kind": "adagrad", "lr": 0.1, "weight_decay": 0.001,
                    "initial_accumulator_value": 0.1}}),
    ("mlp_ce_adam_l1_l2", mlp,
     {"loss": {"kind": "cross_entropy"},
      "optimizer": {"kind": "adam", "lr": 0.01, "weight_decay": 0.001},
      "regularization": {"l1": 0.001, "l2": 0.01}}),
    ("mlp_ce_adamw_cosine", mlp,
     {"loss": {"kind": "cross_entropy", "reduction": "sum"},
      "optimizer": {"kind": "adamw", "lr": 0.01, "weight_decay": 0.05},
      "lr_schedule": {"kind": "cosine", "total_steps": 4, "min_lr": 0.001}}),
    ("mlp_bce_logits_adam_clip", mlp,
     {"loss": {"kind": "bce_with_logits"}, "optimizer": {"kind": "adam", "lr": 0.05},
      "clip_grad_norm": 0.1}),
    ("mlp_softmax_bce_step", lambda rng: mlp(rng, out_act="softmax"),
     {"loss": {"kind": "bce", "reduction": "sum"}, "optimizer": {"kind": "sgd", "lr": 0.2},
      "lr_schedule": {"kind": "step", "step_size": 2, "gamma": 0.5}}),
    ("mlp_kl_div_sgd", mlp,
     {"loss": {"kind": "kl_div", "reduction": "batchmean"},
      "optimizer": {"kind": "sgd", "lr": 0.5, "momentum": 0.5}}),
    ("mlp_clipped_mse_sgd", mlp,
     {"loss": {"kind": "clipped_mse", "clip": 0.5}, "optimizer": {"kind": "sgd", "lr": 0.3}}),
    ("cnn_ce_sgd_momentum", cnn,
     {"loss": {"kind": "cross_entropy"},
      "optimizer": {"kind": "sgd", "lr": 0.5, "momentum": 0.9}}),
    ("cnn_ce_adam_frozen", cnn,
     {"loss": {"kind": "cross_entropy"}, "optimizer": {"kind": "adam", "lr": 0.02},
      "frozen": ["c1w", "c1b"]}),
    ("arith_mse_adam", arith,
     {"loss": {"kind": "mse"}, "optimizer": {"kind": "adam", "lr": 0.05}}),
    ("cnn_bn_relu_sgd_momentum", cnn_bn,
     {"loss": {"kind": "cross_entropy"},
      "optimizer": {"kind": "sgd", "lr": 0.2, "momentum": 0.9}}),
    ("lstm_ce_adam", lstm,
     {"loss": {"kind": "cross_entropy"}, "optimizer": {"kind": "adam", "lr": 0.05}}),
    ("two_input_mse_sgd", two_inputs,
     {"loss": {"kind": "mse"}, "optimizer": {"kind": "sgd", "lr": 0.1}}),
]


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    names = [write_case(name, make(np.random.default_rng(i)), training, 100 + i)
             for i, (name, make, training) in enumerate(CASES)]
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("# Step-parity cases (tools/make_train_goldens.py): one directory each.\n")
        for n in names:
            f.write(n + "\n")
    print(f"wrote {len(names)} cases to {OUT}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The YOLO-style detection recipe (docs/models.md, "YOLO-style detection").

    /usr/bin/python3 tools/goldens_yolo.py            # goldens (below)
    /usr/bin/python3 tools/goldens_yolo.py --samples  # samples/yolo_shapes.json

Goldens:
- tests/goldens/ops/cases-yolo.txt and its case directories: YoloLoss (per-image loss) and
  YoloLossGrad (d loss / d pred, from PyTorch's autograd of the loss written here) on random grids;
  tests/test_ops.c holds the interpreter to PyTorch and the generated C to the interpreter.
- tests/goldens/yolo/parity/: a tiny detector (two convolutions, 16x16 RGB, a 2x2 grid, B = 2,
  C = 3) trained 5 Adam steps by PyTorch on a fixed batch: model.json, x.npy, target.npy,
  losses.npy (5 losses), final.safetensors (params after the 5 steps); trainer_losses.npy and
  trainer_final.safetensors: the same steps in a generated trainer's shuffled order.
The YOLO loss is written here independently of Kiln's op (compiler/ops/train/yolo_loss.c), in
vectorized torch: responsible box = argmax of the IoU (first on ties), no gradient through it.
"""
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens_recipes import trainer_order  # noqa: E402
from kiln_io import f32_values, repo_root, save_npy, write_model, write_safetensors  # noqa: E402

ROOT = repo_root()
OPS = os.path.join(ROOT, "tests", "goldens", "ops")
OUT = os.path.join(ROOT, "tests", "goldens", "yolo")


# ---- The loss, independently ----


def iou_in_cell(p, t, sh, sw):
    """IoU of boxes p (..., 4) and t (..., 4) = [x, y, w, h], centres in cell units, sizes over
    the image: sizes scale by the grid; both centres are in the same cell."""
    pw, ph, tw, th = p[..., 2] * sw, p[..., 3] * sh, t[..., 2] * sw, t[..., 3] * sh
    iw = torch.minimum(p[..., 0] + pw / 2, t[..., 0] + tw / 2) - \
        torch.maximum(p[..., 0] - pw / 2, t[..., 0] - tw / 2)
    ih = torch.minimum(p[..., 1] + ph / 2, t[..., 1] + th / 2) - \
        torch.maximum(p[..., 1] - ph / 2, t[..., 1] - th / 2)
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = pw * ph + tw * th - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def yolo_loss(pred, target, boxes=2, lambda_coord=5.0, lambda_noobj=0.5):
    """pred (N, SH, SW, 5B + C), target (N, SH, SW, 5 + C) -> (N,) summed over cells."""
    N, SH, SW, _ = pred.shape
    bx = pred[..., :5 * boxes].reshape(N, SH, SW, boxes, 5)
    cls = pred[..., 5 * boxes:]
    obj = (target[..., 4] > 0.5).to(pred.dtype)
    with torch.no_grad():
        iou = iou_in_cell(bx[..., :4], target[..., None, :4], SH, SW)
        resp = F.one_hot(torch.argmax(iou, dim=-1), boxes).to(pred.dtype) * obj[..., None]
    sqrt_w = torch.sqrt(bx[..., 2:4].clamp(min=1e-6))
    coord = ((bx[..., 0:2] - target[..., None, 0:2]) ** 2).sum(-1) + \
        ((sqrt_w - torch.sqrt(target[..., None, 2:4])) ** 2).sum(-1)
    conf = bx[..., 4]
    per_box = resp * (lambda_coord * coord + (conf - 1) ** 2) + (1 - resp) * lambda_noobj * conf ** 2
    per_cell = per_box.sum(-1) + obj * ((cls - target[..., 5:]) ** 2).sum(-1)
    return per_cell.sum(dim=(1, 2))


# ---- Random grids ----


def random_target(rng, N, SH, SW, C, p_obj=0.5):
    t = np.zeros((N, SH, SW, 5 + C), np.float32)
    obj = rng.uniform(0, 1, (N, SH, SW)) < p_obj
    obj[0, 0, 0] = True
    t[..., 0:2] = rng.uniform(0.05, 0.95, (N, SH, SW, 2))
    t[..., 2:4] = rng.uniform(0.05, 0.6, (N, SH, SW, 2))
    t[..., 4] = obj
    t[..., 5:] = np.eye(C, dtype=np.float32)[rng.integers(0, C, (N, SH, SW))]
    t[~obj] = 0
    return t


def random_pred(rng, N, SH, SW, B, C):
    return rng.uniform(0.02, 0.98, (N, SH, SW, 5 * B + C)).astype(np.float32)


# ---- Op cases (tests/test_ops.c) ----


def op_case(name, op, inputs, attrs, output):
    d = os.path.join(OPS, name)
    shutil.rmtree(d, ignore_errors=True)
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name,
             "doc": "tools/goldens_yolo.py",
             "inputs": [{"name": k, "dtype": "f32", "shape": list(v.shape)} for k, v in inputs],
             "outputs": [{"name": "y", "dtype": "f32", "shape": list(output.shape)}],
             "params": [],
             "nodes": [{"op": op, "name": "n", "inputs": [k for k, _ in inputs], "outputs": ["y"],
                        "attrs": attrs}]}
    write_model(os.path.join(d, "model.json"), model)
    for k, v in inputs:
        save_npy(os.path.join(d, k + ".npy"), v)
    save_npy(os.path.join(d, "y.npy"), output.astype(np.float32))
    return f"{name} {op}\n"


def loss_cases(name, N, SH, SW, B, C, attrs, seed):
    rng = np.random.default_rng(seed)
    pred, target = random_pred(rng, N, SH, SW, B, C), random_target(rng, N, SH, SW, C)
    dloss = rng.uniform(0.5, 2, (N,)).astype(np.float32)
    kw = {"boxes": attrs.get("boxes", 2), "lambda_coord": attrs.get("lambda_coord", 5.0),
          "lambda_noobj": attrs.get("lambda_noobj", 0.5)}
    p = torch.tensor(pred, requires_grad=True)
    loss = yolo_loss(p, torch.tensor(target), **kw)
    (loss * torch.tensor(dloss)).sum().backward()
    lines = op_case(name, "YoloLoss", [("pred", pred), ("target", target)], attrs,
                    loss.detach().numpy())
    lines += op_case(name + "_grad", "YoloLossGrad",
                     [("pred", pred), ("target", target), ("dloss", dloss)], attrs,
                     p.grad.numpy())
    return lines


def op_goldens():
    lines = loss_cases("yolo_loss_s3", 2, 3, 3, 2, 3, {}, 1)
    lines += loss_cases("yolo_loss_b3_rect", 3, 2, 4, 3, 2,
                        {"boxes": 3, "lambda_coord": 2.0, "lambda_noobj": 0.25}, 2)
    lines += loss_cases("yolo_loss_b1", 2, 2, 2, 1, 4, {"boxes": 1}, 3)
    with open(os.path.join(OPS, "cases-yolo.txt"), "w") as f:
        f.write(lines)


# ---- Detector graphs ----


def node(kind, name, inputs, attrs=None):
    n = {"op": kind, "name": name, "inputs": inputs, "outputs": [name]}
    if attrs:
        n["attrs"] = attrs
    return n


def detector(name, doc, size, grid, channels, classes, batch, values=None, lr=1e-3, seed=0):
    """Convs 3x3 (+ LeakyReLU 0.1 + MaxPool 2, the last pool down to the grid), a 1x1 head,
    Sigmoid, Transpose to (N, S, S, 5B + C); the loss YoloLoss(pred, target) per image."""
    rng = np.random.default_rng(seed)
    depth = 5 * 2 + classes
    nodes, params, x, cin, hw = [], [], "x", 3, size
    for i, cout in enumerate(channels):
        last = i + 1 == len(channels)
        k = hw // grid if last else 2
        nodes += [node("Conv", f"conv{i + 1}", [x, f"conv{i + 1}.weight", f"conv{i + 1}.bias"],
                       {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                  node("LeakyRelu", f"act{i + 1}", [f"conv{i + 1}"], {"alpha": 0.1}),
                  node("MaxPool", f"pool{i + 1}", [f"act{i + 1}"],
                       {"kernel_shape": [k, k], "strides": [k, k]})]
        params += [(f"conv{i + 1}.weight", (cout, cin, 3, 3)), (f"conv{i + 1}.bias", (cout,))]
        x, cin, hw = f"pool{i + 1}", cout, hw // k
    nodes += [node("Conv", "head", [x, "head.weight", "head.bias"], {"kernel_shape": [1, 1]}),
              node("Sigmoid", "head_sigmoid", ["head"]),
              node("Transpose", "pred", ["head_sigmoid"], {"perm": [0, 2, 3, 1]}),
              node("YoloLoss", "yolo_loss", ["pred", "target"],
                   {"boxes": 2, "lambda_coord": 5.0, "lambda_noobj": 0.5})]
    params += [("head.weight", (depth, cin, 1, 1)), ("head.bias", (depth,))]
    out_params = []
    for pname, shape in params:
        p = {"name": pname, "dtype": "f32", "shape": list(shape)}
        if values is not None:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scale = 1 / np.sqrt(fan_in) if len(shape) > 1 else 0.1
            v = (rng.uniform(-1, 1, shape) * scale).astype(np.float32)
            values[pname] = v
            p["init"] = {"kind": "values", "values": f32_values(v)}
        elif len(shape) > 1:
            p["init"] = {"kind": "kaiming_uniform", "seed": int(rng.integers(1, 2 ** 31))}
        else:
            p["init"] = {"kind": "uniform", "low": -0.05, "high": 0.05,
                         "seed": int(rng.integers(1, 2 ** 31))}
        out_params.append(p)
    return {"format": "kiln-model", "version": 1, "name": name, "doc": doc,
            "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 3, size, size]},
                       {"name": "target", "dtype": "f32", "shape": [1, grid, grid, 5 + classes]}],
            "outputs": [{"name": "pred"}], "params": out_params, "nodes": nodes,
            "training": {"batch_size": batch,
                         "loss": {"terms": [{"kind": "tensor", "output": "yolo_loss",
                                             "reduction": "batchmean"}]},
                         "optimizer": {"kind": "adam", "lr": lr}, "seed": 1}}


def torch_forward(model, env):
    for n in model["nodes"]:
        a = [env[i] for i in n["inputs"]]
        at = n.get("attrs", {})
        k = n["op"]
        if k == "Conv":
            y = F.conv2d(a[0], a[1], a[2], padding=at.get("pads", [0])[0])
        elif k == "LeakyRelu":
            y = F.leaky_relu(a[0], at["alpha"])
        elif k == "MaxPool":
            y = F.max_pool2d(a[0], at["kernel_shape"], at["strides"])
        elif k == "Sigmoid":
            y = torch.sigmoid(a[0])
        elif k == "Transpose":
            y = a[0].permute(*at["perm"])
        elif k == "YoloLoss":
            y = yolo_loss(a[0], a[1], at["boxes"], at["lambda_coord"], at["lambda_noobj"])
        else:
            raise ValueError(k)
        env[n["outputs"][0]] = y
    return env


def train(model, values, data, shuffled):
    tr = model["training"]
    params = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    opt = torch.optim.Adam(list(params.values()), lr=tr["optimizer"]["lr"])
    losses = []
    for step in range(5):
        order = trainer_order(len(data["x"]), tr["seed"], step) if shuffled else slice(None)
        env = dict(params, **{k: torch.tensor(v[order]) for k, v in data.items()})
        opt.zero_grad()
        loss = torch_forward(model, env)["yolo_loss"].sum() / len(data["x"])  # batchmean
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses, np.float32), {k: v.detach().numpy() for k, v in params.items()}


def parity_golden():
    rng = np.random.default_rng(9)
    N, size, grid, C = 4, 16, 2, 3
    values = {}
    model = detector("yolo_tiny", "YOLO recipe parity: tools/goldens_yolo.py", size, grid, [4, 6],
                     C, N, values=values, lr=0.01, seed=3)
    data = {"x": rng.uniform(0, 1, (N, 3, size, size)).astype(np.float32),
            "target": random_target(rng, N, grid, grid, C, p_obj=0.6)}
    d = os.path.join(OUT, "parity")
    shutil.rmtree(d, ignore_errors=True)
    write_model(os.path.join(d, "model.json"), model)
    for k, v in data.items():
        save_npy(os.path.join(d, k + ".npy"), v)
    for tag, shuffled in (("", False), ("trainer_", True)):
        losses, final = train(model, values, data, shuffled)
        save_npy(os.path.join(d, tag + "losses.npy"), losses)
        write_safetensors(os.path.join(d, tag + "final.safetensors"), final)
        print(tag or "interpreter ", losses)


def samples():
    write_model(os.path.join(ROOT, "samples", "yolo_shapes.json"), detector(
        "yolo_shapes", "YOLOv1-style detector for tools/kiln-shapes images: 64x64 RGB, a 4x4 grid, "
        "2 boxes a cell, 3 classes (square, circle, triangle); loss YoloLoss; training: "
        "docs/models.md", 64, 4, [8, 16, 32, 32], 3, 32, lr=1e-3, seed=17))


if __name__ == "__main__":
    torch.manual_seed(0)
    if "--samples" in sys.argv:
        samples()
    else:
        op_goldens()
        parity_golden()

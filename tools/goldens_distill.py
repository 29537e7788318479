#!/usr/bin/python3
"""Knowledge distillation (docs/training.md §8 "Distillation", docs/models.md "Training recipes").

    /usr/bin/python3 tools/goldens_distill.py            # tests/goldens/distill/<case>/
    /usr/bin/python3 tools/goldens_distill.py --samples  # samples/distill.json, distill_student.json

A student learns from the labels and from a frozen teacher's softened outputs (Hinton et al.):
loss = (1 - alpha) CE(student, label) + alpha T^2 KL(softmax(teacher / T) || softmax(student / T)),
one model JSON holding both networks side by side, the teacher's params in `training.frozen`, the
KL term's target the teacher's soft labels (`"target": {"tensor": "teacher_soft"}`).

Goldens (tiny: a 1x6x6 input, a one-conv teacher, a 36 -> 5 -> 3 MLP student, batch 4, 5 Adam
steps), each case directory holding model.json, x.npy, labels.npy, losses.npy (the 5 losses),
final.safetensors (the student's params after the 5 steps), teacher.safetensors (the teacher's
params, which training must leave untouched) and, for the case the trainer runs,
trainer_losses.npy / trainer_final.safetensors (the same steps in the generated trainer's
shuffled order, tools/goldens_recipes.py's trainer_order) and accuracy.npy (the accuracy on x of
the student after them and of the teacher, which differ):
  distill  - both terms, T = 3, alpha = 0.6;
  kl_only  - the single kl_div loss against the teacher, T = 2 (the KL-with-temperature gradient
             alone).
PyTorch computes the loss from the two networks' logits with F.cross_entropy, F.log_softmax,
F.softmax and F.kl_div(reduction="batchmean"), not from the graph's Log(Softmax(.)) nodes.

Samples: the teacher is LeNet-5 as trained by tools/train_lenet5.py (samples/lenet5.json, weights
read from samples/lenet5.safetensors; 88.8% test accuracy), the student a 784 -> 32 -> 10 MLP;
T = 2, alpha = 0.5. distill_student.json is the same student (same initial weights) with the
cross-entropy alone: the baseline of docs/models.md, and the inference model of a distilled
checkpoint (`kiln build samples/distill_student.json --weights distilled.safetensors`).
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens_recipes import const, gemm, op, run_graph, trainer_order  # noqa: E402
from kiln_io import f32_values, repo_root, save_npy, write_model, write_safetensors  # noqa: E402

OUT = os.path.join(repo_root(), "tests", "goldens", "distill")


# ---- The graphs ----


def student_nodes():
    """x -> Flatten -> student.fc1 -> ReLU -> student.fc2 -> student_logits."""
    return [op("Flatten", "s_flat", ["x"], {"axis": 1}),
            gemm("s_fc1", "s_flat", "student.fc1", "s_fc1"), op("Relu", "s_relu", ["s_fc1"]),
            gemm("s_fc2", "s_relu", "student.fc2", "student_logits")]


def soft_nodes():
    """log softmax(student / T) (Log of Softmax: both have gradient rules) and softmax(teacher / T)."""
    return [op("Div", "s_scaled", ["student_logits", "temperature"]),
            op("Softmax", "s_soft", ["s_scaled"], {"axis": 1}),
            op("Log", "student_log_soft", ["s_soft"]),
            op("Div", "t_scaled", ["teacher_logits", "temperature"]),
            op("Softmax", "teacher_soft", ["t_scaled"], {"axis": 1})]


def tiny_teacher_nodes():
    """x (N, 1, 6, 6) -> Conv 3x3 (2 channels, pads 1) -> ReLU -> Flatten -> Gemm -> 3 logits."""
    return [{"op": "Conv", "name": "t_conv", "inputs": ["x", "teacher.conv.weight",
                                                        "teacher.conv.bias"],
             "outputs": ["t_conv"], "attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}},
            op("Relu", "t_relu", ["t_conv"]), op("Flatten", "t_flat", ["t_relu"], {"axis": 1}),
            gemm("t_fc", "t_flat", "teacher.fc", "teacher_logits")]


def distill_terms(T, alpha):
    return [{"kind": "cross_entropy", "output": "student_logits",
             "target": {"name": "label", "dtype": "i64"}, "weight": 1.0 - alpha},
            {"kind": "kl_div", "output": "student_log_soft", "target": {"tensor": "teacher_soft"},
             "reduction": "batchmean", "weight": round(alpha * T * T, 9)}]


def value_params(values):
    return [{"name": k, "dtype": "f32", "shape": list(v.shape),
             "init": {"kind": "values", "values": f32_values(v)}} for k, v in values.items()]


def tiny_values(rng, D, H, C):
    def draw(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    teacher = {"teacher.conv.weight": draw((2, 1, 3, 3), 0.5), "teacher.conv.bias": draw((2,), 0.1),
               "teacher.fc.weight": draw((C, 2 * D), 0.4), "teacher.fc.bias": draw((C,), 0.1)}
    student = {"student.fc1.weight": draw((H, D), 0.3), "student.fc1.bias": draw((H,), 0.05),
               "student.fc2.weight": draw((C, H), 0.3), "student.fc2.bias": draw((C,), 0.05)}
    return teacher, student


def tiny_model(name, teacher, student, T, alpha, batch):
    """alpha None: the single kl_div loss (no label input)."""
    if alpha is None:
        loss = {"kind": "kl_div", "output": "student_log_soft",
                "target": {"tensor": "teacher_soft"}, "reduction": "batchmean"}
    else:
        loss = {"terms": distill_terms(T, alpha)}
    return {"format": "kiln-model", "version": 1, "name": name,
            "doc": "distillation parity, tiny: tools/goldens_distill.py",
            "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 1, 6, 6]}],
            "outputs": [{"name": "student_logits"}, {"name": "teacher_logits"}],
            "params": value_params(teacher) + value_params(student) +
            [const("temperature", [T])],
            "nodes": tiny_teacher_nodes() + student_nodes() + soft_nodes(),
            "training": {"batch_size": batch, "loss": loss, "frozen": list(teacher),
                         "optimizer": {"kind": "adam", "lr": 0.05}, "seed": 1}}


# ---- PyTorch ----


def run_node(n, env):
    a = [env[i] for i in n["inputs"]]
    at = n.get("attrs", {})
    k = n["op"]
    if k == "Conv":
        y = F.conv2d(a[0], a[1], a[2], padding=at.get("pads", [0])[0])
    elif k == "Flatten":
        y = a[0].reshape(a[0].shape[0], -1)
    elif k == "Div":
        y = a[0] / a[1]
    elif k == "Softmax":
        y = torch.softmax(a[0], dim=at["axis"])
    elif k == "Log":
        y = torch.log(a[0])
    else:  # Gemm, Relu
        run_graph({"nodes": [n]}, env)
        return
    env[n["outputs"][0]] = y


def distill_loss(s, t, label, T, alpha):
    kl = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")
    if alpha is None:
        return kl
    return (1 - alpha) * F.cross_entropy(s, label) + alpha * T * T * kl


def train(model, teacher, student, x, labels, T, alpha, shuffled):
    params = {k: torch.tensor(v, requires_grad=True) for k, v in student.items()}
    frozen = {k: torch.tensor(v) for k, v in teacher.items()}
    opt = torch.optim.Adam(list(params.values()), lr=model["training"]["optimizer"]["lr"])
    losses = []
    for step in range(5):
        order = trainer_order(len(x), model["training"]["seed"], step) if shuffled else slice(None)
        env = dict(frozen, **params, x=torch.tensor(x[order]), temperature=torch.tensor([T]))
        for n in model["nodes"]:
            run_node(n, env)
        opt.zero_grad()
        loss = distill_loss(env["student_logits"], env["teacher_logits"],
                            torch.tensor(labels[order]), T, alpha)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses, dtype=np.float32), {k: v.detach().numpy() for k, v in params.items()}


def accuracies(model, teacher, student, x, labels):
    """The accuracy on x of the student (final params) and of the teacher: the trainer's
    test_accuracy must be the student's (the first term's output)."""
    env = {k: torch.tensor(v) for k, v in dict(teacher, **student).items()}
    env.update(x=torch.tensor(x), temperature=torch.tensor([1.0]))
    for n in model["nodes"]:
        run_node(n, env)
    y = torch.tensor(labels)
    return np.array([(env[k].argmax(1) == y).float().mean().item()
                     for k in ("student_logits", "teacher_logits")], dtype=np.float32)


def write_case(name, T, alpha, trainer, seed):
    N, D, H, C = 4, 36, 5, 3
    rng = np.random.default_rng(seed)
    teacher, student = tiny_values(rng, D, H, C)
    x = rng.uniform(0, 1, (N, 1, 6, 6)).astype(np.float32)
    labels = rng.integers(0, C, N).astype(np.int64)
    model = tiny_model(name + "_tiny", teacher, student, T, alpha, N)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_model(os.path.join(d, "model.json"), model)
    save_npy(os.path.join(d, "x.npy"), x)
    save_npy(os.path.join(d, "labels.npy"), labels)
    write_safetensors(os.path.join(d, "teacher.safetensors"), teacher)
    losses, final = train(model, teacher, student, x, labels, T, alpha, False)
    save_npy(os.path.join(d, "losses.npy"), losses)
    write_safetensors(os.path.join(d, "final.safetensors"), final)
    print(name, losses)
    if trainer:
        t_losses, t_final = train(model, teacher, student, x, labels, T, alpha, True)
        save_npy(os.path.join(d, "trainer_losses.npy"), t_losses)
        write_safetensors(os.path.join(d, "trainer_final.safetensors"), t_final)
        acc = accuracies(model, teacher, t_final, x, labels)
        assert acc[0] != acc[1], "pick a seed where the student's and the teacher's accuracy differ"
        save_npy(os.path.join(d, "accuracy.npy"), acc)
        print(name, "trainer order", t_losses, "accuracy (student, teacher)", acc)


def goldens():
    write_case("distill", 3.0, 0.6, True, 16)
    write_case("kl_only", 2.0, None, False, 12)


# ---- Samples ----


def lenet_teacher(root):
    """LeNet-5's params (read from lenet5.safetensors) and nodes, intermediate tensors and node
    names prefixed with "teacher.", its output renamed teacher_logits."""
    with open(os.path.join(root, "lenet5.json")) as f:
        lenet = json.load(f)
    params = {p["name"] for p in lenet["params"]}

    def rename(t):
        if t == "x" or t in params:
            return t
        return "teacher_logits" if t == "logits" else "teacher." + t
    nodes = []
    for n in lenet["nodes"]:
        n = dict(n, name="teacher." + n["name"], inputs=[rename(t) for t in n["inputs"]],
                 outputs=[rename(t) for t in n["outputs"]])
        nodes.append(n)
    return lenet["params"], nodes


def student_params(hidden, seed):
    return [{"name": "student.fc1.weight", "dtype": "f32", "shape": [hidden, 784],
             "init": {"kind": "kaiming_uniform", "a": 2.236068, "seed": seed}},
            {"name": "student.fc1.bias", "dtype": "f32", "shape": [hidden],
             "init": {"kind": "uniform", "low": -0.0357, "high": 0.0357, "seed": seed + 1}},
            {"name": "student.fc2.weight", "dtype": "f32", "shape": [10, hidden],
             "init": {"kind": "kaiming_uniform", "a": 2.236068, "seed": seed + 2}},
            {"name": "student.fc2.bias", "dtype": "f32", "shape": [10],
             "init": {"kind": "uniform", "low": -1 / hidden ** 0.5, "high": 1 / hidden ** 0.5,
                      "seed": seed + 3}}]


def samples(T=2.0, alpha=0.5, hidden=32):
    root = os.path.join(repo_root(), "samples")
    t_params, t_nodes = lenet_teacher(root)
    inputs = [{"name": "x", "dtype": "f32", "shape": [1, 1, 28, 28]}]
    s_params = student_params(hidden, 61)
    opt = {"kind": "adam", "lr": 0.001}
    write_model(os.path.join(root, "distill.json"), {
        "format": "kiln-model", "version": 1, "name": "distill",
        "doc": f"knowledge distillation: a 784 -> {hidden} -> 10 MLP student learns from the "
        f"frozen, trained LeNet-5 (teacher) at T = {T:g}, alpha = {alpha:g}; "
        "tools/goldens_distill.py --samples, docs/models.md",
        "weights": "lenet5.safetensors", "inputs": inputs,
        "outputs": [{"name": "student_logits"}, {"name": "teacher_logits"}],
        "params": t_params + s_params + [const("temperature", [T])],
        "nodes": t_nodes + student_nodes() + soft_nodes(),
        "training": {"batch_size": 64, "loss": {"terms": distill_terms(T, alpha)},
                     "frozen": [p["name"] for p in t_params], "optimizer": opt, "seed": 1}})
    write_model(os.path.join(root, "distill_student.json"), {
        "format": "kiln-model", "version": 1, "name": "distill_student",
        "doc": f"the student of samples/distill.json (784 -> {hidden} -> 10 MLP, the same initial "
        "weights) trained on the labels alone: the baseline; also the inference model of a "
        "distilled checkpoint (--weights); tools/goldens_distill.py --samples",
        "inputs": inputs, "outputs": [{"name": "student_logits"}], "params": s_params,
        "nodes": student_nodes(),
        "training": {"batch_size": 64,
                     "loss": {"kind": "cross_entropy", "output": "student_logits",
                              "target": {"name": "label", "dtype": "i64"}},
                     "optimizer": opt, "seed": 1}})


def main(args):
    torch.manual_seed(0)
    (samples if "--samples" in args else goldens)()


if __name__ == "__main__":
    main(sys.argv[1:])

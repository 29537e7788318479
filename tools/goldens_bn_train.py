#!/usr/bin/python3
"""Golden cases of the fused BatchNorm training ops, BatchNormTrain and BatchNormTrainGrad
(compiler/ops/nn/batchnorm_train.c, batchnorm_train_grad.c), from PyTorch:
tests/goldens/ops/cases-bntrain.txt and its case directories. tests/test_ops.c holds the
interpreter to PyTorch and the generated code of both backends to the interpreter.

    /usr/bin/python3 tools/goldens_bn_train.py

The mode flag f = 1 (training) takes y from torch.nn.functional.batch_norm in training mode with
momentum 1, so that its running statistics after the step are the batch mean and the unbiased
batch variance (var_b = running_var * (M - 1) / M), and dx, dscale, dB from autograd; f = 0
(evaluation) takes them from batch_norm in evaluation mode. Both are cross-checked here against
the op's defining formula (m = f mean_b + (1 - f) running_mean, var = f var_b + (1 - f)
running_var) differentiated by autograd, which gives the f = 0.5 case and the one-element channel
(M = 1: PyTorch refuses to train on it). relu = 1 puts F.relu after it (the fused Relu; the
gradient op then reads y). Everything in float64 from float32 inputs.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import repo_root, write_op_case  # noqa: E402

DOC = "tools/goldens_bn_train.py"
EPS = 1e-3


def formula(x, w, b, rm, rv, f):
    """The op's definition, in torch float64 (differentiable in x, w, b)."""
    axes = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean_b = x.mean(dim=axes)
    m = f * mean_b + (1 - f) * rm
    var_b = ((x - m.reshape(shape)) ** 2).mean(dim=axes)
    inv = 1 / torch.sqrt(f * var_b + (1 - f) * rv + EPS)
    y = (x - m.reshape(shape)) * inv.reshape(shape) * w.reshape(shape) + b.reshape(shape)
    return y, mean_b, var_b, inv


def torch_bn(x, w, b, rm, rv, f):
    """y and the batch statistics from PyTorch's own batch_norm (f = 1: training, 0: eval)."""
    run_m, run_v = rm.detach().clone(), rv.detach().clone()
    y = F.batch_norm(x, run_m, run_v, w, b, training=f == 1, momentum=1.0, eps=EPS)
    if f != 1:
        return y, None, None
    count = x.numel() // x.shape[1]
    return y, run_m, run_v * (count - 1) / count


def case(name, x_shape, f, seed, relu=False):
    rng = np.random.default_rng(seed)
    C = x_shape[1]
    x = (1.5 * rng.standard_normal(x_shape) + 0.7).astype(np.float32)
    w = rng.uniform(0.5, 1.5, C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    rm = (0.3 * rng.standard_normal(C)).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, C).astype(np.float32)
    dy = (0.1 * rng.standard_normal(x_shape)).astype(np.float32)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in ("x", "w", "b"))
         for k, v in dict(x=x, w=w, b=b, rm=rm, rv=rv).items()}
    y, mean_b, var_b, inv = formula(t["x"], t["w"], t["b"], t["rm"], t["rv"], f)
    act = F.relu if relu else (lambda v: v)
    y = act(y)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    grads = [t[k].grad.detach().numpy() for k in ("x", "w", "b")]
    if f in (0, 1) and np.prod(x_shape) > C:  # PyTorch's own, where it defines the case
        ty = {k: v.detach().clone().requires_grad_(k in ("x", "w", "b")) for k, v in t.items()}
        y_t, mean_t, var_t = torch_bn(ty["x"], ty["w"], ty["b"], ty["rm"], ty["rv"], f)
        y_t = act(y_t)
        y_t.backward(torch.tensor(dy, dtype=torch.float64))
        assert torch.allclose(y_t, y, atol=1e-12)
        for k, g in zip(("x", "w", "b"), grads):
            assert np.allclose(ty[k].grad.numpy(), g, atol=1e-12), k
        if f == 1:
            assert torch.allclose(mean_t, mean_b, atol=1e-12)
            assert torch.allclose(var_t, var_b, atol=1e-12)
        y, grads = y_t, [ty[k].grad.numpy() for k in ("x", "w", "b")]
    mode = np.array([f], np.float32)
    lines = write_op_case(name, "BatchNormTrain",
                          [("x", x), ("scale", w), ("b", b), ("input_mean", rm),
                           ("input_var", rv), ("mode", mode)],
                          {"epsilon": EPS, "relu": int(relu)},
                          [("y", y.detach().numpy()), ("mean_b", mean_b.detach().numpy()),
                           ("var_b", var_b.detach().numpy()), ("inv_std", inv.detach().numpy())],
                          DOC)
    saved_mean = mean_b.detach().numpy().astype(np.float32)
    saved_inv = inv.detach().numpy().astype(np.float32)
    grad_in = [("dy", dy), ("x", x), ("scale", w), ("mean_b", saved_mean), ("input_mean", rm),
               ("inv_std", saved_inv), ("mode", mode)]
    if relu:  # the forward's output masks dy (Relu's gradient)
        grad_in.append(("y", y.detach().numpy().astype(np.float32)))
    lines += write_op_case(name + "_grad", "BatchNormTrainGrad", grad_in, {},
                           [("dx", grads[0]), ("dscale", grads[1]), ("db", grads[2])], DOC)
    return lines


def main():
    # odd C, H * W = 21 (not a multiple of any vector width), training
    lines = case("bntrain_odd_c", (3, 5, 3, 7), 1.0, seed=1)
    # N = 1, rank 3 (BatchNorm1d on sequences), evaluation (f = 0): the running statistics
    lines += case("bntrain_n1_eval", (1, 4, 5), 0.0, seed=2)
    # rank 2 (N, C), a flag between the two modes
    lines += case("bntrain_rank2_half", (6, 3), 0.5, seed=3)
    # a Relu fused after it (ResNet's pattern): y = max(y, 0), dy masked by y > 0
    lines += case("bntrain_relu", (2, 3, 4, 5), 1.0, seed=5, relu=True)
    # one element per channel (N * H * W = 1): var_b = 0, y = B, dx = 0
    lines += case("bntrain_one_element", (1, 3, 1, 1), 1.0, seed=4)
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-bntrain.txt"), "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()

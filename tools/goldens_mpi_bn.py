#!/usr/bin/python3
"""PyTorch reference for data-parallel training with per-rank BatchNorm (tests/test_mpi.sh).

The golden case tests/goldens/train/cnn_bn_relu_sgd_momentum (a Conv + BatchNormalization model,
batch 4, SGD with momentum; written by tools/make_train_goldens.py) trained for 5 steps the way
PyTorch DistributedDataParallel trains it on 2 ranks with 2 samples each and plain BatchNorm:

  - every step (here one per epoch: the data set is the batch) takes the samples in the order
    the trainer's seeded shuffle gives them (runtime/train.c, shuffle(), --seed SEED below);
  - rank r normalizes its own half of that order with that half's statistics;
  - the loss is the mean of the ranks' losses, the gradients the mean of theirs (the all-reduce);
  - running statistics: DDP's broadcast_buffers, so every step starts from rank 0's buffers and
    the buffers kept (and checkpointed) are the ones rank 0's half updated.

Writes tests/goldens/mpi/cnn_bn_per_rank/losses.npy (f64 (5,), the mean loss of each step) and
final.safetensors (trainable params and buffers after 5 steps). Run with Debian's python3
(torch 1.13): /usr/bin/python3 tools/goldens_mpi_bn.py
"""
import copy
import json
import os

import numpy as np
import torch

from kiln_io import repo_root, save_npy, write_safetensors
from make_train_goldens import cnn_bn, make_optimizer, torch_loss

STEPS = 5
RANKS = 2
SEED = 7  # the trainer's --seed in tests/test_mpi.sh
M64 = (1 << 64) - 1
CASE = os.path.join(repo_root(), "tests", "goldens", "train", "cnn_bn_relu_sgd_momentum")
OUT = os.path.join(repo_root(), "tests", "goldens", "mpi", "cnn_bn_per_rank")


def load_case():
    with open(os.path.join(CASE, "model.json")) as f:
        model = json.load(f)
    values = {p["name"]: np.array(p["init"]["values"], np.float32).reshape(p["shape"])
              for p in model["params"]}
    buffers = {p["name"] for p in model["params"] if p.get("role") == "buffer"}
    x = np.load(os.path.join(CASE, "x.npy"))
    y = np.load(os.path.join(CASE, "y.npy"))
    return model, values, buffers, x, y


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def trainer_order(n, seed, epoch):
    """The trainer's permutation of n samples for an epoch (runtime/train.c, shuffle())."""
    state = (seed * 0x2545F4914F6CDD1D + epoch) & M64
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        state, r = splitmix(state)
        j = r % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def main():
    model, values, buffer_names, x, y = load_case()
    forward = cnn_bn(np.random.default_rng(0))["forward"]  # the forward pass (values unused)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()
         if k not in buffer_names}
    buffers = {k: torch.tensor(values[k]) for k in buffer_names}
    opt = make_optimizer(model["training"]["optimizer"], list(p.values()))
    spec = model["training"]["loss"]
    xt, yt = torch.tensor(x), torch.tensor(y)
    shard = xt.shape[0] // RANKS
    losses = []
    for epoch in range(STEPS):
        order = torch.tensor(trainer_order(xt.shape[0], SEED, epoch))
        xs, ys = xt[order], yt[order]
        opt.zero_grad()
        total = 0
        kept = None
        for r in range(RANKS):
            b = copy.deepcopy(buffers)  # every rank starts from rank 0's buffers
            part = slice(r * shard, (r + 1) * shard)
            loss = torch_loss(spec, forward(p, xs[part], b), ys[part]) / RANKS
            loss.backward()  # the gradients add up: their mean over the ranks
            total += loss.item()
            if r == 0:
                kept = b
        buffers = kept
        losses.append(total)
        opt.step()
    final = {k: v.detach().numpy().copy() for k, v in p.items()}
    final.update({k: v.numpy().copy() for k, v in buffers.items()})
    os.makedirs(OUT, exist_ok=True)
    save_npy(os.path.join(OUT, "losses.npy"), np.array(losses, np.float64))
    write_safetensors(os.path.join(OUT, "final.safetensors"), final)
    print("losses", losses)


if __name__ == "__main__":
    main()

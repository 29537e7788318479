#!/usr/bin/python3
"""GAN and WGAN recipes (docs/training.md §8, docs/models.md "Training recipes").

    /usr/bin/python3 tools/goldens_gan.py            # tests/goldens/gan/<case>/
    /usr/bin/python3 tools/goldens_gan.py --samples  # samples/gan.json, samples/wgan.json

Goldens: a tiny generator G (z -> Gemm -> ReLU -> Gemm -> sigmoid) and discriminator D (Gemm ->
LeakyReLU 0.2 -> Gemm: one score), in one model with D applied to the data x and to G(z), trained
by PyTorch 1.13 for 3 alternations: n_critic D steps (G's output detached) then one G step (D
not stepped), with Kiln's noise streams (tools/goldens_recipes.py's numpy NormalNoise): the D
step k draws z with salt 2^32 from step k, the G step m with salt 3 * 2^32 from step m.
  gan:  Adam (beta1 0.5) on both; D: BCE-with-logits(D(x), 1) + BCE-with-logits(D(G(z)), 0);
        G: BCE-with-logits(D(G(z)), 1), the non-saturating loss; n_critic 1.
  wgan: RMSprop on both; D: mean D(G(z)) - mean D(x), then D's params clamped to [-c, c];
        G: -mean D(G(z)); n_critic 2.
tests/goldens/gan/short_run/ holds 64 bright samples for a short run (tests/test_gan.c). Each case
directory holds model.json, x.npy, labels.npy (ignored by the trainer), d_losses.npy,
g_losses.npy, final.safetensors (every param of both nets at the end), and trainer_d_losses.npy,
trainer_g_losses.npy, trainer_final.safetensors: the same steps with the batch in the order a
generated trainer feeds it (`--train x.npy,labels.npy`, one batch an epoch, rows shuffled by its
seeded permutation).
"""
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens_recipes import gemm, init_params, normal_noise, op, trainer_order  # noqa: E402
from kiln_io import repo_root, save_npy, write_model, write_safetensors  # noqa: E402

OUT = os.path.join(repo_root(), "tests", "goldens", "gan")
D_SALT = 1 << 32  # the D step's noise input 0
G_SALT = 3 << 32  # the G step's (compiler/autodiff/adversarial.c)
LEAK = 0.2


# ---- The model: G and D in one graph, D applied twice with the same weights ----


def disc_nodes(x, tag):
    return [gemm("disc.fc1_" + tag, x, "disc.fc1", "disc.fc1_" + tag),
            op("LeakyRelu", "disc.act_" + tag, ["disc.fc1_" + tag], {"alpha": LEAK}),
            gemm("disc.fc2_" + tag, "disc.act_" + tag, "disc.fc2", "d_" + tag)]


def gan_nodes():
    return [gemm("gen.fc1", "z", "gen.fc1", "gen.fc1"), op("Relu", "gen.act", ["gen.fc1"]),
            gemm("gen.fc2", "gen.act", "gen.fc2", "gen.fc2"),
            {"op": "Sigmoid", "name": "fake", "inputs": ["gen.fc2"], "outputs": ["fake"]}] + \
        disc_nodes("x", "real") + disc_nodes("fake", "fake")


def optimizers(kind, lr):
    if kind == "gan":
        return {"kind": "adam", "lr": lr, "beta1": 0.5, "beta2": 0.999}
    return {"kind": "rmsprop", "lr": lr}


def gan_model(name, doc, kind, Z, D, HG, HD, batch, values=None, seed=0, lr=2e-4, n_critic=1,
              clip=0.01):
    rng = np.random.default_rng(seed)
    shapes = [("gen.fc1.weight", (HG, Z)), ("gen.fc1.bias", (HG,)), ("gen.fc2.weight", (D, HG)),
              ("gen.fc2.bias", (D,)), ("disc.fc1.weight", (HD, D)), ("disc.fc1.bias", (HD,)),
              ("disc.fc2.weight", (1, HD)), ("disc.fc2.bias", (1,))]
    adv = {"kind": kind, "noise": "z", "fake": "fake", "d_real": "d_real", "d_fake": "d_fake",
           "generator": {"params": ["gen.*"], "optimizer": optimizers(kind, lr)},
           "discriminator": {"params": ["disc.*"], "optimizer": optimizers(kind, lr)},
           "n_critic": n_critic}
    if kind == "wgan":
        adv["clip"] = clip
    return {"format": "kiln-model", "version": 1, "name": name, "doc": doc,
            "inputs": [{"name": "z", "dtype": "f32", "shape": [1, Z]},
                       {"name": "x", "dtype": "f32", "shape": [1, D]}],
            "outputs": [{"name": "fake"}, {"name": "d_real"}, {"name": "d_fake"}],
            "params": init_params(shapes, rng, values), "nodes": gan_nodes(),
            "training": {"batch_size": batch, "seed": 1, "adversarial": adv}}


# ---- PyTorch ----


def generator(p, z):
    h = torch.relu(z @ p["gen.fc1.weight"].t() + p["gen.fc1.bias"])
    return torch.sigmoid(h @ p["gen.fc2.weight"].t() + p["gen.fc2.bias"])


def discriminator(p, x):
    h = F.leaky_relu(x @ p["disc.fc1.weight"].t() + p["disc.fc1.bias"], LEAK)
    return h @ p["disc.fc2.weight"].t() + p["disc.fc2.bias"]


def d_loss(kind, real, fake):
    if kind == "wgan":
        return fake.mean() - real.mean()
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) +
            F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_loss(kind, fake):
    if kind == "wgan":
        return -fake.mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def make_optimizer(spec, params):
    if spec["kind"] == "adam":
        return torch.optim.Adam(params, lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]))
    return torch.optim.RMSprop(params, lr=spec["lr"])


def train(model, values, x, alternations, shuffled=False):
    tr, adv = model["training"], model["training"]["adversarial"]
    kind, seed, N = adv["kind"], tr["seed"], tr["batch_size"]
    Z = model["inputs"][0]["shape"][1]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    gen = [v for k, v in p.items() if k.startswith("gen.")]
    disc = [v for k, v in p.items() if k.startswith("disc.")]
    opt_g = make_optimizer(adv["generator"]["optimizer"], gen)
    opt_d = make_optimizer(adv["discriminator"]["optimizer"], disc)
    d_losses, g_losses, d_step = [], [], 0
    for g_step in range(alternations):
        for _ in range(adv["n_critic"]):
            # the trainer: one batch an epoch, shuffled by (seed, epoch); else as stored
            order = trainer_order(N, seed, d_step) if shuffled else slice(None)
            z = torch.tensor(normal_noise(seed, d_step, D_SALT, (N, Z)))
            fake = generator(p, z).detach()
            loss = d_loss(kind, discriminator(p, torch.tensor(x[order])), discriminator(p, fake))
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
            if kind == "wgan":
                with torch.no_grad():
                    for w in disc:
                        w.clamp_(-adv["clip"], adv["clip"])
            d_losses.append(loss.item())
            d_step += 1
        z = torch.tensor(normal_noise(seed, g_step, G_SALT, (N, Z)))
        loss = g_loss(kind, discriminator(p, generator(p, z)))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        g_losses.append(loss.item())
    final = {k: v.detach().numpy() for k, v in p.items()}
    return np.array(d_losses, np.float32), np.array(g_losses, np.float32), final


def write_case(name, model, values, x):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_model(os.path.join(d, "model.json"), model)
    save_npy(os.path.join(d, "x.npy"), x)
    save_npy(os.path.join(d, "labels.npy"), np.zeros(len(x), np.int64))
    for prefix, shuffled in (("", False), ("trainer_", True)):
        dl, gl, final = train(model, values, x, 3, shuffled)
        save_npy(os.path.join(d, prefix + "d_losses.npy"), dl)
        save_npy(os.path.join(d, prefix + "g_losses.npy"), gl)
        write_safetensors(os.path.join(d, prefix + "final.safetensors"), final)
        print(name, prefix or "interp", dl, gl)


def short_run_data(D):
    """64 bright samples (uniform in [0.9, 1)), easily told from an untrained generator's
    (about 0.5): tests/test_gan.c's short run, whose losses must fall from their start."""
    d = os.path.join(OUT, "short_run")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    x = 0.9 + 0.1 * np.random.default_rng(11).uniform(0, 1, (64, D))
    save_npy(os.path.join(d, "x.npy"), x.astype(np.float32))
    save_npy(os.path.join(d, "labels.npy"), np.zeros(64, np.int64))


def goldens():
    N, Z, D, HG, HD = 4, 3, 8, 6, 5
    short_run_data(D)
    x = np.random.default_rng(3).uniform(0, 1, (N, D)).astype(np.float32)
    for kind, n_critic, lr in (("gan", 1, 0.01), ("wgan", 2, 0.01)):
        values = {}
        m = gan_model(kind + "_tiny", "adversarial parity: tools/goldens_gan.py", kind, Z, D, HG,
                      HD, N, values=values, seed=7, lr=lr, n_critic=n_critic, clip=0.1)
        write_case(kind, m, values, x)


def samples():
    root = os.path.join(repo_root(), "samples")
    write_model(os.path.join(root, "gan.json"), gan_model(
        "gan", "GAN: MLP generator (z of 64 -> 256 -> 784, sigmoid) and discriminator (784 -> "
        "256 -> 1 logit); non-saturating loss, Adam lr 2e-4 beta1 0.5; training: docs/models.md",
        "gan", 64, 784, 256, 256, 64, seed=51))
    write_model(os.path.join(root, "wgan.json"), gan_model(
        "wgan", "WGAN: the GAN's generator and a critic (784 -> 256 -> 1 score); Wasserstein "
        "loss, RMSprop lr 5e-5, 5 critic steps per generator step, weights clipped to [-0.01, "
        "0.01]; training: docs/models.md", "wgan", 64, 784, 256, 256, 64, seed=53, lr=5e-5,
        n_critic=5))


if __name__ == "__main__":
    (samples if "--samples" in sys.argv else goldens)()  # no torch randomness: numpy seeds all

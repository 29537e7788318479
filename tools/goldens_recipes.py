#!/usr/bin/python3
"""The generative training recipes (docs/models.md, "Training recipes"): autoencoder, VAE, CVAE,
beta-VAE and tilted VAE.

    /usr/bin/python3 tools/goldens_recipes.py            # tests/goldens/recipes/<case>/
    /usr/bin/python3 tools/goldens_recipes.py --samples  # samples/beta_vae.json, tilted_vae.json

Goldens: for each recipe a tiny variant of the sample's graph (the same nodes, small sizes, the
initial weights as values) trained 5 steps by PyTorch 1.13 on a fixed batch with the same loss,
Adam, and the same reparameterization noise eps: Kiln's NormalNoise stream (docs/training.md §8)
written again here with numpy (SplitMix64 + Box-Muller in f64, then f32). Each case directory
holds model.json, x.npy (and cond.npy for the CVAE), losses.npy (5 losses) and final.safetensors
(the params after the 5 steps); labels.npy (the classes cond one-hot encodes), trainer_losses.npy
and trainer_final.safetensors: the same 5 steps in the order a generated trainer feeds the batch
(`--train x.npy,labels.npy --epochs 5`: one batch an epoch, rows shuffled by its seeded
permutation, runtime/train.c, written again here). The graphs are evaluated by PyTorch node by node from the same
JSON (a small interpreter below), so a wrong Kiln kernel or gradient shows up as a difference.
"""
import math
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_io import f32_values, repo_root, save_npy, write_model, write_safetensors  # noqa: E402

OUT = os.path.join(repo_root(), "tests", "goldens", "recipes")
MASK = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


# ---- Kiln's NormalNoise, independently in numpy/Python ----


def mix64(z):
    z &= MASK
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return z


def normal_noise(seed, step, salt, shape):
    s = mix64(mix64(mix64(seed ^ G) ^ step) ^ salt)
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        u1 = ((mix64(s ^ (2 * i)) >> 11) + 1) * 2.0 ** -53
        u2 = (mix64(s ^ (2 * i + 1)) >> 11) * 2.0 ** -53
        out[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return out.astype(np.float32).reshape(shape)


NOISE_SALT = 1 << 32  # training.noise input j draws with salt 2^32 + j


def splitmix(state):
    state = (state + G) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def trainer_order(n, seed, epoch):
    """The generated trainer's sample order in epoch `epoch` (runtime/train.c, shuffle)."""
    state = (seed * 0x2545F4914F6CDD1D + epoch) & MASK
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        state, r = splitmix(state)
        j = r % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


# ---- The recipe graphs (JSON nodes) ----


def gemm(name, x, w, out):
    return {"op": "Gemm", "name": name, "inputs": [x, w + ".weight", w + ".bias"],
            "outputs": [out], "attrs": {"transB": 1}}


def op(kind, name, inputs, attrs=None):
    n = {"op": kind, "name": name, "inputs": inputs, "outputs": [name]}
    if attrs:
        n["attrs"] = attrs
    return n


def decoder(prefix, z, cond):
    """dec1 -> ReLU -> dec2 -> sigmoid, conditioned on cond (CVAE) by concatenation."""
    nodes = []
    if cond:
        nodes.append(op("Concat", prefix + "dec_in", [z, cond], {"axis": 1}))
        z = prefix + "dec_in"
    out = "recon" if not prefix else prefix + "sample"
    return nodes + [gemm(prefix + "dec1", z, "dec1", prefix + "dec1"),
                    op("Relu", prefix + "dec_relu", [prefix + "dec1"]),
                    gemm(prefix + "dec2", prefix + "dec_relu", "dec2", prefix + "dec2"),
                    {"op": "Sigmoid", "name": out, "inputs": [prefix + "dec2"],
                     "outputs": [out]}]


def kl_nodes(tau):
    """kl = 0.5 * sum_j (mu^2 + exp(logvar) - 1 - logvar), per sample (N,); with the tilted
    prior, kl_tilted = kl - tau * ||z|| (docs/models.md)."""
    nodes = [op("Mul", "mu_sq", ["z_mean", "z_mean"]), op("Exp", "var", ["z_logvar"]),
             op("Add", "kl_a", ["mu_sq", "var"]), op("Sub", "kl_b", ["kl_a", "one"]),
             op("Sub", "kl_c", ["kl_b", "z_logvar"]),
             op("ReduceSum", "kl_sum", ["kl_c"], {"axes": [1], "keepdims": 0}),
             op("Mul", "kl", ["kl_sum", "half"])]
    if tau is not None:
        nodes += [op("Mul", "z_sq", ["z", "z"]),
                  op("ReduceSum", "z_sq_sum", ["z_sq"], {"axes": [1], "keepdims": 0}),
                  op("Add", "z_sq_eps", ["z_sq_sum", "tiny"]), op("Sqrt", "z_norm", ["z_sq_eps"]),
                  op("Mul", "tilt", ["z_norm", "tau"]), op("Sub", "kl_tilted", ["kl", "tilt"])]
    return nodes


def vae_nodes(cond, tau, prior, traversal):
    enc_in = "x"
    nodes = []
    if cond:
        nodes.append(op("Concat", "enc_in", ["x", "cond"], {"axis": 1}))
        enc_in = "enc_in"
    nodes += [gemm("enc", enc_in, "enc", "enc"), op("Relu", "relu", ["enc"]),
              gemm("mu", "relu", "mu", "z_mean"), gemm("logvar", "relu", "logvar", "z_logvar"),
              op("Mul", "half_logvar", ["z_logvar", "half"]), op("Exp", "sigma", ["half_logvar"]),
              op("Mul", "sigma_eps", ["sigma", "eps"]), op("Add", "z", ["z_mean", "sigma_eps"])]
    nodes += decoder("", "z", "cond" if cond else None)
    nodes += kl_nodes(tau)
    if prior:  # samples decoded from the prior N(0, I): fresh noise every step in training
        nodes.append({"op": "RandomNormalLike", "name": "z_prior", "inputs": ["z_mean"],
                      "outputs": ["z_prior"], "attrs": {"seed": 7.0}})
        nodes += decoder("prior_", "z_prior", "cond" if cond else None)
    if traversal:  # decode z_traversal: one latent dim varied per row, the others 0
        nodes += decoder("traversal_", "z_traversal", None)
    return nodes


# ---- Models ----


def init_params(shapes, rng, values):
    """Params: values (tiny variants: standard normal * 0.3) or seeded initializers."""
    out = []
    for name, shape in shapes:
        p = {"name": name, "dtype": "f32", "shape": list(shape)}
        if values is not None:
            v = (rng.standard_normal(shape) * (0.3 if len(shape) == 2 else 0.05)).astype(np.float32)
            values[name] = v
            p["init"] = {"kind": "values", "values": f32_values(v)}
        elif len(shape) == 2:
            p["init"] = {"kind": "kaiming_uniform", "seed": int(rng.integers(1, 2 ** 31))}
        else:
            p["init"] = {"kind": "uniform", "low": -0.05, "high": 0.05,
                         "seed": int(rng.integers(1, 2 ** 31))}
        out.append(p)
    return out


def const(name, values, shape=None):
    v = np.asarray(values, dtype=np.float32)
    return {"name": name, "dtype": "f32", "shape": list(shape or v.shape), "role": "constant",
            "init": {"kind": "values", "values": f32_values(v)}}


def traversal_grid(latent, steps=10, span=3.0):
    """(latent * steps, latent): row d * steps + j is z with z_d = -span + 2 span j / (steps-1)."""
    z = np.zeros((latent * steps, latent), dtype=np.float32)
    for d in range(latent):
        z[d * steps:(d + 1) * steps, d] = np.linspace(-span, span, steps)
    return z


def vae_model(name, doc, D, H, L, batch, K=0, beta=1.0, tau=None, prior=True, traversal=False,
              values=None, seed=0, lr=1e-3):
    rng = np.random.default_rng(seed)
    shapes = [("enc.weight", (H, D + K)), ("enc.bias", (H,)), ("mu.weight", (L, H)),
              ("mu.bias", (L,)), ("logvar.weight", (L, H)), ("logvar.bias", (L,)),
              ("dec1.weight", (H, L + K)), ("dec1.bias", (H,)), ("dec2.weight", (D, H)),
              ("dec2.bias", (D,))]
    params = init_params(shapes, rng, values)
    params += [const("half", [0.5]), const("one", [1.0])]
    if tau is not None:
        params += [const("tau", [tau]), const("tiny", [1e-8])]
    if traversal:
        params.append(const("z_traversal", traversal_grid(L)))
    inputs = [{"name": "x", "dtype": "f32", "shape": [1, D]}]
    if K:
        inputs.append({"name": "cond", "dtype": "f32", "shape": [1, K]})
    inputs.append({"name": "eps", "dtype": "f32", "shape": [1, L]})
    outputs = [{"name": "recon"}, {"name": "z_mean"}, {"name": "z_logvar"}]
    if prior:
        outputs.append({"name": "prior_sample"})
    if traversal:
        outputs.append({"name": "traversal_sample"})
    kl = "kl_tilted" if tau is not None else "kl"
    training = {
        "batch_size": batch,
        "loss": {"terms": [
            {"kind": "mse", "output": "recon", "target": {"input": "x"}, "weight": float(D)},
            {"kind": "tensor", "output": kl, "reduction": "batchmean", "weight": beta}]},
        "noise": ["eps"],
        "optimizer": {"kind": "adam", "lr": lr},
        "seed": 1,
    }
    return {"format": "kiln-model", "version": 1, "name": name, "doc": doc, "inputs": inputs,
            "outputs": outputs, "params": params,
            "nodes": vae_nodes(K > 0, tau, prior, traversal), "training": training}


def ae_model(name, D, H1, H2, batch, values, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [("enc1.weight", (H1, D)), ("enc1.bias", (H1,)), ("enc2.weight", (H2, H1)),
              ("enc2.bias", (H2,)), ("dec1.weight", (H1, H2)), ("dec1.bias", (H1,)),
              ("dec2.weight", (D, H1)), ("dec2.bias", (D,))]
    nodes = [gemm("enc1", "x", "enc1", "enc1"), op("Relu", "relu", ["enc1"]),
             gemm("enc2", "relu", "enc2", "enc2"), op("Relu", "relu_1", ["enc2"]),
             gemm("dec1", "relu_1", "dec1", "dec1"), op("Relu", "relu_2", ["dec1"]),
             gemm("dec2", "relu_2", "dec2", "dec2"),
             {"op": "Sigmoid", "name": "recon", "inputs": ["dec2"], "outputs": ["recon"]}]
    return {"format": "kiln-model", "version": 1, "name": name,
            "doc": "autoencoder recipe, tiny: tools/goldens_recipes.py",
            "inputs": [{"name": "x", "dtype": "f32", "shape": [1, D]}],
            "outputs": [{"name": "recon"}], "params": init_params(shapes, rng, values),
            "nodes": nodes,
            "training": {"batch_size": batch,
                         "loss": {"kind": "mse", "output": "recon", "target": {"input": "x"}},
                         "optimizer": {"kind": "adam", "lr": 0.01}, "seed": 1}}


# ---- PyTorch: the graph node by node ----


def run_graph(model, env):
    for n in model["nodes"]:
        a = [env[i] for i in n["inputs"]]
        at = n.get("attrs", {})
        k = n["op"]
        if k == "Gemm":
            y = a[0] @ a[1].t() + a[2]
        elif k == "Relu":
            y = torch.relu(a[0])
        elif k == "Sigmoid":
            y = torch.sigmoid(a[0])
        elif k == "Exp":
            y = torch.exp(a[0])
        elif k == "Sqrt":
            y = torch.sqrt(a[0])
        elif k in ("Add", "Sub", "Mul"):
            y = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul}[k](a[0], a[1])
        elif k == "Concat":
            y = torch.cat(a, dim=at["axis"])
        elif k == "ReduceSum":
            y = a[0].sum(dim=tuple(at["axes"]), keepdim=bool(at.get("keepdims", 1)))
        elif k == "RandomNormalLike":
            y = torch.zeros_like(a[0])  # a prior sample: no part of the loss
        else:
            raise ValueError(k)
        env[n["outputs"][0]] = y
    return env


def torch_loss(model, env):
    loss = 0
    terms = model["training"]["loss"].get("terms", [model["training"]["loss"]])
    for t in terms:
        y = env[t["output"]]
        if t["kind"] == "mse":
            v = torch.mean((y - env[t["target"]["input"]]) ** 2)
        else:  # tensor, batchmean
            v = y.sum() / y.shape[0]
        loss = loss + t.get("weight", 1.0) * v
    return loss


def train(model, values, data, shuffled=False):
    tr = model["training"]
    params = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    consts = {p["name"]: torch.tensor(np.array(p["init"]["values"], dtype=np.float32)
                                      .reshape(p["shape"]))
              for p in model["params"] if p.get("role") == "constant"}
    opt = torch.optim.Adam(list(params.values()), lr=tr["optimizer"]["lr"])
    losses = []
    for step in range(5):
        # the trainer's order: one batch an epoch, shuffled by (seed, epoch); else as stored
        order = trainer_order(len(data["x"]), tr["seed"], step) if shuffled else slice(None)
        env = dict(consts, **params, **{k: torch.tensor(v[order]) for k, v in data.items()})
        for j, name in enumerate(tr.get("noise", [])):
            shape = (tr["batch_size"],) + tuple(data_shape(model, name)[1:])
            env[name] = torch.tensor(normal_noise(tr["seed"], step, NOISE_SALT + j, shape))
        opt.zero_grad()
        loss = torch_loss(model, run_graph(model, env))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses, dtype=np.float32), {k: v.detach().numpy() for k, v in params.items()}


def data_shape(model, name):
    return next(i["shape"] for i in model["inputs"] if i["name"] == name)


def write_case(name, model, values, data, labels):
    losses, final = train(model, values, data)
    # The same 5 steps as a generated trainer runs them (--train x.npy,labels.npy --epochs 5):
    # labels feed the CVAE's cond one-hot.
    t_losses, t_final = train(model, values, data, shuffled=True)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_model(os.path.join(d, "model.json"), model)
    for k, v in data.items():
        save_npy(os.path.join(d, k + ".npy"), v)
    save_npy(os.path.join(d, "labels.npy"), labels)
    save_npy(os.path.join(d, "losses.npy"), losses)
    write_safetensors(os.path.join(d, "final.safetensors"), final)
    save_npy(os.path.join(d, "trainer_losses.npy"), t_losses)
    write_safetensors(os.path.join(d, "trainer_final.safetensors"), t_final)
    print(name, losses, t_losses)


def noise_case():
    """NormalNoise alone: seed and step as inputs, (3, 5) f32 draws; compared exactly."""
    d = os.path.join(OUT, "noise")
    shutil.rmtree(d, ignore_errors=True)
    seed, step, salt = 1234567, 42, NOISE_SALT + 1
    write_model(os.path.join(d, "model.json"), {
        "format": "kiln-model", "version": 1, "name": "noise",
        "doc": "NormalNoise against numpy: tools/goldens_recipes.py",
        "inputs": [{"name": "seed", "dtype": "i64", "shape": [1]},
                   {"name": "step", "dtype": "i64", "shape": [1]}],
        "outputs": [{"name": "y"}], "params": [],
        "nodes": [{"op": "NormalNoise", "name": "y", "inputs": ["seed", "step"], "outputs": ["y"],
                   "attrs": {"shape": [3, 5], "salt": salt}}]})
    save_npy(os.path.join(d, "seed.npy"), np.array([seed], dtype=np.int64))
    save_npy(os.path.join(d, "step.npy"), np.array([step], dtype=np.int64))
    save_npy(os.path.join(d, "y.npy"), normal_noise(seed, step, salt, (3, 5)))


def goldens():
    noise_case()
    N, D, H, L, K = 4, 12, 6, 3, 3
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (N, D)).astype(np.float32)
    labels = rng.integers(0, K, N).astype(np.int64)
    cond = np.eye(K, dtype=np.float32)[labels]
    values = {}
    write_case("autoencoder", ae_model("ae_tiny", D, H, L, N, values), values, {"x": x}, labels)
    cases = [("vae", {}), ("cvae", {"K": K}), ("beta_vae", {"beta": 4.0}),
             ("tilted_vae", {"tau": 2.0})]
    for name, kw in cases:
        values = {}
        m = vae_model(name + "_tiny", "recipe parity: tools/goldens_recipes.py", D, H, L, N,
                      prior=False, values=values, seed=len(name), lr=0.01, **kw)
        data = {"x": x}
        if kw.get("K"):
            data["cond"] = cond
        write_case(name, m, values, data, labels)
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("autoencoder\n" + "".join(c + "\n" for c, _ in cases))


def samples():
    root = os.path.join(repo_root(), "samples")
    write_model(os.path.join(root, "beta_vae.json"), vae_model(
        "beta_vae", "beta-VAE (784 -> 256 -> z of 10 -> 256 -> 784), beta 4; prior samples and a "
        "latent traversal as outputs; training: docs/models.md", 784, 256, 10, 64, beta=4.0,
        traversal=True, seed=41))
    write_model(os.path.join(root, "tilted_vae.json"), vae_model(
        "tilted_vae", "tilted VAE (784 -> 256 -> z of 16 -> 256 -> 784), prior ~ exp(tau |z|) "
        "N(0, I), tau 4; training: docs/models.md", 784, 256, 16, 64, tau=4.0, seed=43))


if __name__ == "__main__":
    torch.manual_seed(0)
    if "--samples" in sys.argv:
        samples()
    else:
        goldens()

#!/usr/bin/python3
"""Writes the golden cases of the sequence ops (RNN, LSTM, GRU): tests/goldens/ops/seq_<case>/ with

    model.json                 a single-node Kiln model named op_seq_<case> (weights inline, or in
                               weights.safetensors when a param has >= 2000 elements)
    <input>.npy                one per model input (random float32, seeded from the case name)
    y.npy, y_h.npy, y_c.npy    the outputs the node lists

and tests/goldens/ops/cases-seq.txt with one line `<case> <op>` per case.

Every case is computed twice, independently:
  - by `np_recurrent`, a literal numpy (float64) transcription of the ONNX equations, on the
    weights in ONNX layout (gates iofc for LSTM, zrh for GRU), and
  - when PyTorch can express the case, by torch.nn.RNN / LSTM / GRU, whose weights are the same
    ONNX weights permuted into PyTorch's gate order (LSTM ifgo, GRU rzn). A reverse-only direction
    runs PyTorch forward on X reversed in time; sequence_lens go through pack_padded_sequence.
Both must agree within 1e-5 (so the gate permutation is checked, not assumed); the golden is
PyTorch's float32 result when there is one and the numpy result rounded to float32 otherwise:
GRU with linear_before_reset = 0 (PyTorch implements 1 only), peepholes, clip, activations other
than tanh/relu for RNN and the defaults for LSTM/GRU.

Run: /usr/bin/python3 tools/goldens_seq.py     (rewrites the seq_* cases and cases-seq.txt only)
"""

import glob
import os
import shutil
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

INLINE_MAX = 2000
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
CASES = []


# ---------------------------------------------------------------- ONNX reference (numpy, literal)

def activation(name, alpha=None, beta=None):
    """The ONNX activation `name` as a function; alpha/beta default as in the ONNX operators."""
    if name == "Sigmoid":
        return lambda x: 1 / (1 + np.exp(-x))
    if name == "Tanh":
        return np.tanh
    if name == "Relu":
        return lambda x: np.maximum(x, 0)
    if name == "HardSigmoid":
        a, b = 0.2 if alpha is None else alpha, 0.5 if beta is None else beta
        return lambda x: np.maximum(0, np.minimum(1, a * x + b))
    if name == "LeakyRelu":
        a = 0.01 if alpha is None else alpha
        return lambda x: np.where(x >= 0, x, a * x)
    raise ValueError(name)


def np_recurrent(op, x, W, R, B=None, lens=None, h0=None, c0=None, P=None, direction="forward",
                 acts=None, clip=None, lbr=0):
    """ONNX RNN/GRU/LSTM (layout 0). acts: per direction, a list of (name, alpha, beta) for f[, g,
    h]. Returns Y (T, D, B, H), Y_h (D, B, H), Y_c (D, B, H) in float64."""
    x, W, R = (a.astype(np.float64) for a in (x, W, R))
    T, N, _ = x.shape
    D = 2 if direction == "bidirectional" else 1
    H = R.shape[-1]
    G = GATES[op]
    if B is None:
        B = np.zeros((D, 2 * G * H))
    if acts is None:
        acts = [[(a, None, None) for a in DEFAULT_ACTS[op]]] * D
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    Y = np.zeros((T, D, N, H))
    Yh = np.zeros((D, N, H))
    Yc = np.zeros((D, N, H))
    for d in range(D):
        f = [activation(*a) for a in acts[d]]
        Wb, Rb = B[d, :G * H].astype(np.float64), B[d, G * H:].astype(np.float64)
        backward = direction == "reverse" or d == 1
        for b in range(N):
            n = T if lens is None else int(lens[b])
            h = np.zeros(H) if h0 is None else h0[d, b].astype(np.float64)
            c = np.zeros(H) if c0 is None else c0[d, b].astype(np.float64)
            for t in (reversed(range(n)) if backward else range(n)):
                xw = W[d] @ x[t, b] + Wb  # (G*H): X W^T + Wb, gates in ONNX order
                hr = R[d] @ h + Rb        # (G*H): H R^T + Rb
                if op == "RNN":
                    h = f[0](cl(xw + hr))
                elif op == "LSTM":
                    p = np.zeros(3 * H) if P is None else P[d].astype(np.float64)
                    pi, po, pf = p[:H], p[H:2 * H], p[2 * H:]
                    gi, go, gf, gc = (xw + hr).reshape(4, H)
                    i = f[0](cl(gi + pi * c))
                    ft = f[0](cl(gf + pf * c))
                    ct = f[1](cl(gc))
                    c = ft * c + i * ct
                    o = f[0](cl(go + po * c))
                    h = o * f[2](c)
                else:  # GRU
                    xz, xr, xh = xw.reshape(3, H)
                    hz, hr_, hh = hr.reshape(3, H)
                    z = f[0](cl(xz + hz))
                    r = f[0](cl(xr + hr_))
                    if lbr:
                        ht = f[1](cl(xh + r * hh))
                    else:  # (r * H) R_h^T + Rb_h
                        Rh = R[d, 2 * H:]
                        ht = f[1](cl(xh + Rh @ (r * h) + Rb[2 * H:]))
                    h = (1 - z) * ht + z * h
                Y[t, d, b] = h
            Yh[d, b] = h
            Yc[d, b] = c
    return Y, Yh, Yc


# ---------------------------------------------------------------- PyTorch (weights permuted)

# PyTorch's gate blocks, as indices into the ONNX blocks: LSTM i,f,g(=c),o from i,o,f,c; GRU
# r,z,n(=h) from z,r,h.
TORCH_ORDER = {"RNN": [0], "LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}


def to_torch_layout(op, m):
    """(G*H, ...) in ONNX gate order -> PyTorch's gate order."""
    H = m.shape[0] // GATES[op]
    return np.concatenate([m[g * H:(g + 1) * H] for g in TORCH_ORDER[op]], axis=0)


def torch_recurrent(op, x, W, R, B=None, lens=None, h0=None, c0=None, direction="forward",
                    nonlinearity="tanh"):
    """The same computation with torch.nn.{RNN,LSTM,GRU}; returns Y, Y_h, Y_c as float32."""
    T, N, I = x.shape
    D = 2 if direction == "bidirectional" else 1
    H = R.shape[-1]
    G = GATES[op]
    kw = dict(input_size=I, hidden_size=H, bias=B is not None, bidirectional=D == 2)
    if op == "RNN":
        kw["nonlinearity"] = nonlinearity
    mod = getattr(torch.nn, op)(**kw)
    with torch.no_grad():
        for d in range(D):
            sfx = "_reverse" if d == 1 else ""
            getattr(mod, "weight_ih_l0" + sfx).copy_(torch.from_numpy(to_torch_layout(op, W[d])))
            getattr(mod, "weight_hh_l0" + sfx).copy_(torch.from_numpy(to_torch_layout(op, R[d])))
            if B is not None:
                getattr(mod, "bias_ih_l0" + sfx).copy_(
                    torch.from_numpy(to_torch_layout(op, B[d, :G * H])))
                getattr(mod, "bias_hh_l0" + sfx).copy_(
                    torch.from_numpy(to_torch_layout(op, B[d, G * H:])))
    zeros = np.zeros((D, N, H), np.float32)
    hx = torch.from_numpy(zeros if h0 is None else h0)
    if op == "LSTM":
        hx = (hx, torch.from_numpy(zeros if c0 is None else c0))
    xt = torch.from_numpy(x.copy())
    if direction == "reverse":
        assert lens is None, "reverse-only runs forward on X reversed in time"
        xt = torch.flip(xt, [0])
    with torch.no_grad():
        if lens is not None:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.tensor(lens, dtype=torch.int64), enforce_sorted=False)
            y, state = mod(packed, hx)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T)
        else:
            y, state = mod(xt, hx)
    if direction == "reverse":
        y = torch.flip(y, [0])
    y = y.numpy().reshape(T, N, D, H).transpose(0, 2, 1, 3)
    yh, yc = (state if op == "LSTM" else (state, None))
    return (np.ascontiguousarray(y), yh.numpy(), None if yc is None else yc.numpy())


# ---------------------------------------------------------------- cases

class Case:
    """One node. Weights are drawn in ONNX layout; `torch` says whether PyTorch can compute it."""

    def __init__(self, name, op, T, N, I, H, direction="forward", bias=True, lens=None,
                 init_h=None, init_c=None, peephole=False, acts=None, act_attrs=None, clip=None,
                 lbr=None, outputs=None, torch_ok=True, nonlinearity="tanh", doc=None):
        self.name, self.op, self.doc = "seq_" + name, op, doc
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        D = 2 if direction == "bidirectional" else 1
        G = GATES[op]
        scale = 1.0 / np.sqrt(H)

        def rand(*shape, s=1.0):
            return (rng.uniform(-1, 1, shape) * s).astype(np.float32)

        self.x = rng.standard_normal((T, N, I)).astype(np.float32)
        self.W = rand(D, G * H, I, s=1.5 * scale)
        self.R = rand(D, G * H, H, s=1.5 * scale)
        self.B = rand(D, 2 * G * H, s=0.5) if bias else None
        self.lens = None if lens is None else np.array(lens, np.int32)
        self.h0 = rand(D, N, H) if init_h else None
        self.c0 = rand(D, N, H) if init_c else None
        self.P = rand(D, 3 * H, s=0.5) if peephole else None
        self.init_h, self.init_c = init_h, init_c  # "input" or "param"
        self.direction, self.H = direction, H
        self.acts, self.clip, self.lbr = acts, clip, lbr
        self.attrs = {"hidden_size": H}
        if direction != "forward":
            self.attrs["direction"] = direction
        if act_attrs:
            self.attrs.update(act_attrs)
        if clip is not None:
            self.attrs["clip"] = clip
        if lbr is not None:
            self.attrs["linear_before_reset"] = lbr
        self.outputs = outputs or (["y", "y_h", "y_c"] if op == "LSTM" else ["y", "y_h"])
        self.torch_ok, self.nonlinearity = torch_ok, nonlinearity
        CASES.append(self)

    def node_inputs(self):
        """[(node input name, array, 'input' | 'param' | None)] in ONNX order, trailing absent
        inputs dropped."""
        slots = [("x", self.x, "input"), ("w", self.W, "param"), ("r", self.R, "param"),
                 ("b", self.B, "param"), ("seq_lens", self.lens, "param"),
                 ("h0", self.h0, self.init_h)]
        if self.op == "LSTM":
            slots += [("c0", self.c0, self.init_c), ("p", self.P, "param")]
        while slots[-1][1] is None:
            slots.pop()
        return slots

    def compute(self):
        ref = np_recurrent(self.op, self.x, self.W, self.R, self.B, self.lens, self.h0, self.c0,
                           self.P, self.direction, self.acts, self.clip, self.lbr or 0)
        ref = dict(zip(["y", "y_h", "y_c"], ref))
        if not self.torch_ok:
            return {k: ref[k].astype(np.float32) for k in self.outputs}, None
        got = torch_recurrent(self.op, self.x, self.W, self.R, self.B,
                              None if self.lens is None else self.lens.tolist(), self.h0, self.c0,
                              self.direction, self.nonlinearity)
        got = dict(zip(["y", "y_h", "y_c"], got))
        err = max(float(np.max(np.abs(got[k] - ref[k]))) for k in self.outputs)
        assert err < 1e-5, (self.name, "torch vs numpy ONNX reference", err)
        return {k: got[k] for k in self.outputs}, err


def write_case(root, c):
    d = os.path.join(root, c.name)
    outs, err = c.compute()
    inputs, params, weights, names = [], [], {}, []
    for name, a, kind in c.node_inputs():
        names.append(name if a is not None else "")
        if a is None:
            continue
        if kind == "input":
            inputs.append({"name": name, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)})
            kiln_io.save_npy(os.path.join(d, f"{name}.npy"), a)
            continue
        p = {"name": name, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
        if a.size >= INLINE_MAX:
            weights[name] = a
        elif a.dtype == np.float32:
            p["init"] = {"kind": "values", "values": kiln_io.f32_values(a)}
        else:
            p["init"] = {"kind": "values", "values": kiln_io.int_values(a)}
        params.append(p)
    node = {"op": c.op, "name": c.op.lower(), "inputs": names, "outputs": c.outputs,
            "attrs": c.attrs}
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    if c.doc:
        model["doc"] = c.doc
    if weights:
        model["weights"] = "weights.safetensors"
        kiln_io.write_safetensors(os.path.join(d, "weights.safetensors"), weights)
    model["inputs"] = inputs
    model["outputs"] = [{"name": k, "dtype": "f32", "shape": list(outs[k].shape)} for k in c.outputs]
    if params:
        model["params"] = params
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for k in c.outputs:
        assert np.all(np.isfinite(outs[k])), c.name
        kiln_io.save_npy(os.path.join(d, f"{k}.npy"), outs[k])
    return err


def rnn_cases():
    Case("rnn_fwd", "RNN", 5, 2, 3, 4)
    Case("rnn_rev_init", "RNN", 4, 2, 3, 5, direction="reverse", init_h="input")
    Case("rnn_bidir_relu", "RNN", 4, 3, 2, 4, direction="bidirectional", bias=False,
         init_h="param", acts=[[("Relu", None, None)]] * 2, act_attrs={"activations": "Relu"},
         nonlinearity="relu")
    Case("rnn_lens_bidir", "RNN", 5, 3, 3, 4, direction="bidirectional", lens=[5, 3, 1],
         doc="per-batch sequence lengths")
    Case("rnn_lens_rev", "RNN", 4, 2, 3, 3, direction="reverse", lens=[2, 4], init_h="input",
         torch_ok=False, doc="reverse within each sequence's length")
    Case("rnn_clip_leaky", "RNN", 4, 2, 3, 4, clip=0.7, acts=[[("LeakyRelu", 0.1, None)]],
         act_attrs={"activations": "LeakyRelu", "activation_alpha": [0.1]}, torch_ok=False)
    Case("rnn_y_only", "RNN", 3, 2, 3, 4, outputs=["y"], doc="Y_h not requested")


def lstm_cases():
    Case("lstm_fwd", "LSTM", 5, 2, 3, 4)
    Case("lstm_nobias", "LSTM", 4, 1, 3, 3, bias=False)
    Case("lstm_rev_init", "LSTM", 4, 2, 3, 4, direction="reverse", init_h="input", init_c="input")
    Case("lstm_bidir_init", "LSTM", 4, 3, 2, 5, direction="bidirectional", init_h="param",
         init_c="input")
    Case("lstm_lens_bidir", "LSTM", 5, 3, 3, 4, direction="bidirectional", lens=[4, 2, 5],
         init_h="input", init_c="input")
    Case("lstm_peephole", "LSTM", 4, 2, 3, 4, direction="bidirectional", peephole=True,
         init_h="input", init_c="input", torch_ok=False)
    Case("lstm_peephole_nobias", "LSTM", 3, 2, 2, 3, bias=False, peephole=True, torch_ok=False)
    Case("lstm_clip", "LSTM", 5, 2, 3, 4, clip=0.5, init_c="input", torch_ok=False)
    Case("lstm_acts", "LSTM", 4, 2, 3, 4, direction="bidirectional",
         acts=[[("HardSigmoid", 0.25, 0.4), ("Tanh", None, None), ("Relu", None, None)],
               [("Sigmoid", None, None), ("LeakyRelu", 0.2, None), ("Tanh", None, None)]],
         act_attrs={"activations": "HardSigmoid,Tanh,Relu,Sigmoid,LeakyRelu,Tanh",
                    "activation_alpha": [0.25, 0.2], "activation_beta": [0.4]},
         torch_ok=False, doc="different activations per direction; alpha/beta consumed in order")
    Case("lstm_yh_only", "LSTM", 3, 2, 3, 4, outputs=["y", "y_h"], doc="Y_c not requested")
    Case("lstm_large", "LSTM", 8, 4, 24, 32, direction="bidirectional", init_h="input",
         init_c="input", doc="big enough for the parallel loop over directions")


def gru_cases():
    Case("gru_lbr1_fwd", "GRU", 5, 2, 3, 4, lbr=1)
    Case("gru_lbr1_rev_init", "GRU", 4, 2, 3, 4, lbr=1, direction="reverse", init_h="input")
    Case("gru_lbr1_bidir", "GRU", 4, 3, 2, 5, lbr=1, direction="bidirectional", init_h="param")
    Case("gru_lbr1_lens", "GRU", 5, 3, 3, 4, lbr=1, direction="bidirectional", lens=[2, 5, 3])
    Case("gru_lbr1_nobias", "GRU", 4, 2, 3, 3, lbr=1, bias=False)
    Case("gru_lbr0_fwd", "GRU", 5, 2, 3, 4, torch_ok=False, doc="linear_before_reset 0 (default)")
    Case("gru_lbr0_rev_init", "GRU", 4, 2, 3, 4, lbr=0, direction="reverse", init_h="input",
         torch_ok=False)
    Case("gru_lbr0_bidir_init", "GRU", 4, 3, 2, 5, direction="bidirectional", init_h="input",
         torch_ok=False)
    Case("gru_lbr0_lens", "GRU", 5, 3, 3, 4, direction="reverse", lens=[3, 5, 1], torch_ok=False)
    Case("gru_lbr0_clip_nobias", "GRU", 4, 2, 3, 4, bias=False, clip=0.4, torch_ok=False)
    Case("gru_lbr1_clip_acts", "GRU", 4, 2, 3, 4, lbr=1, clip=0.8,
         acts=[[("HardSigmoid", None, None), ("LeakyRelu", None, None)]],
         act_attrs={"activations": "HardSigmoid,LeakyRelu"},
         torch_ok=False, doc="HardSigmoid and LeakyRelu with their default alpha and beta")
    Case("gru_large", "GRU", 6, 8, 16, 24, lbr=1, init_h="input",
         doc="big enough for the parallel loop over the batch")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    rnn_cases()
    lstm_cases()
    gru_cases()
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for old in glob.glob(os.path.join(root, "seq_*")):
        shutil.rmtree(old)
    worst = 0.0
    for c in CASES:
        err = write_case(root, c)
        worst = max(worst, err or 0.0)
    with open(os.path.join(root, "cases-seq.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {os.path.relpath(root, repo)}/seq_* "
          f"(torch vs numpy ONNX reference: max |diff| {worst:.2e})")


if __name__ == "__main__":
    main()

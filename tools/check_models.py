#!/usr/bin/python3
"""Checks the committed models and goldens without PyTorch's help:

  1. every model JSON is validated strictly against docs/model-format.md (unknown fields, types,
     names, dtypes, shapes, init kinds, weights present with exactly the declared dtype/shape);
  2. each model is run by a small numpy interpreter of the ONNX ops (float64) on its golden inputs
     and compared with the golden outputs (the batch is run in model-sized chunks, as Kiln
     binaries do).

Run: /usr/bin/python3 tools/check_models.py      (exit status 0 when everything passes)
"""

import json
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402
from make_op_goldens import np_conv, np_pool, auto_pads  # noqa: E402

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DTYPES = {"f32": np.float32, "f64": np.float64, "i8": np.int8, "u8": np.uint8, "i32": np.int32,
          "i64": np.int64, "bool": np.bool_}
INIT_FIELDS = {"zeros": set(), "ones": set(), "constant": {"value"}, "values": {"values"},
               "normal": {"mean", "std", "seed"}, "uniform": {"low", "high", "seed"},
               "xavier_uniform": {"gain", "seed"}, "xavier_normal": {"gain", "seed"},
               "kaiming_uniform": {"a", "seed"}, "kaiming_normal": {"a", "seed"}}
INIT_REQUIRED = {"constant": {"value"}, "values": {"values"}}
OPS = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax", "Gemm", "MatMul", "Conv",
       "MaxPool", "AveragePool", "Flatten", "Reshape"}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


def validate(path, m):
    errs = []

    def err(where, msg):
        errs.append(f"{path}: {where}: {msg}")

    def fields(obj, where, required, optional=()):
        if not isinstance(obj, dict):
            err(where, "expected an object")
            return False
        for k in obj:
            if k not in required and k not in optional:
                err(f"{where}.{k}", "unknown field")
        for k in required:
            if k not in obj:
                err(where, f"missing field {k}")
        return True

    def shape_ok(s, where):
        if not (isinstance(s, list) and len(s) <= 8 and all(is_int(d) and d >= 1 for d in s)):
            err(where, "expected a list of integers >= 1, rank <= 8")

    fields(m, "$", {"format", "version", "name", "inputs", "outputs", "nodes"},
           {"doc", "weights", "params", "training"})
    if m.get("format") != "kiln-model":
        err("format", "expected kiln-model")
    if m.get("version") != 1 or not is_int(m.get("version")):
        err("version", "expected 1")
    if not IDENT.match(str(m.get("name", ""))):
        err("name", "not a C identifier")
    if "doc" in m and not isinstance(m["doc"], str):
        err("doc", "expected a string")
    if "training" in m and m["training"] != {}:
        err("training", "must be {} in v1")
    tensors = set()

    def new_tensor(name, where):
        if not isinstance(name, str) or not name:
            err(where, "expected a non-empty string")
        elif name in tensors:
            err(where, f"duplicate tensor name {name}")
        tensors.add(name)

    for i, v in enumerate(m.get("inputs", [])):
        w = f"inputs[{i}]"
        if fields(v, w, {"name", "dtype", "shape"}):
            new_tensor(v.get("name"), w + ".name")
            if v.get("dtype") not in DTYPES:
                err(w + ".dtype", "unknown dtype")
            shape_ok(v.get("shape"), w + ".shape")
    weights = None
    if "weights" in m:
        wp = os.path.join(os.path.dirname(path), m["weights"])
        if not os.path.exists(wp):
            err("weights", f"{wp} not found")
        else:
            weights = kiln_io.read_safetensors(wp)
    for i, p in enumerate(m.get("params", [])):
        w = f"params[{i}]"
        if not fields(p, w, {"name", "dtype", "shape"}, {"init", "role"}):
            continue
        if p.get("role", "weight") not in ("weight", "buffer", "constant"):
            err(w + ".role", 'expected "weight", "buffer" or "constant"')
        new_tensor(p.get("name"), w + ".name")
        if p.get("dtype") not in DTYPES:
            err(w + ".dtype", "unknown dtype")
        shape_ok(p.get("shape"), w + ".shape")
        numel = math.prod(p.get("shape", []))
        if "init" in p:
            init = p["init"]
            kind = init.get("kind") if isinstance(init, dict) else None
            if kind not in INIT_FIELDS:
                err(w + ".init.kind", "unknown kind")
                continue
            fields(init, w + ".init", {"kind"} | INIT_REQUIRED.get(kind, set()), INIT_FIELDS[kind])
            if kind == "values":
                vals = init.get("values")
                if not (isinstance(vals, list) and len(vals) == numel and all(is_num(x) for x in vals)):
                    err(w + ".init.values", f"expected {numel} numbers")
                if p["dtype"] != "f32" and p["dtype"] != "f64" and not all(is_int(x) for x in vals):
                    err(w + ".init.values", "expected integers")
        else:
            if weights is None or p["name"] not in weights:
                err(w, "not in the weights file")
            else:
                a = weights[p["name"]]
                if a.dtype != DTYPES[p["dtype"]] or list(a.shape) != p["shape"]:
                    err(w, f"weights file has {a.dtype} {list(a.shape)}")
    node_names = set()
    for i, n in enumerate(m.get("nodes", [])):
        w = f"nodes[{i}]"
        if not fields(n, w, {"op", "inputs", "outputs"}, {"name", "attrs"}):
            continue
        if n["op"] not in OPS:
            err(w + ".op", f"unsupported op {n['op']}")
        if "name" in n:
            if n["name"] in node_names:
                err(w + ".name", "duplicate node name")
            node_names.add(n["name"])
        for j, o in enumerate(n["outputs"]):
            new_tensor(o, f"{w}.outputs[{j}]")
        for k, v in n.get("attrs", {}).items():
            ok = is_num(v) or isinstance(v, str) or (isinstance(v, list) and all(is_num(x) for x in v))
            if not ok:
                err(f"{w}.attrs.{k}", "expected a number, string or list of numbers")
    for i, n in enumerate(m.get("nodes", [])):
        for j, t in enumerate(n.get("inputs", [])):
            if t != "" and t not in tensors:
                err(f"nodes[{i}].inputs[{j}]", f"unknown tensor {t}")
    for i, o in enumerate(m.get("outputs", [])):
        w = f"outputs[{i}]"
        if fields(o, w, {"name"}, {"dtype", "shape"}):
            if o["name"] not in tensors:
                err(w + ".name", "no such tensor")
            if "shape" in o:
                shape_ok(o["shape"], w + ".shape")
    return errs, weights


def run(m, weights, feeds):
    env = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    for p in m.get("params", []):
        if "init" in p:
            init = p["init"]
            dt = DTYPES[p["dtype"]]
            if init["kind"] == "values":
                a = np.array(init["values"], dtype=dt).reshape(p["shape"])
            elif init["kind"] == "constant":
                a = np.full(p["shape"], init["value"], dtype=dt)
            else:
                raise NotImplementedError(init["kind"])
        else:
            a = weights[p["name"]]
        env[p["name"]] = a.astype(np.float64) if a.dtype == np.float32 else a
    pending = list(m["nodes"])
    while pending:  # nodes may be in any order
        ready = [n for n in pending if all(t == "" or t in env for t in n["inputs"])]
        assert ready, "graph has a cycle or a missing tensor"
        for n in ready:
            pending.remove(n)
            args = [env[t] if t else None for t in n["inputs"]]
            env[n["outputs"][0]] = eval_node(n["op"], n.get("attrs", {}), args)
    return {o["name"]: env[o["name"]] for o in m["outputs"]}


def eval_node(op, a, x):
    if op in ("Add", "Sub", "Mul", "Div"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x[0], x[1])
    if op == "Relu":
        return np.maximum(x[0], 0)
    if op == "Sigmoid":
        return 1 / (1 + np.exp(-x[0]))
    if op == "Tanh":
        return np.tanh(x[0])
    if op == "Softmax":
        ax = a.get("axis", -1)
        e = np.exp(x[0] - x[0].max(axis=ax, keepdims=True))
        return e / e.sum(axis=ax, keepdims=True)
    if op == "Gemm":
        A = x[0].T if a.get("transA", 0) else x[0]
        B = x[1].T if a.get("transB", 0) else x[1]
        y = a.get("alpha", 1.0) * (A @ B)
        if len(x) > 2 and x[2] is not None:
            y = y + a.get("beta", 1.0) * x[2]
        return y
    if op == "MatMul":
        return np.matmul(x[0], x[1])
    if op == "Flatten":
        ax = a.get("axis", 1)
        ax = ax + x[0].ndim if ax < 0 else ax
        return x[0].reshape(math.prod(x[0].shape[:ax]), -1)
    if op == "Reshape":
        shape = [x[0].shape[i] if s == 0 else int(s) for i, s in enumerate(x[1])]
        return x[0].reshape(shape)
    if op == "Conv":
        w = x[1]
        k = a.get("kernel_shape", list(w.shape[2:]))
        s = a.get("strides", [1, 1])
        d = a.get("dilations", [1, 1])
        mode = a.get("auto_pad", "NOTSET")
        pads = a.get("pads", [0, 0, 0, 0]) if mode == "NOTSET" else auto_pads(x[0].shape[2:], k, s, d, mode)
        b = x[2] if len(x) > 2 else None
        return np_conv(x[0], w, b, s, pads, d, a.get("group", 1))
    if op in ("MaxPool", "AveragePool"):
        k = a["kernel_shape"]
        return np_pool(x[0], "max" if op == "MaxPool" else "avg", k, a.get("strides", [1, 1]),
                       a.get("pads", [0, 0, 0, 0]), a.get("dilations", [1, 1]), a.get("ceil_mode", 0),
                       a.get("count_include_pad", 0))
    raise NotImplementedError(op)


def check(path, golden_dir, rtol=1e-4, atol=1e-5):
    with open(path) as f:
        m = json.load(f)
    errs, weights = validate(path, m)
    if errs:
        return errs
    feeds = {}
    for v in m["inputs"]:
        a = np.load(os.path.join(golden_dir, v["name"] + ".npy"))
        if a.dtype != DTYPES[v["dtype"]] or list(a.shape[1:]) != v["shape"][1:] or a.shape[0] % v["shape"][0]:
            return [f"{golden_dir}/{v['name']}.npy: {a.dtype} {a.shape} does not fit {v}"]
        feeds[v["name"]] = a
    b0 = m["inputs"][0]["shape"][0]
    exact = all(list(feeds[v["name"]].shape) == v["shape"] for v in m["inputs"])
    chunks = 1 if exact else feeds[m["inputs"][0]["name"]].shape[0] // b0
    outs = {o["name"]: [] for o in m["outputs"]}
    for c in range(chunks):
        r = run(m, weights, feeds if exact else {k: v[c * b0:(c + 1) * b0] for k, v in feeds.items()})
        for k in outs:
            outs[k].append(r[k])
    errs = []
    for o in m["outputs"]:
        got = np.concatenate(outs[o["name"]]) if chunks > 1 else outs[o["name"]][0]
        want = np.load(os.path.join(golden_dir, o["name"] + ".npy"))
        if "shape" in o and list(got.shape[1:]) != o["shape"][1:]:
            errs.append(f"{path}: outputs {o['name']}: declared {o['shape']}, computed {list(got.shape)}")
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
            diff = np.max(np.abs(got - want)) if got.shape == want.shape else "shape"
            errs.append(f"{path}: {o['name']} differs from the golden ({diff})")
    return errs


def main():
    root = kiln_io.repo_root()
    g = os.path.join(root, "tests", "goldens")
    todo = [(os.path.join(root, "samples", f"{n}.json"), os.path.join(g, n)) for n in ("lenet5", "mlp", "xor_mlp")]
    with open(os.path.join(g, "ops", "cases.txt")) as f:
        for line in f:
            case = line.split()[0]
            todo.append((os.path.join(g, "ops", case, "model.json"), os.path.join(g, "ops", case)))
    errs = []
    for path, gd in todo:
        errs += check(path, gd)
    for e in errs:
        print(e)
    print(f"checked {len(todo)} models: {'OK' if not errs else f'{len(errs)} problems'}")
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()

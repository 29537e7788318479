"""Small I/O helpers shared by the Kiln reference-data scripts.

No third-party dependencies beyond numpy: .safetensors is written and read by hand, .npy goes through
numpy.save, and model JSON is written in a stable, diff-friendly layout (one param / node per line).

    write_safetensors(path, {"name": np.ndarray, ...})
    read_safetensors(path) -> {"name": np.ndarray, ...}
    save_npy(path, array)
    write_model(path, model_dict)
    f32_values(array) -> list of Python floats that round-trip the float32 values exactly
"""

import json
import os
import shutil
import struct

import numpy as np

# safetensors dtype strings for the numpy dtypes Kiln supports.
_ST_DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("bool"): "BOOL",
}
_NP_DTYPES = {v: k for k, v in _ST_DTYPES.items()}

# Kiln JSON dtype names.
KILN_DTYPES = {
    np.dtype("float32"): "f32",
    np.dtype("float64"): "f64",
    np.dtype("int8"): "i8",
    np.dtype("uint8"): "u8",
    np.dtype("int32"): "i32",
    np.dtype("int64"): "i64",
    np.dtype("bool"): "bool",
}


def _as_numpy(a):
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _ensure_dir(path):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)


def write_safetensors(path, tensors):
    """Writes {name: array} as a .safetensors file (tensors in the given order, no __metadata__)."""
    header = {}
    blobs = []
    offset = 0
    for name, a in tensors.items():
        a = _as_numpy(a)
        if a.dtype not in _ST_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _ST_DTYPES[a.dtype],
            "shape": [int(d) for d in a.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)  # pad with spaces to a multiple of 8
    _ensure_dir(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """Reads a .safetensors file written by write_safetensors (or any conforming writer)."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt = _NP_DTYPES[e["dtype"]].newbyteorder("<")
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + end], dtype=dt).reshape(e["shape"]).copy()
    return out


def save_npy(path, a):
    """Saves a C-ordered little-endian .npy (numpy's v1 header)."""
    a = np.ascontiguousarray(_as_numpy(a))
    _ensure_dir(path)
    np.save(path, a, allow_pickle=False)


def f32_values(a):
    """Row-major values of a float32 array as Python floats. repr() of the float64 equal to each
    float32 is exact, so parsing the JSON with strtod and casting to float gives the same bits."""
    a = _as_numpy(a).astype(np.float32).reshape(-1)
    out = []
    for v in a.tolist():
        fv = float(v)
        out.append(int(fv) if fv.is_integer() and abs(fv) < 2 ** 24 else fv)
    return out


def int_values(a):
    return [int(v) for v in _as_numpy(a).reshape(-1).tolist()]


def _dump_line(obj):
    return json.dumps(obj, separators=(", ", ": "))


def write_model(path, model):
    """Writes a Kiln model dict: top-level fields one per line, list entries one per line."""
    lines = ["{"]
    items = list(model.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if isinstance(v, list) and v:
            lines.append(f"  {json.dumps(k)}: [")
            for j, e in enumerate(v):
                ecomma = "," if j + 1 < len(v) else ""
                lines.append(f"    {_dump_line(e)}{ecomma}")
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(k)}: {_dump_line(v)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity: it parses
    _ensure_dir(path)
    with open(path, "w") as f:
        f.write(text)


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_op_case(name, op, inputs, attrs, outputs, doc):
    """One golden op case for tests/test_ops.c: tests/goldens/ops/NAME/ with model.json (a single
    node OP over the inputs, named as given, with attrs), INPUT.npy per input and OUTPUT.npy per
    output. inputs and outputs: lists of (name, array). Returns the cases*.txt line."""
    d = os.path.join(repo_root(), "tests", "goldens", "ops", name)
    shutil.rmtree(d, ignore_errors=True)
    def decl(k, v):
        return {"name": k, "dtype": "f32", "shape": list(np.shape(v))}
    model = {"format": "kiln-model", "version": 1, "name": "op_" + name, "doc": doc,
             "inputs": [decl(k, v) for k, v in inputs],
             "outputs": [decl(k, v) for k, v in outputs],
             "params": [],
             "nodes": [{"op": op, "name": "n", "inputs": [k for k, _ in inputs],
                        "outputs": [k for k, _ in outputs], "attrs": attrs}]}
    write_model(os.path.join(d, "model.json"), model)
    for k, v in inputs + outputs:
        save_npy(os.path.join(d, k + ".npy"), np.asarray(v, dtype=np.float32))
    return f"{name} {op}\n"

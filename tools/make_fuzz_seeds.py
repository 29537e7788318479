#!/usr/bin/python3
"""Writes the small seed inputs of the fuzz harnesses (tests/fuzz/seeds/{npy,safetensors,dataset,
main}) with numpy, independently of Kiln's own writers. Run: /usr/bin/python3 tools/make_fuzz_seeds.py
The JSON and ONNX seeds are copies of samples and test fixtures (see tests/fuzz/README.md)."""
import gzip
import io
import json
import os
import struct

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "seeds")
rng = np.random.default_rng(7)


def npy_bytes(a, version=None):
    buf = io.BytesIO()
    if version:
        np.lib.format.write_array(buf, a, version=version)
    else:
        np.save(buf, a)
    return buf.getvalue()


def write(kind, name, data):
    os.makedirs(os.path.join(ROOT, kind), exist_ok=True)
    with open(os.path.join(ROOT, kind, name), "wb") as f:
        f.write(data)


def npy_seeds():
    write("npy", "f32_2x3.npy", npy_bytes(rng.standard_normal((2, 3)).astype(np.float32)))
    write("npy", "i64_scalar.npy", npy_bytes(np.array(5, dtype=np.int64)))
    write("npy", "bool_4.npy", npy_bytes(np.array([1, 0, 1, 1], dtype=bool)))
    write("npy", "f16_3.npy", npy_bytes(np.arange(3, dtype=np.float16)))
    write("npy", "f64_fortran.npy", npy_bytes(np.asfortranarray(np.ones((2, 2)))))
    write("npy", "u8_v2.npy", npy_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3), (2, 0)))


def safetensors_bytes(tensors):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        raw = a.tobytes()
        dt = {np.float32: "F32", np.int64: "I64", np.float16: "F16"}[a.dtype.type]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def safetensors_seeds():
    write("safetensors", "two.safetensors", safetensors_bytes({
        "w": rng.standard_normal((3, 2)).astype(np.float32),
        "step": np.array([4], dtype=np.int64)}))
    write("safetensors", "f16.safetensors", safetensors_bytes({"h": np.ones((2,), dtype=np.float16)}))


def idx_bytes(a):
    code = {np.uint8: 8, np.int32: 0x0C, np.float32: 0x0D}[a.dtype.type]
    head = struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(">%dI" % a.ndim, *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def dataset_seed(fmt, x, y):
    """fuzz_dataset.c layout: format byte, split byte, then x bytes and y bytes."""
    body = x + y
    split = round(len(x) * 255 / len(body)) if body else 0
    # The harness splits at split*(len)/255 (floor); find the byte that lands exactly on len(x).
    for s in range(256):
        if s * len(body) // 255 == len(x):
            split = s
            break
    return bytes([fmt, split]) + body


def dataset_seeds():
    imgs = rng.integers(0, 256, (4, 5, 5), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1], dtype=np.uint8)
    write("dataset", "idx.bin", dataset_seed(0, idx_bytes(imgs), idx_bytes(labels)))
    write("dataset", "idx_gz.bin", dataset_seed(1, gzip.compress(idx_bytes(imgs), mtime=0),
                                                gzip.compress(idx_bytes(labels), mtime=0)))
    x = npy_bytes(rng.standard_normal((4, 3)).astype(np.float32))
    y = npy_bytes(np.array([0, 1, 1, 0], dtype=np.int64))
    write("dataset", "npy.bin", dataset_seed(2, x, y))
    write("dataset", "csv.bin", bytes([3, 0]) + b"a,b,label\n0.5,1.5,1\n2,3,0\n")


def main_seeds():
    x = npy_bytes(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    write("main", "run.bin", b"--input\nin.npy\n--output\nout.npy\0" + x)
    write("main", "named.bin", b"--input\nx=in.npy\n--output\ny=out.npy\n--threads\n1\0" + x)
    write("main", "bench.bin", b"--input\nin.npy\n--bench\n3\0" + x)
    write("main", "help.bin", b"--help")


if __name__ == "__main__":
    npy_seeds()
    safetensors_seeds()
    dataset_seeds()
    main_seeds()

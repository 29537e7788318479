#!/usr/bin/env python3
"""Writes the .safetensors fixtures of tests/bad/ by hand (no numpy, no safetensors package).

    small.safetensors      w: F32 (2, 3) = 0..5, b: F32 (3,) = 0.5, 1.5, 2.5
    truncated.safetensors  the same header, but the data stops after 10 of its 36 bytes

Format: u64 little-endian header length N, N bytes of JSON (padded with spaces to a multiple
of 8), then the raw little-endian tensor data at the offsets the header gives.
Run from anywhere: python3 tools/make_bad_fixtures.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "bad")


def safetensors_bytes(tensors):
    """tensors: list of (name, dtype, shape, data bytes) -> the file's bytes."""
    header, blobs, offset = {}, [], 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    w = struct.pack("<6f", *[float(i) for i in range(6)])
    b = struct.pack("<3f", 0.5, 1.5, 2.5)
    small = safetensors_bytes([("w", "F32", [2, 3], w), ("b", "F32", [3], b)])
    with open(os.path.join(OUT, "small.safetensors"), "wb") as f:
        f.write(small)
    data_start = len(small) - len(w) - len(b)
    with open(os.path.join(OUT, "truncated.safetensors"), "wb") as f:
        f.write(small[: data_start + 10])


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes the small .npy / .safetensors fixtures used by tests/test_runtime.c into
tests/data/runtime/. Run from anywhere with /usr/bin/python3 (needs numpy only).

The values are simple formulas of the flat index i (arange) so that the C tests can recompute them
independently; keep the formulas in sync with the `*_at` helpers in tests/test_runtime.c.
Besides numpy's own writer, the script writes some files by hand (headers in unusual layouts,
broken files) and .safetensors files with struct + json (the format is tiny).
"""

import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                   "runtime")


def path(name):
    return os.path.join(OUT, name)


def save(name, a, version=None):
    """Writes with numpy's own .npy writer (format version chosen by numpy unless given)."""
    with open(path(name), "wb") as f:
        np.lib.format.write_array(f, a, version=version, allow_pickle=False)


def raw_npy(name, header_dict_text, data, version=1):
    """A hand-made .npy: the header text is written verbatim (plus a newline)."""
    text = (header_dict_text + "\n").encode("latin1")
    if version == 1:
        pre = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text))
    else:
        pre = b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text))
    with open(path(name), "wb") as f:
        f.write(pre + text + data)


def i_range(n):
    return np.arange(n)


# ---- the dtype fixtures; formulas of i = 0 .. numel-1 ----
F32 = (i_range(6) * 0.5 - 1.0).astype(np.float32).reshape(2, 3)          # f32: 0.5*i - 1
F64 = (i_range(5) * 0.25 + 1.0).astype(np.float64)                       # f64: 0.25*i + 1, (5,)
I8 = (i_range(8) * 36 - 128).astype(np.int8).reshape(2, 2, 2)            # i8: 36*i - 128
U8 = (i_range(7) * 40 + 7).astype(np.uint8)                              # u8: 40*i + 7 (7..247)
I32 = (i_range(6) * -100000 + 7).astype(np.int32).reshape(3, 2)          # i32: 7 - 100000*i
I64 = (i_range(4) * (1 << 40) - 5).astype(np.int64)                      # i64: 2^40*i - 5
BOOL = (i_range(6) % 3 == 0).reshape(6)                                  # bool: i % 3 == 0


def npy_fixtures():
    save("f32.npy", F32)
    save("f64.npy", F64)
    save("i8.npy", I8)
    save("u8.npy", U8)
    save("i32.npy", I32)
    save("i64.npy", I64)
    save("bool.npy", BOOL)
    save("scalar.npy", np.array(3.5, dtype=np.float32))                  # shape ()
    save("empty.npy", np.zeros((0, 3), dtype=np.float32))                 # no data
    save("v2.npy", F32, version=(2, 0))
    save("v3.npy", I32, version=(3, 0))
    save("fortran.npy", np.asfortranarray(F32.astype(np.float64).reshape(3, 2)))
    save("bigendian.npy", F32.astype(">f4"))
    with open(path("f32.npy"), "rb") as f:
        whole = f.read()
    with open(path("truncated.npy"), "wb") as f:
        f.write(whole[:-5])                                               # 24 data bytes -> 19
    with open(path("badmagic.npy"), "wb") as f:
        f.write(b"\x93NUMPZ\x01\x00" + whole[8:])
    # An unusual but valid header: key order, double quotes, no trailing comma, python-2 long,
    # a '<u1' descr, extra whitespace. Data: u8 values 40*i + 7 in shape (7,).
    raw_npy("oddheader.npy", "{ \"shape\" : (7L,),\"fortran_order\":False , 'descr':'<u1'}   ",
            U8.tobytes())
    # An unsupported dtype and an absurd shape.
    save("complex.npy", np.zeros(2, dtype=np.complex64))
    raw_npy("huge.npy",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", b"")


# ---- safetensors ----
ST_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int8): "I8",
            np.dtype(np.uint8): "U8", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64",
            np.dtype(np.bool_): "BOOL"}


def write_st(name, header, data):
    """Writes a .safetensors file from an explicit header dict and data bytes."""
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path(name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def st_layout(tensors, data_order):
    """Header dict (in the order of `tensors`) and data laid out in `data_order`."""
    offsets, blob = {}, b""
    for n in data_order:
        raw = tensors[n].tobytes()
        offsets[n] = [len(blob), len(blob) + len(raw)]
        blob += raw
    header = {"__metadata__": {"format": "pt", "note": "kiln \"fixture\" \u00e9"}}
    for n, a in tensors.items():
        header[n] = {"dtype": ST_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": offsets[n]}
    return header, blob


def st_fixtures():
    odd_name = "layer.0/q\u00e9\U0001F600"  # escaped by json.dumps, including a surrogate pair
    tensors = {"weight": F32, "bias": F64, "ids": I64, "mask": BOOL, odd_name: I8,
               "scalar": np.array(3.5, dtype=np.float32)}
    header, blob = st_layout(tensors, ["ids", "scalar", "bias", "weight", "mask", odd_name])
    write_st("model.safetensors", header, blob)

    small = {"w": F32}
    header, blob = st_layout(small, ["w"])
    header["w"]["data_offsets"] = [0, len(blob) + 8]                     # past the end
    write_st("badoffsets.safetensors", header, blob)
    header, blob = st_layout(small, ["w"])
    header["w"]["shape"] = [2, 2]                                        # 16 bytes, offsets say 24
    write_st("badsize.safetensors", header, blob)
    header, blob = st_layout(small, ["w"])
    header["w"]["dtype"] = "BF16"
    write_st("bf16.safetensors", header, blob)
    with open(path("badheaderlen.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 1 << 20) + b"{}      ")


def main():
    os.makedirs(OUT, exist_ok=True)
    npy_fixtures()
    st_fixtures()
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()

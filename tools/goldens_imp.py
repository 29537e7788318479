#!/usr/bin/python3
"""Writes golden op cases for the ONNX-conformance features of issue #4 (tests/goldens/ops/imp_<case>/):

    model.json      a single-node Kiln model named op_imp_<case> (params inline)
    <input>.npy     one per model input (random float32, seeded from the case name)
    <output>.npy    one per output, from PyTorch where it has the feature, else numpy

and tests/goldens/ops/cases-imp.txt with one line `<case> <op>` per case.

  - Resize mode "cubic" (cubic_coeff_a -0.75, exclude_outside 0) with coordinate_transformation_mode
    half_pixel and align_corners, up and down, from sizes: torch.nn.functional.interpolate(mode=
    "bicubic", align_corners=False/True) (Keys' kernel with A = -0.75, edge-clamped taps).
  - BatchNormalization training_mode = 1: Y and running_mean from torch.nn.functional.batch_norm
    (training=True; PyTorch's momentum 0.1 is ONNX's 0.9); running_var from numpy with the biased
    batch variance (ONNX's definition; PyTorch keeps the unbiased one).
  - ConstantOfShape with an i64 `value` (the `dtype` attribute): torch.full.
  - Dropout with training_mode true and ratio 0: torch.nn.functional.dropout(p=0, training=True),
    mask all true.

Run: /usr/bin/python3 tools/goldens_imp.py     (rewrites the imp_* cases and cases-imp.txt only)
"""

import glob
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

CASES = []


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def param(name, a):
    values = kiln_io.f32_values(a) if a.dtype == np.float32 else kiln_io.int_values(a)
    return {"name": name, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape),
            "init": {"kind": "values", "values": values}}


class Case:
    """One node: inputs (name -> array, fed at run time), params (name -> array, constants),
    the node's input order `order` ("" for an omitted input), attrs and outputs (name -> array)."""

    def __init__(self, name, op, inputs, params, order, attrs, outputs):
        self.name, self.op = "imp_" + name, op
        self.inputs, self.params, self.order = inputs, params, order
        self.attrs, self.outputs = attrs, outputs
        CASES.append(self)

    def write(self, root):
        d = os.path.join(root, self.name)
        model = {"format": "kiln-model", "version": 1, "name": "op_" + self.name}
        model["inputs"] = [{"name": k, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                           for k, a in self.inputs.items()]
        model["outputs"] = [{"name": k, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                            for k, a in self.outputs.items()]
        if self.params:
            model["params"] = [param(k, a) for k, a in self.params.items()]
        node = {"op": self.op, "name": self.op.lower(), "inputs": self.order,
                "outputs": list(self.outputs)}
        if self.attrs:
            node["attrs"] = self.attrs
        model["nodes"] = [node]
        kiln_io.write_model(os.path.join(d, "model.json"), model)
        for k, a in list(self.inputs.items()) + list(self.outputs.items()):
            kiln_io.save_npy(os.path.join(d, f"{k}.npy"), a)


def resize_cubic(name, shape, size, align_corners):
    x = rng_for(name).uniform(-2, 2, size=shape).astype(np.float32)
    y = F.interpolate(torch.from_numpy(x), size=size, mode="bicubic",
                      align_corners=align_corners).numpy()
    sizes = np.array(list(shape[:2]) + list(size), dtype=np.int64)
    ct = "align_corners" if align_corners else "half_pixel"
    Case(name, "Resize", {"x": x}, {"sizes": sizes}, ["x", "", "", "sizes"],
         {"mode": "cubic", "coordinate_transformation_mode": ct, "cubic_coeff_a": -0.75},
         {"y": y})


def batchnorm_training(name, shape, momentum, eps):
    g = rng_for(name)
    C = shape[1]
    x = g.uniform(-3, 3, size=shape).astype(np.float32)
    scale = g.uniform(0.5, 1.5, size=C).astype(np.float32)
    bias = g.uniform(-1, 1, size=C).astype(np.float32)
    mean = g.uniform(-1, 1, size=C).astype(np.float32)
    var = g.uniform(0.5, 2, size=C).astype(np.float32)
    rm, rv = torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())
    y = F.batch_norm(torch.from_numpy(x), rm, rv, torch.from_numpy(scale), torch.from_numpy(bias),
                     training=True, momentum=1 - momentum, eps=eps).numpy()
    axes = tuple(i for i in range(len(shape)) if i != 1)
    batch_var = x.astype(np.float64).var(axis=axes)  # biased, as ONNX
    running_var = (var * momentum + batch_var * (1 - momentum)).astype(np.float32)
    Case(name, "BatchNormalization", {"x": x},
         {"scale": scale, "b": bias, "mean": mean, "var": var}, ["x", "scale", "b", "mean", "var"],
         {"training_mode": 1, "momentum": momentum, "epsilon": eps},
         {"y": y, "running_mean": rm.numpy().copy(), "running_var": running_var})


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    resize_cubic("resize_cubic_up", (1, 2, 4, 5), (7, 9), False)
    resize_cubic("resize_cubic_up_align", (1, 2, 4, 5), (7, 9), True)
    resize_cubic("resize_cubic_down", (2, 1, 8, 7), (3, 4), False)
    resize_cubic("resize_cubic_down_align", (2, 1, 8, 7), (5, 3), True)
    batchnorm_training("bn_training", (4, 3, 5), 0.9, 1e-5)
    batchnorm_training("bn_training_4d", (2, 3, 4, 3), 0.7, 1e-3)
    Case("constant_of_shape_i64", "ConstantOfShape", {}, {"shape": np.array([2, 3], np.int64)},
         ["shape"], {"value": [7], "dtype": "i64"}, {"y": torch.full((2, 3), 7).numpy()})
    x = rng_for("dropout_zero_ratio").uniform(-1, 1, size=(3, 4)).astype(np.float32)
    Case("dropout_zero_ratio_training", "Dropout", {"x": x},
         {"ratio": np.array([0], np.float32), "training_mode": np.array([1], np.bool_)},
         ["x", "ratio", "training_mode"], {},
         {"y": F.dropout(torch.from_numpy(x), p=0.0, training=True).numpy(),
          "mask": np.ones((3, 4), np.bool_)})
    root = os.path.join(kiln_io.repo_root(), "tests", "goldens", "ops")
    for old in glob.glob(os.path.join(root, "imp_*")):
        shutil.rmtree(old)
    for c in CASES:
        c.write(root)
    with open(os.path.join(root, "cases-imp.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to tests/goldens/ops/imp_*")


if __name__ == "__main__":
    main()

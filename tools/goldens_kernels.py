#!/usr/bin/python3
"""Golden cases for the blocked convolution kernels and FusedConv: tests/goldens/ops/kernels_<case>/
holds model.json (a single-op Kiln model, weights inline as params), <input>.npy per input and
y.npy computed by PyTorch (float32), and tests/goldens/ops/cases-kernels.txt lists them
(`kernels_<case> <op>`).

The Conv cases pick shapes that reach every part of the register-blocked lowering in
compiler/ops/nn/conv.c: output channels that are not a multiple of 16 (zero-padded weight lanes),
an odd number of 16-channel vectors, a row that needs a narrower tail tile, padding (the padded
input copy), strides, dilations, asymmetric pads and 1x1 convolutions run as a GEMM (strided ones
reading x at the stride in place, strides 2 and 3). The FusedConv
cases (what the fuse-epilogue pass makes of Conv -> Add -> Relu) are relu(conv(x, w, b) + z) with
and without the residual, the activation and the bias, and a grouped one (the unblocked path:
its groups' 3 output channels do not fill a vector; three grouped ones that do take the blocked
kernel);
three take Clip (ReLU6's form, activation_params = [min, max]) as the activation.
Depthwise convs (group = C = M: padded, strided, dilated, fused) take their own lowering, and
2-D MaxPools the row form (pool.c): padded, strided, dilated, asymmetric pads.

Run: /usr/bin/python3 tools/goldens_kernels.py   (rewrites kernels_*/ and cases-kernels.txt)
"""

import glob
import math
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

PREFIX = "kernels_"


class Case:
    def __init__(self, name, op, x_shape, w_shape, bias=True, residual=False, relu=False,
                 strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, clip=None):
        self.name, self.op = PREFIX + name, op
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        self.x = rng.standard_normal(x_shape).astype(np.float32)
        self.w = (rng.standard_normal(w_shape) / math.sqrt(fan_in)).astype(np.float32)
        self.b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
        self.strides, self.pads, self.dilations, self.group = strides, pads, dilations, group
        self.relu, self.clip = relu, clip  # clip: (min, max), ReLU6's (0, 6)
        self.y_conv = self.torch_conv()
        self.z = rng.standard_normal(self.y_conv.shape).astype(np.float32) if residual else None

    def torch_conv(self):
        x = torch.from_numpy(self.x)
        top, left, bottom, right = self.pads
        x = F.pad(x, (left, right, top, bottom))  # ONNX pads may be asymmetric
        b = torch.from_numpy(self.b) if self.b is not None else None
        with torch.no_grad():
            return F.conv2d(x, torch.from_numpy(self.w), b, stride=self.strides,
                            dilation=self.dilations, groups=self.group)

    def output(self):
        y = self.y_conv
        if self.z is not None:
            y = y + torch.from_numpy(self.z)
        if self.relu:
            y = torch.relu(y)
        if self.clip:
            y = torch.clamp(y, *self.clip)
        return np.ascontiguousarray(y.numpy())

    def write(self, root):
        d = os.path.join(root, self.name)
        params = [("w", self.w)] + ([("b", self.b)] if self.b is not None else [])
        inputs = ["x", "w", "b" if self.b is not None else ""]
        if self.z is not None:
            inputs.append("z")
        attrs = {"kernel_shape": list(self.w.shape[2:])}
        for key, v, dflt in (("strides", self.strides, (1, 1)), ("pads", self.pads, (0, 0, 0, 0)),
                             ("dilations", self.dilations, (1, 1))):
            if tuple(v) != dflt:
                attrs[key] = list(v)
        if self.group != 1:
            attrs["group"] = self.group
        if self.relu:
            attrs["activation"] = "Relu"
        if self.clip:
            attrs["activation"], attrs["activation_params"] = "Clip", list(self.clip)
        while inputs[-1] == "":
            inputs.pop()
        y = self.output()
        ins = [("x", self.x)] + ([("z", self.z)] if self.z is not None else [])
        model = {"format": "kiln-model", "version": 1, "name": f"op_{self.name}",
                 "inputs": [{"name": n, "dtype": "f32", "shape": list(a.shape)} for n, a in ins],
                 "outputs": [{"name": "y", "dtype": "f32", "shape": list(y.shape)}],
                 "params": [{"name": n, "dtype": "f32", "shape": list(a.shape),
                             "init": {"kind": "values", "values": kiln_io.f32_values(a)}}
                            for n, a in params],
                 "nodes": [{"op": self.op, "name": self.op.lower(), "inputs": inputs,
                            "outputs": ["y"], "attrs": attrs}]}
        kiln_io.write_model(os.path.join(d, "model.json"), model)
        for n, a in ins:
            kiln_io.save_npy(os.path.join(d, f"{n}.npy"), a)
        kiln_io.save_npy(os.path.join(d, "y.npy"), y)


class PoolCase:
    """MaxPool through the row form (2-D, no Indices): y = max over each window, padding ignored
    (PyTorch pads with -inf here, so asymmetric pads work too)."""

    def __init__(self, name, x_shape, kernel, strides=(1, 1), pads=(0, 0, 0, 0),
                 dilations=(1, 1), ceil_mode=False):
        self.name, self.op = PREFIX + name, "MaxPool"
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        self.x = rng.standard_normal(x_shape).astype(np.float32)
        self.kernel, self.strides, self.pads = kernel, strides, pads
        self.dilations, self.ceil_mode = dilations, ceil_mode

    def output(self):
        top, left, bottom, right = self.pads
        x = F.pad(torch.from_numpy(self.x), (left, right, top, bottom), value=-math.inf)
        y = F.max_pool2d(x, self.kernel, self.strides, dilation=self.dilations,
                         ceil_mode=self.ceil_mode)
        return np.ascontiguousarray(y.numpy())

    def write(self, root):
        d = os.path.join(root, self.name)
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.strides),
                 "pads": list(self.pads), "dilations": list(self.dilations)}
        if self.ceil_mode:
            attrs["ceil_mode"] = 1
        y = self.output()
        model = {"format": "kiln-model", "version": 1, "name": f"op_{self.name}",
                 "inputs": [{"name": "x", "dtype": "f32", "shape": list(self.x.shape)}],
                 "outputs": [{"name": "y", "dtype": "f32", "shape": list(y.shape)}],
                 "params": [],
                 "nodes": [{"op": "MaxPool", "name": "maxpool", "inputs": ["x"],
                            "outputs": ["y"], "attrs": attrs}]}
        kiln_io.write_model(os.path.join(d, "model.json"), model)
        kiln_io.save_npy(os.path.join(d, "x.npy"), self.x)
        kiln_io.save_npy(os.path.join(d, "y.npy"), y)


def cases():
    return [
        # Conv through the blocked lowering
        Case("conv_m24_pad1", "Conv", (1, 5, 9, 9), (24, 5, 3, 3), pads=(1, 1, 1, 1)),
        Case("conv_m48_tail", "Conv", (2, 3, 7, 33), (48, 3, 3, 3), bias=False),
        Case("conv_m32_s2", "Conv", (1, 8, 15, 15), (32, 8, 3, 3), strides=(2, 2),
             pads=(1, 1, 1, 1)),
        Case("conv_dil2_asym", "Conv", (1, 4, 12, 10), (16, 4, 3, 2), dilations=(2, 2),
             pads=(2, 0, 1, 3)),
        Case("conv_1x1_gemm", "Conv", (1, 20, 7, 7), (40, 20, 1, 1)),
        Case("conv_7x7_s2", "Conv", (1, 3, 23, 23), (16, 3, 7, 7), strides=(2, 2),
             pads=(3, 3, 3, 3)),
        Case("conv_1x1_s2x3_tail", "Conv", (2, 24, 15, 13), (40, 24, 1, 1), strides=(2, 3)),
        # strided 1x1 convs read x at the stride in place: 4 x 6 tiles and a tail (26 columns),
        # stride 3, odd sizes (padded ones read the padded copy: layout_conv1x1_stride2_pad1)
        Case("conv_1x1_s3_wide", "Conv", (1, 16, 7, 77), (64, 16, 1, 1), strides=(3, 3)),
        # FusedConv
        Case("fused_relu", "FusedConv", (1, 6, 10, 10), (24, 6, 3, 3), relu=True,
             pads=(1, 1, 1, 1)),
        Case("fused_residual_relu", "FusedConv", (1, 16, 8, 8), (32, 16, 3, 3), residual=True,
             relu=True, pads=(1, 1, 1, 1)),
        Case("fused_residual_1x1_s2", "FusedConv", (1, 8, 9, 9), (16, 8, 1, 1), bias=False,
             residual=True, strides=(2, 2)),
        Case("fused_group2", "FusedConv", (1, 4, 6, 6), (6, 2, 3, 3), residual=True, relu=True,
             pads=(1, 1, 1, 1), group=2),
        Case("fused_clip6", "FusedConv", (1, 6, 10, 10), (32, 6, 3, 3), clip=(0.0, 6.0),
             pads=(1, 1, 1, 1)),
        Case("fused_residual_clip_1x1", "FusedConv", (1, 16, 5, 5), (16, 16, 1, 1), residual=True,
             clip=(-0.5, 0.75)),
        # Grouped convs whose groups fill whole vectors take the blocked lowering too (AlexNet's)
        Case("group2_m64_pad1", "Conv", (1, 8, 9, 10), (64, 4, 3, 3), pads=(1, 1, 1, 1),
             group=2),
        Case("fused_group4_s2_residual_relu", "FusedConv", (1, 12, 11, 11), (64, 3, 3, 3),
             residual=True, relu=True, strides=(2, 2), pads=(1, 1, 1, 1), group=4),
        Case("group3_1x1_m48", "Conv", (2, 6, 5, 7), (48, 2, 1, 1), bias=False, group=3),
        # Depthwise (group = C = M): the vectorized column loop over a padded copy
        Case("dw_pad1", "Conv", (2, 5, 9, 11), (5, 1, 3, 3), pads=(1, 1, 1, 1), group=5),
        Case("dw_s2_asym", "Conv", (1, 6, 12, 13), (6, 1, 3, 3), bias=False, strides=(2, 2),
             pads=(0, 1, 2, 1), group=6),
        Case("dw_dil2_5x3", "Conv", (1, 3, 10, 9), (3, 1, 5, 3), dilations=(2, 1), group=3),
        Case("fused_dw_residual_relu", "FusedConv", (1, 8, 7, 7), (8, 1, 3, 3), residual=True,
             relu=True, pads=(1, 1, 1, 1), group=8),
        Case("fused_dw_clip6_s2", "FusedConv", (1, 8, 9, 9), (8, 1, 3, 3), clip=(0.0, 6.0),
             strides=(2, 2), pads=(1, 1, 1, 1), group=8),
        # MaxPool through the row form (ops' maxpool_* cases cover ceil_mode): padding, strides,
        # dilations, asymmetric pads
        PoolCase("maxpool_3x3_s2_p1", (1, 4, 13, 13), (3, 3), (2, 2), (1, 1, 1, 1)),
        PoolCase("maxpool_asym_dil", (1, 2, 9, 12), (2, 3), (1, 2), (0, 2, 1, 1), (2, 1)),
    ]


def main():
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    all_cases = cases()
    for d in glob.glob(os.path.join(root, PREFIX + "*")):
        shutil.rmtree(d)
    for c in all_cases:
        c.write(root)
    with open(os.path.join(root, "cases-kernels.txt"), "w") as f:
        for c in all_cases:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(all_cases)} cases to tests/goldens/ops/{PREFIX}*")


if __name__ == "__main__":
    main()

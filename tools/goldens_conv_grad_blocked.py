#!/usr/bin/python3
"""Golden cases of the register-blocked lowerings of ConvGradInput and ConvGradFilter
(compiler/ops/train/conv_grad_input.c, conv_grad_filter.c), from PyTorch's conv2d_input /
conv2d_weight through tools/goldens_convgrad.py's case(): tests/goldens/ops/cases-convgrad-blocked.txt
and its case directories. tests/test_ops.c holds the interpreter to PyTorch and the generated code
to the interpreter.

    /usr/bin/python3 tools/goldens_conv_grad_blocked.py

Each case aims at one decision of the blocked lowerings: channel counts that leave a vector part
empty (20, 33) or fill whole vectors (32, 48), stride 2 (ConvGradInput: one stride-1 conv per output
phase; an uneven pad), dilation 2, 1x1 convs (flattened; strided: one phase of dy, subsampled x), a
7x7 stride-2 kernel (one kernel row per tile), rows in several chunks (ConvGradFilter), strides 3
and (2, 1) with dilation (the phases: uneven, empty, or reading before dy's start, which spreads dy
out instead), and pads wider than the kernel's reach (left to the row-wise loops, as groups are:
goldens_convgrad.py's grouped case). Shapes stay tiny: the test suite builds every case with both
backends.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import goldens_convgrad  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from kiln_io import repo_root, write_op_case  # noqa: E402

goldens_convgrad.DOC = "tools/goldens_conv_grad_blocked.py"
case = goldens_convgrad.case

CASES = [
    # name, x shape, w shape, keyword arguments of case()
    ("cgb_partial_vectors", (2, 20, 7, 9), (33, 20, 3, 3), dict(pads=(1, 1, 1, 1))),
    ("cgb_stride2_uneven", (1, 5, 9, 8), (18, 5, 3, 3), dict(stride=(2, 2), pads=(1, 0, 1, 1))),
    ("cgb_dilation2", (2, 4, 10, 11), (17, 4, 3, 3), dict(pads=(2, 2, 2, 2), dilation=(2, 2))),
    ("cgb_1x1", (2, 24, 5, 7), (40, 24, 1, 1), {}),
    ("cgb_1x1_stride2", (1, 8, 7, 9), (20, 8, 1, 1), dict(stride=(2, 2))),
    ("cgb_7x7_stride2", (1, 3, 23, 21), (16, 3, 7, 7), dict(stride=(2, 2), pads=(3, 3, 3, 3))),
    ("cgb_chunks", (1, 2, 70, 64), (1, 2, 3, 3), dict(pads=(1, 1, 1, 1))),
    ("cgb_pad_past_reach", (1, 4, 6, 6), (5, 4, 1, 1), dict(pads=(1, 1, 1, 1))),
    # ConvGradInput's sub-pixel split: stride 3 (phases of 1 and 2 taps, uneven phase sizes),
    # stride 2 with dilation 2 (phases no tap reaches: zeros), and stride 3 with a pad that makes
    # a phase read dy before its start (the spread copy instead)
    ("cgb_subpixel_s3_5x5", (1, 4, 13, 11), (18, 4, 5, 5), dict(stride=(3, 3), pads=(2, 2, 1, 2))),
    ("cgb_subpixel_dil2", (1, 5, 10, 9), (17, 5, 3, 3),
     dict(stride=(2, 1), pads=(2, 2, 2, 1), dilation=(2, 2))),
    ("cgb_stride3_spread", (1, 3, 10, 10), (16, 3, 3, 3), dict(stride=(3, 3), pads=(1, 1, 1, 1))),
    # ConvGradInput of a 3x3 stride-1 conv with >= 128 channels: Winograd with the flipped
    # weights transformed at run time (conv_winograd.c); odd planes (partial tiles), 2 images of
    # 25 tiles in register tiles of 13 (a tile computed twice),
    # pads 2 and 1 of the backward conv (forward pads 0 and 1); ConvGradFilter too (layer 3-like:
    # the transposed transform, dy of 9x7: partial tiles)
    ("cgb_winograd", (2, 128, 9, 9), (128, 128, 3, 3), dict(pads=(1, 0, 1, 0))),
    # ConvGradInput's run-time packing of the flipped weights where C and M fill whole vectors
    # (no clamp, no select; m in 3 blocks of 16 around the vector loop), below Winograd's 128
    ("cgb_full_vectors", (1, 32, 6, 5), (48, 32, 3, 3), dict(pads=(1, 1, 1, 1), filter=False)),
    # ConvGradFilter vectorized over output pixels (conv_grad_filter_pixels.c: OW a multiple of
    # the lanes, x's copy smaller than dy), ConvGradFilter only: stride 2 with uneven pads (the
    # column phases of x's copy, zeros before and after each), 3 channels per tile (M = 18);
    # dilation 2 with 2 channel blocks per group (M = 32); 80 rows in chunks of 32 (16 lanes), the
    # second across the two images (the sums wait in scratch between chunks), 2 blocks per group
    ("cgb_pixels_s2", (2, 3, 17, 31), (18, 3, 5, 5),
     dict(stride=(2, 2), pads=(2, 2, 1, 3), input=False)),
    ("cgb_pixels_dil2", (1, 1, 6, 16), (32, 1, 3, 3),
     dict(pads=(2, 2, 2, 2), dilation=(2, 2), input=False)),
    ("cgb_pixels_chunks", (2, 1, 40, 16), (32, 1, 3, 3), dict(pads=(1, 1, 1, 1), input=False)),
]

# Conv with weights that are inputs (not constants, as in training): Winograd with U
# transformed at run time, x and y planar (conv_winograd.c), with a bias; 9 output vectors (one
# per register tile) and a U over 1 MiB (the GEMMs' loop runs over the tiles of one output
# vector pair first; cgb_winograd's U of 1 MiB: the other order)
FORWARD = [
    ("conv_winograd_runtime", (2, 128, 9, 7), (144, 128, 3, 3), (1, 1, 1, 1), True),
    # the direct kernel's run-time packing (conv.c): 33 output channels (the last vector 1 of
    # 16: clamped loads, zeros past M) and 32 (whole vectors), with a bias
    ("conv_runtime_partial", (2, 20, 7, 9), (33, 20, 3, 3), (1, 1, 1, 1), True),
    ("conv_runtime_full", (1, 32, 6, 5), (32, 32, 3, 3), (1, 0, 1, 0), True),
    # Winograd with 64 channels (U of 256 KB, in L2): V of each register tile made in a local
    # array inside the GEMMs' loop (conv_winograd.c, fused_gemms); odd planes, 20 tiles an image
    # in register tiles of 10, 2 output vector pairs, a bias
    ("conv_winograd_local_v", (2, 64, 9, 7), (64, 64, 3, 3), (1, 1, 1, 1), True),
]


def forward_case(name, x_shape, w_shape, pads, bias, seed):
    rng = np.random.default_rng(seed)
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    t = [torch.tensor(v, dtype=torch.float64) for v in (x, w, b)]
    xp = torch.nn.functional.pad(t[0], (pads[1], pads[3], pads[0], pads[2]))
    y = torch.nn.functional.conv2d(xp, t[1], t[2] if bias else None)
    inputs = [("x", x), ("w", w)] + ([("b", b)] if bias else [])
    attrs = {"kernel_shape": [3, 3], "pads": list(pads)}
    return write_op_case(name, "Conv", inputs, attrs, [("y", y.numpy())], goldens_convgrad.DOC)


def main():
    lines = "".join(case(name, x, w, seed=20 + i, **kw) for i, (name, x, w, kw) in enumerate(CASES))
    lines += "".join(forward_case(*f, seed=40 + i) for i, f in enumerate(FORWARD))
    path = os.path.join(repo_root(), "tests", "goldens", "ops", "cases-convgrad-blocked.txt")
    with open(path, "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()

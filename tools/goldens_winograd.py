#!/usr/bin/python3
"""Golden cases of Winograd F(2x2, 3x3) convolutions (FusedConv algo "winograd",
compiler/ops/nn/conv_winograd.c) against PyTorch's conv2d in float64 (+ residual, ReLU):
tests/goldens/ops/cases-winograd.txt and its case directories. tests/test_ops.c holds the
interpreter to these references and the generated code to the interpreter (FusedConv's
tolerance, 1e-5 absolute + 1e-5 relative).

    /usr/bin/python3 tools/goldens_winograd.py

The cases cover the plan's branches: pads 0 and 1, odd output heights and widths (a partial last
row or column of tiles), batch 2, a residual with ReLU, 8 lanes as well as 16, channel vectors
in pairs and alone (RO 2 and 1), tiles in whole register tiles and not (25 tiles computed as 26:
the last register tile reads the last tile again and stores nothing). Three cases: each costs
about a second of CI per backend (the unrolled transforms and the 28-accumulator GEMM tile take
the C compiler a while).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens_layout import conv_case  # noqa: E402
from kiln_io import repo_root  # noqa: E402

DOC = "tools/goldens_winograd.py"


def case(name, x_shape, m, **kw):
    return conv_case(name, x_shape, m, 3, doc=DOC, algo="winograd", **kw)


def main():
    lines = [
        case("winograd_pad0_odd_batch2", (2, 32, 9, 7), 48, pad=0, residual=False, seed=2),
        case("winograd_pad1_odd_lanes8", (1, 16, 11, 13), 24, pad=1, lanes=8, relu=False,
             seed=3),
        case("winograd_partial_register_tile", (1, 32, 10, 10), 32, pad=1, seed=4),
    ]
    with open(os.path.join(repo_root(), "tests", "goldens", "ops", "cases-winograd.txt"),
              "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()

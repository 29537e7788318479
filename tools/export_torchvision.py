"""Exports torchvision models to ONNX (opset 13, random seeded weights) with PyTorch goldens, and
optionally checks that Kiln compiles them and matches PyTorch.

    /usr/bin/python3 tools/export_torchvision.py [--out DIR] [--models a,b] [--check --kiln KILN]

For each model: DIR/NAME.onnx, DIR/NAME.x.npy (a seeded random (1, 3, 224, 224) input) and
DIR/NAME.y.npy (PyTorch's output in eval mode). The .onnx files are large (up to ~500 MB for
vgg11), so they are not committed: the slow test suite (`meson test --suite slow`) runs this
script with --check, which exports into a temporary directory, runs `kiln build NAME.onnx`,
runs the binary on NAME.x.npy and compares with NAME.y.npy: |got - want| <= 1e-4 * max|want|
+ 1e-4 * |want| (relative 1e-4). Without torch/torchvision it prints why and exits 77 (skip).
"""

import argparse
import os
import concurrent.futures
import subprocess
import sys
import tempfile

MODELS = ["resnet18", "mobilenet_v2", "googlenet", "squeezenet1_0", "shufflenet_v2_x1_0",
          "alexnet", "vgg11"]
SKIP = 77


def make_model(torchvision, name):
    ctor = getattr(torchvision.models, name)
    kwargs = {"weights": None}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    return ctor(**kwargs).eval()


def export(torch, torchvision, np, name, out):
    torch.manual_seed(0)
    model = make_model(torchvision, name)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    path = os.path.join(out, name + ".onnx")
    torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"], opset_version=13,
                      do_constant_folding=True)
    np.save(os.path.join(out, name + ".x.npy"), x.numpy())
    np.save(os.path.join(out, name + ".y.npy"), y.numpy())
    return path


def check(np, kiln, name, out):
    exe = os.path.join(out, name)
    build = subprocess.run([kiln, "build", os.path.join(out, name + ".onnx"), "-o", exe],
                           capture_output=True, text=True)
    if build.returncode != 0:
        return "kiln build failed: " + build.stderr.strip()
    got_path = os.path.join(out, name + ".kiln.npy")
    run = subprocess.run([exe, "--input", os.path.join(out, name + ".x.npy"), "--output", got_path],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return "the binary failed: " + run.stderr.strip()
    got, want = np.load(got_path), np.load(os.path.join(out, name + ".y.npy"))
    if got.shape != want.shape:
        return "shape %s, expected %s" % (got.shape, want.shape)
    err = np.abs(got.astype(np.float64) - want)
    bound = 1e-4 * np.abs(want).max() + 1e-4 * np.abs(want)
    if not (err <= bound).all():
        return "max error %.3g (bound %.3g)" % (err.max(), bound.max())
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="output directory (default: a temporary one with --check)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--kiln", default="kiln")
    args = ap.parse_args()
    try:
        import numpy as np
        import torch
        import torchvision
    except ImportError as e:
        print("skipping: %s (apt-get install python3-torch python3-torchvision)" % e)
        return SKIP
    torch.set_num_threads(2)
    tmp = None
    out = args.out
    if not out:
        tmp = tempfile.TemporaryDirectory(prefix="kiln-torchvision-")
        out = tmp.name
    os.makedirs(out, exist_ok=True)
    failures = 0

    def finish(name, why):  # reports a checked model; the big files go once it is checked
        print("%-20s %s" % (name, "ok" if why is None else "FAIL: " + why), flush=True)
        for ext in (".onnx", ""):
            p = os.path.join(out, name + ext)
            if tmp and os.path.exists(p):
                os.remove(p)
        return why is not None

    # With --check, model k is built and run by Kiln (another process) while PyTorch exports
    # model k + 1: the two overlap on the two cores.
    pending = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for name in args.models.split(","):
            export(torch, torchvision, np, name, out)
            if not args.check:
                print("wrote", os.path.join(out, name + ".onnx"))
                continue
            if pending:
                failures += finish(pending[0], pending[1].result())
            pending = (name, pool.submit(check, np, args.kiln, name, out))
        if pending:
            failures += finish(pending[0], pending[1].result())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

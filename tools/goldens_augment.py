#!/usr/bin/python3
"""Goldens for the trainer's data augmentation (runtime/augment.c, docs/training.md).

An independent numpy implementation of the definitions in docs/training.md ("Overfitting and
underfitting"): the splitmix64 stream keyed by (seed, step, slot), random crop with padding,
horizontal flip, translation, Gaussian noise, cutout and per-channel normalization. For each case
it writes tests/goldens/augment/<case>/input.npy and output.npy, and a line
`<case>|<spec>|<seed>|<step>|<slot>` in tests/goldens/augment/cases.txt; tests/test_trainer.c
runs kiln_augment_sample + kiln_normalize_sample on input.npy and compares.

Run with Debian's python: /usr/bin/python3 tools/goldens_augment.py
"""
import math
import os
import shutil

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "goldens", "augment")
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Stream:
    """splitmix64 keyed by (seed, step, slot), as documented."""

    def __init__(self, seed, step, slot):
        k = mix((seed + GOLDEN) & M64)
        k = mix(((k ^ step) + GOLDEN) & M64)
        self.state = mix(((k ^ slot) + GOLDEN) & M64)

    def next(self):
        self.state = (self.state + GOLDEN) & M64
        return mix(self.state)

    def uniform(self):
        return (self.next() >> 11) / float(1 << 53)

    def below(self, n):
        return min(int(math.floor(self.uniform() * n)), n - 1)

    def normal(self):
        u1, u2 = self.uniform(), self.uniform()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def shifted(img, dy, dx):
    """out[c, y, x] = img[c, y - dy, x - dx], zeros outside (via padding and slicing)."""
    c, h, w = img.shape
    p = max(abs(dy), abs(dx))
    padded = np.zeros((c, h + 2 * p, w + 2 * p), dtype=img.dtype)
    padded[:, p:p + h, p:p + w] = img
    return padded[:, p - dy:p - dy + h, p - dx:p - dx + w].copy()


def augment(img, steps, rng):
    out = img.astype(np.float32).copy()
    c, h, w = out.shape
    for kind, v in steps:
        if kind == "random_crop":
            p = int(v)
            oy, ox = rng.below(2 * p + 1), rng.below(2 * p + 1)
            padded = np.pad(out, ((0, 0), (p, p), (p, p)))
            out = padded[:, oy:oy + h, ox:ox + w].copy()
        elif kind == "hflip":
            if rng.uniform() < v:
                out = out[:, :, ::-1].copy()
        elif kind == "translate":
            m = int(v)
            dy = rng.below(2 * m + 1) - m
            dx = rng.below(2 * m + 1) - m
            out = shifted(out, dy, dx)
        elif kind == "gaussian_noise":
            flat = out.reshape(-1).astype(np.float64)
            noise = np.array([rng.normal() for _ in range(flat.size)])
            out = (flat + v * noise).astype(np.float32).reshape(c, h, w)
        elif kind == "cutout":
            s = int(v)
            cy, cx = rng.below(h), rng.below(w)
            y0, x0 = cy - s // 2, cx - s // 2
            out[:, max(y0, 0):max(y0 + s, 0), max(x0, 0):max(x0 + s, 0)] = 0
    return out


def normalize(img, mean, std):
    c = img.shape[0]
    m = np.array(mean if len(mean) == c else mean * c, dtype=np.float64).reshape(c, 1, 1)
    s = np.array(std if len(std) == c else std * c, dtype=np.float64).reshape(c, 1, 1)
    return ((img.astype(np.float64) - m) / s).astype(np.float32)


def spec_text(steps, norm):
    keys = {"random_crop": "padding", "hflip": "p", "translate": "max_pixels",
            "gaussian_noise": "std", "cutout": "size"}
    items = ["%s %s=%r" % (k, keys[k], v) for k, v in steps]
    if norm:
        items.append("normalize mean=%s std=%s" % (",".join(map(repr, norm[0])),
                                                   ",".join(map(repr, norm[1]))))
    return "; ".join(items)


CASES = [
    # name, shape, steps, normalize, seed, step, slot
    ("crop", (1, 8, 8), [("random_crop", 2)], None, 1, 0, 0),
    ("crop_rgb", (3, 6, 7), [("random_crop", 3)], None, 7, 12, 5),
    ("hflip_always", (2, 5, 6), [("hflip", 1.0)], None, 3, 1, 2),
    ("hflip_half", (1, 4, 5), [("hflip", 0.5)], None, 11, 4, 9),
    ("translate", (1, 9, 9), [("translate", 2)], None, 5, 3, 17),
    ("noise", (2, 4, 4), [("gaussian_noise", 0.1)], None, 9, 2, 1),
    ("cutout", (1, 10, 10), [("cutout", 4)], None, 2, 6, 3),
    ("cutout_edge", (3, 5, 5), [("cutout", 7)], None, 4, 0, 8),
    ("normalize", (3, 4, 4), [], ([0.5, 0.4, 0.3], [0.25, 0.2, 0.5]), 0, 0, 0),
    ("all", (3, 12, 10), [("random_crop", 2), ("hflip", 0.5), ("translate", 1),
                          ("gaussian_noise", 0.05), ("cutout", 3)],
     ([0.45], [0.3]), 1234, 77, 4321),
]


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    lines = []
    data_rng = np.random.default_rng(2024)
    for name, shape, steps, norm, seed, step, slot in CASES:
        # several samples per case (slots slot, slot + 1, ...) so the random draws vary
        for k in range(4):
            case = "%s_%d" % (name, k)
            img = data_rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
            out = augment(img, steps, Stream(seed, step, slot + k))
            if norm:
                out = normalize(out, *norm)
            d = os.path.join(ROOT, case)
            os.makedirs(d)
            np.save(os.path.join(d, "input.npy"), img)
            np.save(os.path.join(d, "output.npy"), out)
            lines.append("%s|%s|%d|%d|%d" % (case, spec_text(steps, norm), seed, step, slot + k))
    with open(os.path.join(ROOT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d cases to %s" % (len(lines), ROOT))


if __name__ == "__main__":
    main()

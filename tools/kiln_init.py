"""Kiln's deterministic param initializers, reimplemented bit for bit in numpy.

A model JSON param may carry "init": {"kind": ..., "seed": ...} instead of stored weights; Kiln fills it
at compile time (compiler/initializers.c). The zoo's PyTorch goldens must be computed from the very same
float32 values, so this module reproduces that algorithm exactly:

  - SplitMix64 (state += 0x9e3779b97f4a7c15; two xor-shift-multiply rounds), seeded with `seed`;
  - uniform u = (next >> 11) * 2^-53, in [0, 1);
  - uniform kinds: low + (high - low) * u, in float64, then rounded to float32;
  - normal kinds: Box-Muller on pairs (u1, u2): r = sqrt(-2 log(1 - u1)), t = 2*pi*u2,
    element i = mean + std*r*cos(t), element i+1 = mean + std*r*sin(t) (the odd last one drops sin);
  - xavier/kaiming scales from fan_in / fan_out, PyTorch's convention.

All arithmetic is float64 IEEE in the C code's evaluation order. log/cos/sin come from numpy's float64
ufuncs, which may differ from glibc's in the last bit of a double; `make_zoo.py --check-init` compares
the float32 results against what `kiln run` generates.

    values(spec, shape) -> np.ndarray float32
"""

import math

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(z):
    """The SplitMix64 finalizer on uint64 arrays."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def random_normal_like(shape, seed, mean=0.0, scale=1.0):
    """The float32 values of Kiln's RandomNormalLike (compiler/ops/math/randomnormallike.c): a
    counter-based Box-Muller, element i from mix64(base ^ 2i) and mix64(base ^ (2i + 1))."""
    n = int(np.prod(shape, dtype=np.int64))
    base = mix64(np.uint64(int(seed) & (2 ** 64 - 1)) ^ _GAMMA)
    i = np.arange(n, dtype=np.uint64)
    h1, h2 = mix64(base ^ (np.uint64(2) * i)), mix64(base ^ (np.uint64(2) * i + np.uint64(1)))
    u1 = ((h1 >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * (2.0 ** -53)
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    y = mean + scale * (np.sqrt(-2.0 * np.log(u1)) * np.cos((2.0 * math.pi) * u2))
    return y.astype(np.float32).reshape(shape)


def splitmix64(seed, count):
    """The first `count` outputs of SplitMix64 seeded with `seed`, as uint64."""
    with np.errstate(over="ignore"):
        steps = np.arange(1, count + 1, dtype=np.uint64)
        z = np.uint64(seed) + steps * _GAMMA  # state after each increment, mod 2^64
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform01(seed, count):
    """Uniform doubles in [0, 1) from the top 53 bits, exactly as next_uniform() in C."""
    return (splitmix64(seed, count) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def fans(shape):
    """(fan_in, fan_out) as PyTorch and docs/model-format.md define them."""
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    rf = 1.0
    for d in shape[2:]:
        rf *= float(d)
    return float(shape[1]) * rf, float(shape[0]) * rf


def _normal(seed, n, mean, std):
    pairs = (n + 1) // 2
    u = uniform01(seed, 2 * pairs)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(1.0 - u1))
    theta = 2.0 * math.pi * u2
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = mean + (std * r) * np.cos(theta)
    out[1::2] = mean + (std * r) * np.sin(theta)
    return out[:n]


def _scale_params(spec, shape):
    """(low, high) for the uniform kinds, (mean, std) for the normal kinds."""
    kind = spec["kind"]
    if kind == "uniform":
        return float(spec.get("low", 0)), float(spec.get("high", 1))
    if kind == "normal":
        return float(spec.get("mean", 0)), float(spec.get("std", 1))
    fan_in, fan_out = fans(shape)
    if kind.startswith("xavier"):
        g = abs(float(spec.get("gain", 1)))
        scale = g * math.sqrt(6.0 / (fan_in + fan_out))
        std = g * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        a = float(spec.get("a", 0))
        scale = math.sqrt(6.0 / ((1 + a * a) * fan_in))
        std = math.sqrt(2.0 / ((1 + a * a) * fan_in))
    return (-scale, scale) if kind.endswith("uniform") else (0.0, std)


def values(spec, shape):
    """The float32 values Kiln generates for a param of this shape with this init spec."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    kind = spec["kind"]
    seed = int(spec.get("seed", 0))
    if kind == "zeros":
        out = np.zeros(n)
    elif kind == "ones":
        out = np.ones(n)
    elif kind == "constant":
        out = np.full(n, float(spec["value"]))
    elif kind == "values":
        out = np.asarray(spec["values"], dtype=np.float64)
    elif kind.endswith("uniform"):
        low, high = _scale_params(spec, shape)
        out = low + (high - low) * uniform01(seed, n)
    else:
        mean, std = _scale_params(spec, shape)
        out = _normal(seed, n, mean, std)
    return out.astype(np.float32).reshape(shape)

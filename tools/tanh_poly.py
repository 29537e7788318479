#!/usr/bin/python3
"""The polynomial behind the generated f32 tanh (backends/tanh_f32.h), and an exhaustive check.

    /usr/bin/python3 tools/tanh_poly.py            prints tanh_f32.h's coefficients
    /usr/bin/python3 tools/tanh_poly.py --check    every float through the generated tanh

The coefficients: q(r) = exp(r) - 1 ~ r (1 + r P(r)) on |r| <= ln2 / 2, P of degree 8 chosen by
the Remez exchange to minimise the *relative* error of q (mpmath, 50 digits; < 2e-15).

--check compiles a one-Tanh model with `kiln compile` (the kiln given by --kiln, default
build/compiler/kiln), takes the emitted kiln_gen_tanhf and its muladd macros out of the
generated C, and runs them over every float (2^32, ~1 minute per build) against libm's double
tanh rounded to float, once with FMA (-march=native) and once without (-march=x86-64).
It prints how many differ (0 for both at the time of writing).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import mpmath as mp


def remez(deg, iters=30, grid_n=4000):
    """P of degree deg minimising max |w (g - P)| with g = (expm1(r) - r) / r^2, w = r^2/expm1(r)."""
    mp.mp.dps = 50
    half = mp.log(2) / 2
    tiny = mp.mpf('1e-30')
    g = lambda r: mp.mpf(1) / 2 if abs(r) < tiny else (mp.expm1(r) - r) / r**2
    w = lambda r: mp.mpf(1) if abs(r) < tiny else r**2 / mp.expm1(r)
    n = deg + 1
    xs = [half * mp.cos(mp.pi * i / n) for i in range(n + 1)][::-1]
    grid = [-half + 2 * half * i / grid_n for i in range(grid_n + 1)]
    for _ in range(iters):
        a = mp.matrix(n + 1, n + 1)
        b = mp.matrix(n + 1, 1)
        for i, x in enumerate(xs):
            for j in range(n):
                a[i, j] = x**j
            a[i, n] = (-1)**i / w(x)
            b[i] = g(x)
        sol = mp.lu_solve(a, b)
        c = [sol[j] for j in range(n)]
        err = [w(x) * (g(x) - mp.polyval(c[::-1], x)) for x in grid]
        ext = [0] + [i for i in range(1, grid_n) if (err[i] - err[i - 1]) * (err[i + 1] - err[i]) <= 0]
        ext.append(grid_n)
        sel = []
        for i in ext:  # the largest error of each run of one sign
            if sel and mp.sign(err[sel[-1]]) == mp.sign(err[i]):
                if abs(err[i]) > abs(err[sel[-1]]):
                    sel[-1] = i
            else:
                sel.append(i)
        while len(sel) > n + 1:
            sel.pop(0 if abs(err[sel[0]]) < abs(err[sel[-1]]) else -1)
        if len(sel) < n + 1:
            break
        xs = [grid[i] for i in sel]
    return c, max(abs(e) for e in err)


CHECK_MAIN = r'''
#include <math.h>
#include <stdio.h>
int main(void) {
  long differ = 0;
  for (uint64_t u = 0; u < (1ull << 32); u++) {
    uint32_t b = (uint32_t)u;
    float x, want, got;
    memcpy(&x, &b, 4);
    want = (float)tanh((double)x);
    got = kiln_gen_tanhf(x);
    if (isnan(want) ? !isnan(got) : memcmp(&want, &got, 4) != 0) {
      if (differ++ < 5) printf("x=%a got %a want %a\n", x, got, want);
    }
  }
  printf("%ld of 2^32 floats differ from the correctly rounded tanh\n", differ);
  return differ != 0;
}
'''


def check(kiln):
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, 'tanh.json')
        with open(model, 'w') as f:
            f.write('{"format":"kiln-model","version":1,"name":"tanh","inputs":[{"name":"x",'
                    '"dtype":"f32","shape":[16]}],"outputs":[{"name":"y"}],"params":[],"nodes":'
                    '[{"op":"Tanh","inputs":["x"],"outputs":["y"]}]}')
        out = os.path.join(d, 'out')
        subprocess.run([kiln, 'compile', model, '-o', out], check=True)
        src = open(os.path.join(out, 'model_tanh.c')).read()
        macros = re.search(r'#if defined\(__FMA__\).*?#endif\n', src, re.S).group(0)
        fn = re.search(r'static inline float kiln_gen_tanhf\(.*?\n}\n', src, re.S).group(0)
        prog = os.path.join(d, 'check.c')
        with open(prog, 'w') as f:
            f.write('#include <stdint.h>\n#include <string.h>\n#include <math.h>\n' + macros + fn +
                    CHECK_MAIN)
        ok = True
        for march in ('native', 'x86-64'):
            exe = os.path.join(d, 'check_' + march)
            subprocess.run(['gcc', '-std=c17', '-O2', '-march=' + march, prog, '-o', exe, '-lm'],
                           check=True)
            print('-march=%s: ' % march, end='', flush=True)
            ok = subprocess.run([exe]).returncode == 0 and ok
        return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true')
    ap.add_argument('--kiln', default=os.path.join(os.path.dirname(__file__), '..', 'build',
                                                   'compiler', 'kiln'))
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if check(args.kiln) else 1)
    c, err = remez(8)
    print('max relative error of q: %s' % mp.nstr(err, 3))
    print('coefficients, Horner order (c10 .. c2, then 1):')
    print(', '.join(repr(float(x)) for x in c[::-1]) + ', 1.0')


if __name__ == '__main__':
    main()

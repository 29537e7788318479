// Counter-based random streams shared by the ops that draw numbers (RandomNormalLike,
// NormalNoise, training-mode DropoutMask): splitmix64's finalizer as the hash, a key per stream,
// element i drawn from hash(key ^ counter). The reference kernels (C, on doubles) and the
// lowerings (loop IR, LU_MIX64) below compute the same bits, so generated code matches the
// interpreter exactly.
#include <math.h>

#include "op_internal.h"

static const uint64_t golden_gamma = 0x9e3779b97f4a7c15u;
static const double two_pi = 6.283185307179586476925;
static const double unit = 0x1p-53;  // 2^-53

uint64_t kiln_mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9u;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebu;
  z ^= z >> 31;
  return z;
}

uint64_t kiln_seed_key(uint64_t seed) { return kiln_mix64(seed ^ golden_gamma); }

uint64_t kiln_train_stream_key(uint64_t seed, uint64_t step, uint64_t salt) {
  return kiln_mix64(kiln_mix64(kiln_seed_key(seed) ^ step) ^ salt);
}

void kiln_normal_fill(uint64_t key, double mean, double scale, double *out, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t h1 = kiln_mix64(key ^ (uint64_t)(2 * i)), h2 = kiln_mix64(key ^ (uint64_t)(2 * i + 1));
    double u1 = (double)((h1 >> 11) + 1) * unit, u2 = (double)(h2 >> 11) * unit;
    out[i] = mean + scale * (sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
  }
}

int kiln_lower_train_stream_key(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  kiln_lexpr *seed = lx_load(b, kiln_in_buf(c, 0), lx_int(b, 0));
  kiln_lexpr *s = lx_unary(b, LU_MIX64, lx_bin(b, LB_XOR, seed, lx_int(b, (int64_t)golden_gamma)));
  s = lx_unary(b, LU_MIX64, lx_bin(b, LB_XOR, s, lx_load(b, kiln_in_buf(c, 1), lx_int(b, 0))));
  s = lx_unary(b, LU_MIX64, lx_bin(b, LB_XOR, s, lx_int(b, kiln_attr_int(c->node, "salt", 0))));
  return kiln_lb_decl(b, "s", KILN_I64, s);
}

// (h >> 11) as f64 with h = mix64(key ^ (2i + k)); plus 1 for k = 0 (u1 in (0, 1]).
static kiln_lexpr *draw_bits(kiln_lb *b, int key, int i, int k) {
  kiln_lexpr *counter = lx_add(b, lx_mul(b, lx_var(b, i), lx_int(b, 2)), lx_int(b, k));
  kiln_lexpr *h = lx_unary(b, LU_MIX64, lx_bin(b, LB_XOR, lx_var(b, key), counter));
  kiln_lexpr *bits = lx_bin(b, LB_SHR, h, lx_int(b, 11));
  return lx_cast(b, KILN_F64, k == 0 ? lx_add(b, bits, lx_int(b, 1)) : bits);
}

void kiln_lower_normal_fill(kiln_lb *b, int key, int buf, kiln_dtype t, int64_t n, double mean,
                            double scale) {
  int i = kiln_lb_for_n(b, "i", n);
  kiln_lexpr *u1 = lx_bin(b, LB_MUL, draw_bits(b, key, i, 0), lx_float(b, KILN_F64, unit));
  kiln_lexpr *u2 = lx_bin(b, LB_MUL, draw_bits(b, key, i, 1), lx_float(b, KILN_F64, unit));
  kiln_lexpr *r2 = lx_bin(b, LB_MUL, lx_float(b, KILN_F64, -2.0), lx_unary(b, LU_LOG, u1));
  kiln_lexpr *angle = lx_bin(b, LB_MUL, lx_float(b, KILN_F64, two_pi), u2);
  kiln_lexpr *z = lx_bin(b, LB_MUL, lx_unary(b, LU_SQRT, r2), lx_unary(b, LU_COS, angle));
  kiln_lexpr *v = lx_bin(b, LB_ADD, lx_float(b, KILN_F64, mean),
                         lx_bin(b, LB_MUL, lx_float(b, KILN_F64, scale), z));
  kiln_lb_store(b, buf, lx_var(b, i), lx_cast(b, t, v));
  kiln_lb_end_for(b);
}

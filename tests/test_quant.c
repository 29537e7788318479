// Calibration for post-training quantization (compiler/quant/calibrate.h, docs/quantization.md):
// each method on data whose answer is known in advance (uniform grids, known ranks, a Gaussian
// with outliers), quantization parameters and weight scales worked out by hand, and the error
// measures of the per-layer report on hand-computed examples.
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../compiler/quant/calibrate.h"

// n evenly spaced values from a to b inclusive, in a scrambled order (a stride coprime to n).
static float *grid(int64_t n, double a, double b) {
  float *v = malloc((size_t)n * sizeof *v);
  for (int64_t i = 0; i < n; i++) {
    int64_t k = (i * 7919) % n;
    v[i] = (float)(a + (b - a) * (double)k / (double)(n - 1));
  }
  return v;
}

Test(calibrate, minmax_is_the_exact_range_of_uniform_data) {
  float *v = grid(1001, -2.0, 3.0);
  double lo, hi;
  kiln_calib_range(v, 1001, KILN_CALIB_MINMAX, 0, &lo, &hi);
  cr_expect_eq(lo, -2.0);
  cr_expect_eq(hi, 3.0);
  free(v);
}

Test(calibrate, ranges_always_contain_zero) {
  float *v = grid(100, 0.5, 4.0);
  double lo, hi;
  kiln_calib_range(v, 100, KILN_CALIB_MINMAX, 0, &lo, &hi);
  cr_expect_eq(lo, 0.0);
  cr_expect_eq(hi, 4.0);
  free(v);
}

// 1..1000: the nearest-rank 99th percentile is the 990th smallest value (990), the 1st the 10th
// smallest (10, then widened to 0). Negated, the 1st percentile is the 10th smallest, -991.
Test(calibrate, percentile_by_nearest_rank) {
  float *v = grid(1000, 1.0, 1000.0);
  double lo, hi;
  kiln_calib_range(v, 1000, KILN_CALIB_PERCENTILE, 99.0, &lo, &hi);
  cr_expect_eq(lo, 0.0, "the range holds 0: got %g", lo);
  cr_expect_eq(hi, 990.0, "got %g", hi);
  for (int64_t i = 0; i < 1000; i++) v[i] = -v[i];
  kiln_calib_range(v, 1000, KILN_CALIB_PERCENTILE, 99.0, &lo, &hi);
  cr_expect_eq(lo, -991.0, "got %g", lo);
  cr_expect_eq(hi, 0.0);
  kiln_calib_range(v, 1000, KILN_CALIB_PERCENTILE, 100.0, &lo, &hi);
  cr_expect_eq(lo, -1000.0, "percentile 100 is min/max: got %g", lo);
  free(v);
}

// Standard normal samples (Box-Muller over a fixed LCG) with 10 outliers at +-50.
static float *gaussian_with_outliers(int64_t n) {
  float *v = malloc((size_t)n * sizeof *v);
  uint64_t s = 12345;
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((double)(s >> 11) + 1) / 9007199254740993.0;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (double)(s >> 11) / 9007199254740992.0;
    v[i] = (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
  }
  for (int i = 0; i < 10; i++) v[i * 997] = i % 2 ? 50.0f : -50.0f;
  return v;
}

// The KL threshold ignores the outliers min/max is dragged to, yet keeps the bulk: for N(0, 1)
// the published 8-bit thresholds lie around 3-5 sigma.
Test(calibrate, entropy_ignores_outliers) {
  int64_t n = 200000;
  float *v = gaussian_with_outliers(n);
  double lo, hi;
  kiln_calib_range(v, n, KILN_CALIB_MINMAX, 0, &lo, &hi);
  cr_expect_eq(hi, 50.0);
  kiln_calib_range(v, n, KILN_CALIB_ENTROPY, 0, &lo, &hi);
  cr_expect(hi > 2.5 && hi < 10.0, "entropy threshold %g, expected 2.5 .. 10", hi);
  cr_expect(lo < -2.5 && lo > -10.0, "entropy lower end %g", lo);
  free(v);
}

// Uniform data has no tail to cut: the threshold stays near the maximum.
Test(calibrate, entropy_keeps_uniform_range) {
  float *v = grid(100001, -1.0, 1.0);
  double lo, hi;
  kiln_calib_range(v, 100001, KILN_CALIB_ENTROPY, 0, &lo, &hi);
  cr_expect(hi > 0.9 && hi <= 1.0, "got %g", hi);
  free(v);
}

Test(calibrate, method_names) {
  kiln_calib_method m;
  cr_expect(kiln_calib_method_parse("entropy", &m) && m == KILN_CALIB_ENTROPY);
  cr_expect(kiln_calib_method_parse("minmax", &m) && m == KILN_CALIB_MINMAX);
  cr_expect(!kiln_calib_method_parse("kl", &m));
}

// u8 [-1, 3]: scale 4 / 255, zero point round(255 / 4 = 63.75) = 64; i8 [-2, 1.27]: 2 / 127, 0.
Test(calibrate, qparams_by_hand) {
  float scale;
  int32_t zp;
  kiln_calib_qparams(-1.0, 3.0, KILN_U8, &scale, &zp);
  cr_expect_eq(scale, (float)(4.0 / 255.0));
  cr_expect_eq(zp, 64);
  kiln_calib_qparams(-2.0, 1.27, KILN_I8, &scale, &zp);
  cr_expect_eq(scale, (float)(2.0 / 127.0));
  cr_expect_eq(zp, 0);
  kiln_calib_qparams(0.0, 0.0, KILN_U8, &scale, &zp);
  cr_expect_eq(scale, 1.0f, "an empty range");
  cr_expect_eq(zp, 0);
}

Test(calibrate, symmetric_per_channel_weight_scales) {
  const float w[3][4] = {{0.5f, -1.27f, 0.1f, 0}, {0, 0, 0, 0}, {2.54f, 1, -1, 0}};
  float scale[3];
  kiln_calib_weight_scales(&w[0][0], 3, 4, scale);
  cr_expect_eq(scale[0], (float)(1.27f / 127.0));
  cr_expect_eq(scale[1], 1.0f, "an all-zero channel");
  cr_expect_eq(scale[2], (float)(2.54f / 127.0));
}

// Noise 0.1 on each of four ones: signal 4, noise 0.04, SQNR 10 log10(100) = 20 dB.
Test(calibrate, sqnr_and_max_error_by_hand) {
  const float ref[4] = {1, 1, 1, 1}, got[4] = {1.1f, 0.9f, 1.1f, 0.9f};
  cr_expect(fabs(kiln_calib_sqnr(ref, got, 4) - 20.0) < 1e-5, "got %g",
            kiln_calib_sqnr(ref, got, 4));
  cr_expect(fabs(kiln_calib_max_abs_error(ref, got, 4) - 0.1) < 1e-7);
  cr_expect(isinf(kiln_calib_sqnr(ref, ref, 4)));
}

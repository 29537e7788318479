// Calibration statistics for post-training quantization (calibrate.h): ranges by min/max,
// percentile and entropy, their quantization parameters, weight scales and error measures.
#include "calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {"minmax", "percentile", "entropy"};

bool kiln_calib_method_parse(const char *s, kiln_calib_method *out) {
  for (int i = 0; i < 3; i++)
    if (strcmp(s, method_names[i]) == 0) {
      *out = (kiln_calib_method)i;
      return true;
    }
  return false;
}

const char *kiln_calib_method_name(kiln_calib_method m) { return method_names[m]; }

static void min_max(const float *v, int64_t n, double *lo, double *hi) {
  *lo = *hi = v[0];
  for (int64_t i = 1; i < n; i++) {
    *lo = fmin(*lo, v[i]);
    *hi = fmax(*hi, v[i]);
  }
}

static int compare_floats(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

// Nearest rank: the value at 0-based position ceil(p / 100 * n) - 1 of the sorted data.
static double rank_value(const float *sorted, int64_t n, double p) {
  int64_t k = (int64_t)ceil(p / 100.0 * (double)n) - 1;
  if (k < 0) k = 0;
  if (k >= n) k = n - 1;
  return sorted[k];
}

static void percentile_range(const float *v, int64_t n, double p, double *lo, double *hi) {
  float *sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) abort();
  memcpy(sorted, v, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, compare_floats);
  *lo = rank_value(sorted, n, 100.0 - p);
  *hi = rank_value(sorted, n, p);
  free(sorted);
}

// ---- Entropy (KL) calibration: a histogram of |x|, the threshold whose 128-level quantization
// of the clipped distribution stays closest to it ----

enum { HIST_BINS = 2048, QUANT_LEVELS = 128 };

// q: p[0..i) merged into QUANT_LEVELS groups, each group's mass spread over its nonzero bins.
static void quantized_copy(const double *p, int i, double *q) {
  for (int g = 0; g < QUANT_LEVELS; g++) {
    int start = g * i / QUANT_LEVELS, end = (g + 1) * i / QUANT_LEVELS;
    double mass = 0;
    int nonzero = 0;
    for (int k = start; k < end; k++) {
      mass += p[k];
      nonzero += p[k] > 0;
    }
    for (int k = start; k < end; k++) q[k] = p[k] > 0 ? mass / nonzero : 0;
  }
}

// KL(P || Q) of the histogram clipped at bin i (the clipped mass folded into bin i - 1).
static double clipped_divergence(const double *hist, int i) {
  double p[HIST_BINS], q[HIST_BINS], outliers = 0, ps = 0, qs = 0, kl = 0;
  memcpy(p, hist, (size_t)i * sizeof *p);
  for (int k = i; k < HIST_BINS; k++) outliers += hist[k];
  p[i - 1] += outliers;
  quantized_copy(hist, i, q);
  for (int k = 0; k < i; k++) ps += p[k], qs += q[k];
  for (int k = 0; k < i; k++)
    if (p[k] > 0) kl += p[k] / ps * log((p[k] / ps) / (q[k] > 0 ? q[k] / qs : 1e-12));
  return kl;
}

static double entropy_threshold(const float *v, int64_t n, double amax) {
  if (amax == 0) return 0;
  double hist[HIST_BINS] = {0}, width = amax / HIST_BINS;
  for (int64_t k = 0; k < n; k++) {
    int bin = (int)(fabs(v[k]) / width);
    hist[bin < HIST_BINS ? bin : HIST_BINS - 1] += 1;
  }
  int best = HIST_BINS;
  double best_kl = INFINITY;
  for (int i = QUANT_LEVELS; i <= HIST_BINS; i++) {
    double kl = clipped_divergence(hist, i);
    if (kl < best_kl) best_kl = kl, best = i;
  }
  return best * width;
}

void kiln_calib_range(const float *v, int64_t n, kiln_calib_method method, double percentile,
                      double *lo, double *hi) {
  double mn, mx;
  min_max(v, n, &mn, &mx);
  if (method == KILN_CALIB_PERCENTILE) percentile_range(v, n, percentile, &mn, &mx);
  if (method == KILN_CALIB_ENTROPY) {
    double t = entropy_threshold(v, n, fmax(fabs(mn), fabs(mx)));
    mn = fmax(mn, -t);
    mx = fmin(mx, t);
  }
  *lo = fmin(mn, 0);
  *hi = fmax(mx, 0);
}

void kiln_calib_qparams(double lo, double hi, kiln_dtype t, float *scale, int32_t *zero_point) {
  if (t == KILN_I8) {
    double amax = fmax(fabs(lo), fabs(hi));
    *scale = amax > 0 ? (float)(amax / 127.0) : 1.0f;
    *zero_point = 0;
    return;
  }
  *scale = hi > lo ? (float)((hi - lo) / 255.0) : 1.0f;
  double zp = nearbyint(-lo / *scale);
  *zero_point = (int32_t)fmin(fmax(zp, 0), 255);
}

void kiln_calib_weight_scales(const float *w, int64_t channels, int64_t per_channel, float *scale) {
  for (int64_t c = 0; c < channels; c++) {
    double amax = 0;
    for (int64_t k = 0; k < per_channel; k++) amax = fmax(amax, fabs(w[c * per_channel + k]));
    scale[c] = amax > 0 ? (float)(amax / 127.0) : 1.0f;
  }
}

double kiln_calib_sqnr(const float *ref, const float *got, int64_t n) {
  double signal = 0, noise = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = (double)ref[i] - got[i];
    signal += (double)ref[i] * ref[i];
    noise += e * e;
  }
  return noise == 0 ? INFINITY : 10.0 * log10(signal / noise);
}

double kiln_calib_max_abs_error(const float *ref, const float *got, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)ref[i] - got[i]));
  return m;
}

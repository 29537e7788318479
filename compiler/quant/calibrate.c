// Calibration statistics for post-training quantization (calibrate.h): ranges by min/max,
// percentile, entropy and mean squared error, their quantization parameters, weight scales and
// error measures.
#include "calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {"mse", "entropy", "minmax", "percentile"};  // enum order

bool kiln_calib_method_parse(const char *s, kiln_calib_method *out) {
  for (int i = 0; i < 4; i++)
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

// ---- Histogram searches (entropy, mse): the u8 range as the pass uses it ----
//
// Both search the clip window [lo, hi] of a histogram of x over [min(x, 0), max(x, 0)] whose
// bin edges include 0; exact zeros are left out (0 quantizes exactly whatever the range). A
// candidate window holds `i` bins (QUANT_LEVELS .. HIST_BINS) and shrinks both ends of the full
// range in the same proportion, keeping 0 where the zero point puts it: for non-negative tensors
// (after a Relu) the window is [0, t], for signed ones the u8 asymmetric range [lo, hi] the
// quantization actually uses (256 levels, 255 steps).

enum { HIST_BINS = 2048, QUANT_LEVELS = 256 };

typedef struct histogram {
  double count[HIST_BINS];
  double width;  // of a bin; bin k covers [(k - zero) * width, (k - zero + 1) * width)
  int zero;      // the bin whose lower edge is 0
} histogram;

static void histogram_of(const float *v, int64_t n, double lo, double hi, histogram *h) {
  memset(h->count, 0, sizeof h->count);
  h->zero = (int)nearbyint(HIST_BINS * -lo / (hi - lo));
  double below = h->zero > 0 ? -lo / h->zero : 0;
  double above = h->zero < HIST_BINS ? hi / (HIST_BINS - h->zero) : 0;
  h->width = fmax(below, above);
  for (int64_t k = 0; k < n; k++) {
    if (v[k] == 0) continue;  // exact at every range (a Relu's zeros would swamp the search)
    int bin = h->zero + (int)floor(v[k] / h->width);
    h->count[bin < 0 ? 0 : bin >= HIST_BINS ? HIST_BINS - 1 : bin] += 1;
  }
}

// The window of i bins: [*first, *first + i), 0 at the same fraction of it as of the histogram.
static int window_start(const histogram *h, int i) {
  int first = h->zero - (int)((int64_t)h->zero * i / HIST_BINS);
  return first + i > HIST_BINS ? HIST_BINS - i : first;
}

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

// Entropy: KL(P || Q) of window [a, a + i), P the clipped distribution (the mass outside folded
// into its end bins), Q its QUANT_LEVELS-level quantization (TensorRT's method, on u8's levels).
static double window_divergence(const histogram *h, int a, int i) {
  double p[HIST_BINS], q[HIST_BINS], ps = 0, qs = 0, kl = 0;
  memcpy(p, h->count + a, (size_t)i * sizeof *p);
  for (int k = 0; k < a; k++) p[0] += h->count[k];
  for (int k = a + i; k < HIST_BINS; k++) p[i - 1] += h->count[k];
  quantized_copy(h->count + a, i, q);
  for (int k = 0; k < i; k++) ps += p[k], qs += q[k];
  for (int k = 0; k < i; k++)
    if (p[k] > 0) kl += p[k] / ps * log((p[k] / ps) / (q[k] > 0 ? q[k] / qs : 1e-12));
  return kl;
}

// MSE: the expected squared error of quantizing to window [a, a + i) (in bin widths squared):
// rounding, step^2 / 12, inside it; the distance to its nearer end (from the bin centre) outside.
static double window_mse(const histogram *h, int a, int i) {
  double step = i / (QUANT_LEVELS - 1.0), inside = 0, clipped = 0;
  for (int k = 0; k < HIST_BINS; k++) {
    double below = a - (k + 0.5), above = (k + 0.5) - (a + i);
    if (below > 0)
      clipped += h->count[k] * below * below;
    else if (above > 0)
      clipped += h->count[k] * above * above;
    else
      inside += h->count[k];
  }
  return inside * step * step / 12 + clipped;
}

// The window of least cost by `method` (entropy or mse), as [*lo, *hi].
static void searched_range(const float *v, int64_t n, kiln_calib_method method, double *lo,
                           double *hi) {
  histogram *h = malloc(sizeof *h);
  if (!h) abort();
  histogram_of(v, n, *lo, *hi, h);
  int best = HIST_BINS;
  double best_cost = INFINITY;
  for (int i = QUANT_LEVELS; i <= HIST_BINS; i++) {
    int a = window_start(h, i);
    double cost = method == KILN_CALIB_MSE ? window_mse(h, a, i) : window_divergence(h, a, i);
    if (cost < best_cost) best_cost = cost, best = i;
  }
  int a = window_start(h, best);
  *lo = fmax(*lo, (a - h->zero) * h->width);
  *hi = fmin(*hi, (a + best - h->zero) * h->width);
  free(h);
}

void kiln_calib_range(const float *v, int64_t n, kiln_calib_method method, double percentile,
                      double *lo, double *hi) {
  double mn, mx;
  min_max(v, n, &mn, &mx);
  if (method == KILN_CALIB_PERCENTILE) percentile_range(v, n, percentile, &mn, &mx);
  mn = fmin(mn, 0), mx = fmax(mx, 0);
  bool searched = method == KILN_CALIB_ENTROPY || method == KILN_CALIB_MSE;
  if (searched && mx > mn) searched_range(v, n, method, &mn, &mx);
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

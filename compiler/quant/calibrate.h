// Post-training quantization, calibration side (docs/quantization.md): from the values a tensor
// takes on calibration data, the range to quantize it over (min/max, percentile, entropy or MSE),
// the scale and zero point of that range, symmetric per-channel weight scales, and the error
// measures of the per-layer report (SQNR, max abs error).
#ifndef KILN_QUANT_CALIBRATE_H
#define KILN_QUANT_CALIBRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "../../ir/dtype.h"

typedef enum {
  // The u8 clip window of a 2048-bin histogram over [min, max] (0 on a bin edge; windows shrink
  // both ends in proportion, [0, t] for non-negative data) that minimizes:
  KILN_CALIB_MSE,      // the expected squared error: rounding (step^2 / 12) plus clipping (default)
  KILN_CALIB_ENTROPY,  // KL(P || Q), Q P's 256-level quantization (TensorRT's method, u8 levels)
  KILN_CALIB_MINMAX,   // [min, max] of the data
  KILN_CALIB_PERCENTILE,  // [q(100 - p), q(p)], q the p-th percentile (nearest rank), p = 99.99
} kiln_calib_method;

// "minmax", "percentile", "entropy", "mse"; false for anything else.
bool kiln_calib_method_parse(const char *s, kiln_calib_method *out);
const char *kiln_calib_method_name(kiln_calib_method m);

// The range of n values (n >= 1) by `method`; `percentile` is used by KILN_CALIB_PERCENTILE only
// (in (50, 100]). The range always contains 0 (quantized zero must be exact).
void kiln_calib_range(const float *v, int64_t n, kiln_calib_method method, double percentile,
                      double *lo, double *hi);

// Scale and zero point for [lo, hi] (lo <= 0 <= hi): u8 asymmetric
//   scale = (hi - lo) / 255, zero_point = round_half_even(-lo / scale) clamped to [0, 255]
// i8 symmetric: scale = max(|lo|, |hi|) / 127, zero_point 0. An empty range gives scale 1.
void kiln_calib_qparams(double lo, double hi, kiln_dtype t, float *scale, int32_t *zero_point);

// Symmetric per-channel weight scales: w is (channels, per_channel) row-major;
// scale[c] = max |w[c][:]| / 127 (1 when the row is all zeros).
void kiln_calib_weight_scales(const float *w, int64_t channels, int64_t per_channel, float *scale);

// Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - got)^2); +inf when
// got == ref. And the largest |ref - got|.
double kiln_calib_sqnr(const float *ref, const float *got, int64_t n);
double kiln_calib_max_abs_error(const float *ref, const float *got, int64_t n);

#endif

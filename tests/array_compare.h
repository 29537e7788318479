// Comparing two arrays element by element with a tolerance, without Criterion: shared by the
// Criterion tests (tests/test_util.c, arrays_close) and the ONNX conformance runner
// (tests/onnx/conformance.c), which must not link Criterion. Header-only (static functions).
//
// An element passes when
//   - want is finite: got is finite and |got - want| <= atol + rtol * |want|;
//   - want is +inf or -inf: got is exactly the same infinity;
//   - want is NaN: got is NaN, and the caller opted in (nan_equal); otherwise NaN never passes.
#ifndef KILN_TESTS_ARRAY_COMPARE_H
#define KILN_TESTS_ARRAY_COMPARE_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "../runtime/kiln_runtime.h"

static inline bool compare_element_close(double got, double want, double atol, double rtol,
                                         bool nan_equal) {
  if (isnan(want) || isnan(got)) return nan_equal && isnan(want) && isnan(got);
  if (isinf(want) || isinf(got)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

// How far element (got, want) is outside the tolerance: +inf for a NaN or infinity mismatch.
static inline double compare_element_excess(double got, double want, double atol, double rtol) {
  if (!isfinite(got) || !isfinite(want)) return INFINITY;
  return fabs(got - want) - (atol + rtol * fabs(want));
}

// True if got and want have the same dtype and shape and every element passes; otherwise false,
// with the worst element (the first non-finite mismatch, else the largest excess) described in
// why[whylen].
static inline bool compare_arrays(const kiln_array *got, const kiln_array *want, double atol,
                                  double rtol, bool nan_equal, char *why, size_t whylen) {
  if (got->dtype != want->dtype) {
    snprintf(why, whylen, "dtype %s vs expected %s", kiln_rt_dtype_name(got->dtype),
             kiln_rt_dtype_name(want->dtype));
    return false;
  }
  bool same_shape = got->rank == want->rank;
  for (int i = 0; same_shape && i < got->rank; i++) same_shape = got->shape[i] == want->shape[i];
  if (!same_shape) {
    snprintf(why, whylen, "shapes differ (rank %d vs expected %d)", got->rank, want->rank);
    return false;
  }
  int64_t worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < kiln_array_numel(got); i++) {
    double g = kiln_element_get(got->data, got->dtype, i);
    double w = kiln_element_get(want->data, want->dtype, i);
    if (compare_element_close(g, w, atol, rtol, nan_equal)) continue;
    double excess = compare_element_excess(g, w, atol, rtol);
    if (worst < 0 || excess > worst_excess) worst = i, worst_excess = excess;
  }
  if (worst < 0) return true;
  double g = kiln_element_get(got->data, got->dtype, worst);
  double w = kiln_element_get(want->data, want->dtype, worst);
  snprintf(why, whylen,
           "element %lld: %.9g vs expected %.9g (|diff| %.3g > atol %.1g + rtol %.1g*|expected|)",
           (long long)worst, g, w, fabs(g - w), atol, rtol);
  return false;
}

#endif

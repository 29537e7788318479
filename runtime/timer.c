// Wall-clock timing on the monotonic clock, and the median used to summarise benchmark runs.
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L  // clock_gettime
#endif

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "kiln_runtime.h"

double kiln_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// NAN when there are no values.
double kiln_median(double *values, int n) {
  if (!values || n <= 0) return NAN;
  qsort(values, (size_t)n, sizeof *values, compare_doubles);
  if (n % 2 == 1) return values[n / 2];
  return (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

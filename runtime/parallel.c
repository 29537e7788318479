// Thread control and parallel_for on top of OpenMP (serial when built without OpenMP).
#include "kiln_runtime.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void kiln_set_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

int kiln_get_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls fn on the part-th of `parts` contiguous ranges of [0, n); the first n % parts get one more.
static void run_part(int64_t n, int64_t part, int64_t parts, kiln_range_fn fn, void *ctx) {
  int64_t base = n / parts, extra = n % parts;
  int64_t begin = part * base + (part < extra ? part : extra);
  int64_t end = begin + base + (part < extra ? 1 : 0);
  if (begin < end) fn(begin, end, ctx);
}

void kiln_parallel_for(int64_t n, kiln_range_fn fn, void *ctx) {
  if (n <= 0 || !fn) return;
#ifdef _OPENMP
#pragma omp parallel
  run_part(n, omp_get_thread_num(), omp_get_num_threads(), fn, ctx);
#else
  fn(0, n, ctx);
#endif
}

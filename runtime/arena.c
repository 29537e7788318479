// 64-byte aligned allocations: the storage behind arrays, weights payloads and model arenas.
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L  // posix_memalign
#endif

#include <stdint.h>
#include <stdlib.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

void *kiln_aligned_alloc(size_t bytes) {
  if (bytes > SIZE_MAX - (KILN_RT_ALIGN - 1)) return NULL;
  size_t rounded = (bytes + KILN_RT_ALIGN - 1) / KILN_RT_ALIGN * KILN_RT_ALIGN;
  if (rounded == 0) rounded = KILN_RT_ALIGN;  // a unique, freeable pointer even for empty arrays
  void *p = NULL;
  if (posix_memalign(&p, KILN_RT_ALIGN, rounded) != 0) return NULL;
  return p;
}

void kiln_aligned_free(void *p) { free(p); }

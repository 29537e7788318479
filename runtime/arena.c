// 64-byte aligned allocations: the storage behind arrays, weights payloads and model arenas.
// Allocations of 2 MiB or more are 2 MiB aligned, rounded to whole 2 MiB, and advised as
// transparent huge pages (Linux's THP in "madvise" mode, as on Debian 12, gives none otherwise):
// ResNet-18 streams its ~76 MB of weights from memory on every inference at batch 1, and with 4 KiB
// pages the hardware prefetcher stops at every page boundary (docs/performance.md, session 10:
// ~5-10 % of the whole model's CPU time).
#ifndef _GNU_SOURCE
#define _DEFAULT_SOURCE  // posix_memalign, madvise's MADV_HUGEPAGE
#endif

#include <stdint.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

enum { HUGE_PAGE = 1 << 21 };

void *kiln_aligned_alloc(size_t bytes) {
  size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : KILN_RT_ALIGN;
  if (bytes > SIZE_MAX - (align - 1)) return NULL;
  size_t rounded = (bytes + align - 1) / align * align;
  if (rounded == 0) rounded = KILN_RT_ALIGN;  // a unique, freeable pointer even for empty arrays
  void *p = NULL;
  if (posix_memalign(&p, align, rounded) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  if (align == HUGE_PAGE) (void)madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure is harmless
#endif
  return p;
}

void kiln_aligned_free(void *p) { free(p); }

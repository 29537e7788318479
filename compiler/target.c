// Target facts for the lowering (target.h).
#include "target.h"

#include <stdbool.h>
#include <string.h>

#include "../runtime/kiln_runtime.h"

static int native_f32_lanes(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2")) return 8;
#endif
  return 4;
}

// AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24 and 25), their state enabled by the operating
// system (XCR0 bits 17 and 18), and granted to this process (kiln_tiles_init: Linux wants each
// process to ask; the generated code asks again at model init). A host whose kernel refuses it
// (a sandbox, a hypervisor) gets the VNNI code rather than binaries that stop at init.
static bool native_amx(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned a, b, c, d;
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
  if (a < 7) return false;
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  if (!(c >> 27 & 1)) return false;  // OSXSAVE: xgetbv is there
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  if (!(d >> 24 & 1) || !(d >> 25 & 1)) return false;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo >> 17 & 3) == 3 && kiln_tiles_init() == KILN_OK;
#else
  return false;
#endif
}

static bool is_native(const char *target) {
  return !target || strcmp(target, "native") == 0 || strcmp(target, "native-noamx") == 0;
}

bool kiln_target_amx(const char *target) {
  return (!target || strcmp(target, "native") == 0) && native_amx();
}

int kiln_target_f32_lanes(const char *target) {
  if (is_native(target)) return native_f32_lanes();
  if (strcmp(target, "avx512") == 0) return 16;
  if (strcmp(target, "avx2") == 0) return 8;
  if (strcmp(target, "generic") == 0) return 4;
  return -1;
}

int kiln_target_accumulators(int f32_lanes) { return f32_lanes >= 16 ? 28 : 12; }

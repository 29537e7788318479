// Target facts for the lowering (target.h).
#include "target.h"

#include <string.h>

static int native_f32_lanes(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2")) return 8;
#endif
  return 4;
}

int kiln_target_f32_lanes(const char *target) {
  if (!target || strcmp(target, "native") == 0) return native_f32_lanes();
  if (strcmp(target, "avx512") == 0) return 16;
  if (strcmp(target, "avx2") == 0) return 8;
  if (strcmp(target, "generic") == 0) return 4;
  return -1;
}

int kiln_target_accumulators(int f32_lanes) { return f32_lanes >= 16 ? 28 : 12; }

// What the lowering needs to know about the target CPU (--target native|native-noamx|avx512|avx2|
// generic):
// the f32 vector width the register-blocked kernels block by, and the vector registers they may
// fill with accumulators. The backends own everything else about targets (flags, triples).
#ifndef KILN_TARGET_H
#define KILN_TARGET_H

#include <stdbool.h>

// f32 lanes of the target's vectors: 16 (avx512), 8 (avx2), 4 (generic: SSE2 or narrower);
// native asks this machine's CPU. -1 for a name that is not a target (the backends report it).
int kiln_target_f32_lanes(const char *target);
// Accumulator vectors a microkernel may keep in registers at that width (a few stay free for the
// broadcast input and the weights): 28 of AVX-512's 32, 12 of AVX2's and SSE's 16.
int kiln_target_accumulators(int f32_lanes);
// Whether the integer GEMMs use AMX tiles (loop IR LS_TILEDOT): target native on a CPU with
// AMX-TILE and AMX-INT8 whose operating system enables their state. native-noamx is native
// without them (AVX-512 VNNI).
bool kiln_target_amx(const char *target);

#endif

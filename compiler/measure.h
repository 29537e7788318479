// What `kiln compare` and `kiln build --tune` share to time generated binaries: seeded random
// inputs and running a binary to read its `median_ms=` line.
#ifndef KILN_MEASURE_H
#define KILN_MEASURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../ir/graph.h"
#include "../runtime/kiln_runtime.h"

// A seeded N(0, 1) array shaped like t for float inputs, zeros otherwise (valid indices and
// labels). Aborts when out of memory.
void kiln_measure_random_input(const kiln_tensor *t, uint64_t seed, kiln_array *a);
// Runs argv (argv[0] a path), returning its stdout in out[size]; false unless it exits with 0.
bool kiln_measure_run(char *const argv[], char *out, size_t size);
// The value of the `median_ms=` line in a binary's --bench output; false if there is none.
bool kiln_measure_median_ms(const char *output, double *ms);

#endif

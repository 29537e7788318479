// `kiln compare`: what each optimization pass buys. Builds the model once with every pass and
// once per variant with some passes turned off, runs each binary on the same seeded random
// inputs, and reports median latency, speed-up, binary size, arena bytes, and the largest absolute
// and ULP differences from the reference interpreter.
#ifndef KILN_COMPARE_H
#define KILN_COMPARE_H

#include <stdbool.h>

typedef struct kiln_compare_options {
  const char *model;
  const char *sets[16];  // each: comma-separated passes to turn off; none = each optional pass
  int n_sets;
  const char *format;                // text | md | csv
  const char *target;                // kiln build --target
  int runs;                          // timed runs per variant (--bench)
  int threads;                       // 0: the binaries' default
  const struct kiln_tuning *tuning;  // tuned tiles (kiln build --tune's cache), or NULL
} kiln_compare_options;

// Returns the process exit status (0, 2 bad input, 1 internal error).
int kiln_compare(const kiln_compare_options *o);

#endif

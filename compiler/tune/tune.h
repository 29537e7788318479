// kiln build --tune SECONDS (docs/performance.md "Auto-tuning"): for every tunable kernel of a
// compiled graph whose key the table lacks, builds a one-node model per candidate tile (the op's
// tune_space), times it like the real binary (its --bench median, one thread) and records the
// fastest tile in the table. Bounded: once SECONDS have passed no new candidate starts, and the
// kernels not measured completely keep their analytical tiles (and stay out of the table).
#ifndef KILN_TUNE_TUNE_H
#define KILN_TUNE_TUNE_H

#include <stdbool.h>

#include "../../ir/diag.h"
#include "../../ir/graph.h"
#include "tuning.h"

typedef struct kiln_tune_options {
  double seconds;      // the budget
  const char *target;  // kiln build --target (NULL: native)
  int f32_lanes;       // the compilation's vector width
  const char *cc;      // kiln build --cc, or NULL
  int runs;            // timed runs per candidate (0: 30)
  bool progress;       // draw a progress bar on stderr (else one line per kernel)
} kiln_tune_options;

typedef struct kiln_tune_result {
  int kernels;     // distinct tunable kernels in the graph
  int cached;      // of them, already in the table
  int tuned;       // measured now and added
  int candidates;  // candidate builds timed
  double seconds;  // time spent
} kiln_tune_result;

// Returns false after an internal error (reported through d); running out of time is not one.
bool kiln_tune(const kiln_graph *g, const kiln_tune_options *o, kiln_tuning *t, kiln_tune_result *r,
               kiln_diag *d);

#endif

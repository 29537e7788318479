// Decisions the trainer takes from its learning curves (runtime/curves.c): early stopping on the
// validation loss and the end-of-run diagnosis (overfitted / underfitted / fine). Pure functions
// of the per-epoch losses, so tests can script them. The rules are stated in docs/training.md,
// "Overfitting and underfitting". Private to the runtime (and its tests).
#ifndef KILN_CURVES_H
#define KILN_CURVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- Early stopping: stop after `patience` epochs in a row without a new lowest val loss ----

typedef struct kiln_early_stop {
  int64_t patience;    // 0: never stop
  double best;         // lowest validation loss so far (+inf before the first)
  int64_t best_epoch;  // its epoch (1-based), 0 before the first
  int64_t waited;      // epochs since then
} kiln_early_stop;

typedef enum { KILN_ES_IMPROVED, KILN_ES_WAIT, KILN_ES_STOP } kiln_es_decision;

kiln_early_stop kiln_early_stop_init(int64_t patience);
// Records epoch's validation loss (NaN counts as no improvement) and decides.
kiln_es_decision kiln_early_stop_update(kiln_early_stop *es, int64_t epoch, double val_loss);

// ---- Diagnosis ----

typedef enum {
  KILN_FIT_FINE,
  KILN_FIT_OVERFITTED,
  KILN_FIT_UNDERFITTED,
  KILN_FIT_TOO_SHORT
} kiln_fit;

// Thresholds of the rules (docs/training.md).
#define KILN_DIAG_MIN_EPOCHS 3
#define KILN_DIAG_RISE 0.05  // val loss >= 5% above its minimum
#define KILN_DIAG_FLAT 0.02  // losses moved by < 2% over the last third of the run
#define KILN_DIAG_HIGH 0.5   // the train loss still >= half its first epoch's value

typedef struct kiln_diagnosis {
  kiln_fit verdict;
  int n;                      // epochs
  int best_epoch;             // 1-based epoch of the lowest val loss
  double best_val, last_val;  // val loss at best_epoch and at the end
  double train_at_best, last_train, first_train;
  int window_start;                 // 1-based epoch where the last-third window starts
  double train_change, val_change;  // relative change over that window
} kiln_diagnosis;

kiln_diagnosis kiln_diagnose(const double *train_loss, const double *val_loss, int n);
const char *kiln_fit_name(kiln_fit f);  // "fine", "overfitted", ...
// One or two sentences with the numbers behind the verdict.
void kiln_diagnosis_explain(const kiln_diagnosis *d, char *buf, size_t size);

#endif

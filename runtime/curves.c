// Early stopping and the end-of-run diagnosis from per-epoch losses (curves.h).
#include "curves.h"

#include <math.h>
#include <stdio.h>

kiln_early_stop kiln_early_stop_init(int64_t patience) {
  return (kiln_early_stop){.patience = patience, .best = INFINITY};
}

kiln_es_decision kiln_early_stop_update(kiln_early_stop *es, int64_t epoch, double val_loss) {
  if (val_loss < es->best) {  // false for NaN
    es->best = val_loss, es->best_epoch = epoch, es->waited = 0;
    return KILN_ES_IMPROVED;
  }
  es->waited++;
  return es->patience > 0 && es->waited >= es->patience ? KILN_ES_STOP : KILN_ES_WAIT;
}

const char *kiln_fit_name(kiln_fit f) {
  static const char *const names[] = {"fine", "overfitted", "underfitted", "too short to tell"};
  return f >= 0 && f <= KILN_FIT_TOO_SHORT ? names[f] : "?";
}

static double relative_change(double from, double to) {
  return from != 0 ? (to - from) / fabs(from) : to - from;
}

// The first epoch (0-based) with the lowest finite value; -1 if none.
static int argmin(const double *v, int n) {
  int best = -1;
  for (int i = 0; i < n; i++)
    if (isfinite(v[i]) && (best < 0 || v[i] < v[best])) best = i;
  return best;
}

kiln_diagnosis kiln_diagnose(const double *train, const double *val, int n) {
  kiln_diagnosis d = {.verdict = KILN_FIT_TOO_SHORT, .n = n};
  int best = argmin(val, n);
  if (n < KILN_DIAG_MIN_EPOCHS || best < 0) return d;
  int window = n / 3 > 2 ? n / 3 : 2, start = n - 1 - window < 0 ? 0 : n - 1 - window;
  d.best_epoch = best + 1;
  d.best_val = val[best], d.last_val = val[n - 1];
  d.train_at_best = train[best], d.last_train = train[n - 1], d.first_train = train[0];
  d.window_start = start + 1;
  d.train_change = relative_change(train[start], train[n - 1]);
  d.val_change = relative_change(val[start], val[n - 1]);
  bool val_rose = best < n - 1 && d.last_val >= d.best_val * (1 + KILN_DIAG_RISE);
  bool train_fell = d.last_train < d.train_at_best;
  bool flat = fabs(d.train_change) < KILN_DIAG_FLAT && fabs(d.val_change) < KILN_DIAG_FLAT;
  bool high = d.last_train >= KILN_DIAG_HIGH * d.first_train;
  if (val_rose && train_fell)
    d.verdict = KILN_FIT_OVERFITTED;
  else if (flat && high)
    d.verdict = KILN_FIT_UNDERFITTED;
  else
    d.verdict = KILN_FIT_FINE;
  return d;
}

void kiln_diagnosis_explain(const kiln_diagnosis *d, char *buf, size_t size) {
  switch (d->verdict) {
    case KILN_FIT_TOO_SHORT:
      snprintf(buf, size, "%d epoch(s) with a validation loss; the diagnosis needs %d", d->n,
               KILN_DIAG_MIN_EPOCHS);
      break;
    case KILN_FIT_OVERFITTED:
      snprintf(buf, size,
               "val_loss rose from its minimum %.4f (epoch %d) to %.4f (epoch %d, %+.0f%%) while "
               "train_loss fell from %.4f to %.4f; stop earlier (--patience, --keep-best), add "
               "data augmentation, dropout or regularization, or use a smaller model",
               d->best_val, d->best_epoch, d->last_val, d->n, 100 * (d->last_val / d->best_val - 1),
               d->train_at_best, d->last_train);
      break;
    case KILN_FIT_UNDERFITTED:
      snprintf(buf, size,
               "train_loss %.4f is still %.0f%% of the first epoch's %.4f and flat since epoch %d "
               "(%+.1f%%; val_loss %+.1f%%); train longer, raise the learning rate, or use a "
               "larger model",
               d->last_train, 100 * d->last_train / d->first_train, d->first_train, d->window_start,
               100 * d->train_change, 100 * d->val_change);
      break;
    default:
      snprintf(buf, size,
               "val_loss %.4f at the end, lowest %.4f at epoch %d; train_loss %.4f -> %.4f "
               "(%+.1f%% since epoch %d)",
               d->last_val, d->best_val, d->best_epoch, d->first_train, d->last_train,
               100 * d->train_change, d->window_start);
  }
}

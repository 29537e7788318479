// Training data for the generated trainer (train.c): samples and labels loaded whole into memory
// from .npy pairs, IDX files (plain or .gz: the MNIST family) or CSV. Private to the runtime.
#ifndef KILN_TRAIN_DATA_H
#define KILN_TRAIN_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln_runtime.h"

enum { KILN_DATASET_MAX_EXTRA = 8 };

typedef struct kiln_dataset {
  kiln_array x;  // (N, ...) samples, any dtype
  kiln_array y;  // (N, ...) labels or targets, any dtype
  // Further per-sample arrays ("X.npy,Y.npy,E1.npy,..."): the model's other inputs, in order
  // (a condition, per-sample loss weights); (N, ...) each.
  kiln_array extra[KILN_DATASET_MAX_EXTRA];
  int64_t extra_numel[KILN_DATASET_MAX_EXTRA];
  int n_extra;
  double x_scale;    // sample values are multiplied by this (IDX bytes: 1/255)
  int64_t n;         // samples
  int64_t x_numel;   // elements per sample
  int64_t y_numel;   // elements per label
  char source[256];  // for messages
} kiln_dataset;

// Loads SRC: "X.npy,Y.npy[,E1.npy,...]" (E: the extra arrays), "IMAGES.idx[.gz],LABELS.idx[.gz]",
// "fashion-mnist:train|test", "mnist:train|test" (Debian's dataset packages), or "FILE.csv"
// (numbers, label last; a header line of non-numbers is skipped). Returns KILN_OK or an error
// written to err.
int kiln_dataset_load(const char *src, kiln_dataset *out, char *err, size_t errlen);
void kiln_dataset_free(kiln_dataset *d);
// out = the samples idx[0..n) of d, copied (same dtypes and scale); `what` is appended to the
// source's name for messages ("fashion-mnist:train (validation split)").
int kiln_dataset_subset(const kiln_dataset *d, const int64_t *idx, int64_t n, const char *what,
                        kiln_dataset *out, char *err, size_t errlen);
// Holds round(fraction * n) samples out of d, chosen by a permutation drawn from seed: they go
// to val, the others to train, both in d's order. Needs at least one sample on each side.
int kiln_dataset_split(const kiln_dataset *d, double fraction, uint64_t seed, kiln_dataset *train,
                       kiln_dataset *val, char *err, size_t errlen);
// Sample i's element k (scaled) / label i's element k, as double.
double kiln_dataset_x(const kiln_dataset *d, int64_t i, int64_t k);
double kiln_dataset_y(const kiln_dataset *d, int64_t i, int64_t k);
// Extra array j's element k of sample i, as double.
double kiln_dataset_extra(const kiln_dataset *d, int j, int64_t i, int64_t k);

#endif

// Tuned tiling choices (kiln build --tune, docs/performance.md "Auto-tuning"): a table from a
// tunable kernel's key (its op, shapes and target vector width, e.g.
// "conv N1 C64 M64 H56x56 K3x3 S1x1 D1x1 P1,1 L16") to the tile the tuner measured fastest. The
// lowering consults it (kiln_lower_ctx.tuning); kernels without an entry keep the analytical
// choice. A choice only moves work between tiles: every output element is computed by the same
// operations in the same order, so tuned and untuned code give bit-identical results.
//
// Cache file: one entry per line, "KEY = A B  # ms", '#' starts a comment; written atomically.
#ifndef KILN_TUNE_TUNING_H
#define KILN_TUNE_TUNING_H

#include <stdbool.h>
#include <stddef.h>

enum { KILN_TUNE_KEY_MAX = 128 };

// A tile: what the two numbers mean is the op's (conv: output-channel vectors and output columns
// per register tile).
typedef struct kiln_tile_choice {
  int a, b;
} kiln_tile_choice;

typedef struct kiln_tuning_entry {
  char key[KILN_TUNE_KEY_MAX];
  kiln_tile_choice choice;
  double ms;  // the measured median of the choice; 0 if unknown
} kiln_tuning_entry;

typedef struct kiln_tuning {
  kiln_tuning_entry *v;
  int n, cap;
} kiln_tuning;

void kiln_tuning_free(kiln_tuning *t);
// The entry for key, or NULL.
const kiln_tuning_entry *kiln_tuning_find(const kiln_tuning *t, const char *key);
// Adds or replaces key's entry.
void kiln_tuning_set(kiln_tuning *t, const char *key, kiln_tile_choice c, double ms);
// Reads a cache file into t (entries override t's). A missing file is an empty cache; a malformed
// line is an error naming the file and line (written to err).
bool kiln_tuning_load(kiln_tuning *t, const char *path, char *err, size_t err_size);
// Writes t atomically (temporary file + rename), creating the file's directory if needed.
bool kiln_tuning_save(const kiln_tuning *t, const char *path, char *err, size_t err_size);
// The default cache: $KILN_TUNE_CACHE, else $XDG_CACHE_HOME/kiln/tuning.txt, else
// $HOME/.cache/kiln/tuning.txt; NULL if none of them is set.
const char *kiln_tuning_default_path(char *buf, size_t size);

#endif

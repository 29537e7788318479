// Shared between emit_c.c and build.c; not part of the backend's public interface.
#ifndef KILN_BACKENDS_C_INTERNAL_H
#define KILN_BACKENDS_C_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "../../ir/diag.h"
#include "../../ir/loop.h"
#include "../backend.h"

// A file written to `path.tmp.XXXXXX` and renamed over `path` by kiln_c_file_commit. Nothing
// appears at `path` unless the whole file was written.
typedef struct kiln_c_file {
  char *path, *tmp;
  FILE *f;
} kiln_c_file;

// Opens the temporary file (mode 0666 & ~umask). Reports failures to d.
bool kiln_c_file_open(kiln_c_file *cf, const char *path, kiln_diag *d);
// Flushes, closes and renames into place; on any failure removes the temporary file and reports.
bool kiln_c_file_commit(kiln_c_file *cf, kiln_diag *d);
// Closes and removes the temporary file (safe after a failed open or a commit).
void kiln_c_file_abort(kiln_c_file *cf);

// The model's C identifier: p->name made a valid C identifier. Returned string lives in `buf`.
const char *kiln_c_model_ident(const kiln_lprog *p, char *buf, int size);

// Writes DIR/BASE.c and DIR/BASE.h (BASE.c includes "BASE.h"), each through a temporary file.
bool kiln_c_write_sources(const kiln_lprog *p, const kiln_c_options *o, const char *dir,
                          const char *base, kiln_diag *d);
// Writes the weights blob (header + payload) to `path` through a temporary file.
bool kiln_c_write_weights(const kiln_lprog *p, const char *path, kiln_diag *d);
// mkdir -p.
bool kiln_c_mkdirs(const char *dir, kiln_diag *d);

#endif

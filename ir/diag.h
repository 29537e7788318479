// Diagnostics: every user-facing error names the file, the place in it (a JSON path such as
// `nodes[3].attrs.strides`, or a node name) and what was expected. Errors are collected, not
// fatal, so that one run reports all of them (for example every unsupported op at once).
#ifndef KILN_IR_DIAG_H
#define KILN_IR_DIAG_H

#include <stdbool.h>
#include <stdio.h>

enum { KILN_EXIT_OK = 0, KILN_EXIT_INTERNAL = 1, KILN_EXIT_BAD_INPUT = 2 };

typedef struct kiln_diag {
  const char *file;  // file the errors refer to (not owned)
  int errors;
  int max_errors;  // stop recording (but keep counting) past this many
  FILE *out;       // where messages go (stderr by default)
} kiln_diag;

void kiln_diag_init(kiln_diag *d, const char *file);
// Reports "FILE: WHERE: message". `where` may be NULL.
void kiln_diag_error(kiln_diag *d, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool kiln_diag_ok(const kiln_diag *d) { return d->errors == 0; }

#endif

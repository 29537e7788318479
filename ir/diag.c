#include "diag.h"

#include <stdarg.h>

void kiln_diag_init(kiln_diag *d, const char *file) {
  d->file = file;
  d->errors = 0;
  d->max_errors = 100;
  d->out = stderr;
}

void kiln_diag_error(kiln_diag *d, const char *where, const char *fmt, ...) {
  d->errors++;
  if (d->errors > d->max_errors) return;
  fprintf(d->out, "%s: ", d->file ? d->file : "kiln");
  if (where && *where) fprintf(d->out, "%s: ", where);
  fputs("error: ", d->out);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(d->out, fmt, ap);
  va_end(ap);
  fputc('\n', d->out);
  if (d->errors == d->max_errors) fprintf(d->out, "%s: too many errors, stopping here\n", d->file);
}

// Private helpers shared by the runtime's source files (not installed, not part of the API):
// error formatting, shape/size arithmetic, whole-file writes through a temporary file.
#ifndef KILN_RT_INTERNAL_H
#define KILN_RT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln_runtime.h"

#define KILN_RT_ALIGN 64
// Largest array or tensor the runtime accepts from a file (1 TiB); anything larger is corrupt.
#define KILN_RT_MAX_DATA_BYTES ((uint64_t)1 << 40)

// snprintf into err[errlen] when err is non-NULL and errlen > 0.
void kiln_rt_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Element count and byte size of a shape. False if a dimension is negative or the byte size exceeds
// KILN_RT_MAX_DATA_BYTES.
bool kiln_rt_shape_bytes(const int64_t *shape, int rank, size_t elem_size, int64_t *numel,
                         size_t *bytes);

// Checks that an array is well formed (dtype, rank, shape, nbytes, data); false with a message
// naming `path` otherwise.
bool kiln_rt_array_valid(const kiln_array *a, const char *path, char *err, size_t errlen);

// A piece of a file to write.
typedef struct kiln_rt_span {
  const void *data;
  size_t size;
} kiln_rt_span;

// Writes the spans, in order, to a temporary file beside `path` (mode 0644) and renames it onto
// `path`. On failure the temporary file is removed and `path` is left as it was.
int kiln_rt_write_atomic(const char *path, const kiln_rt_span *parts, int nparts, char *err,
                         size_t errlen);

// Size of an open regular file; false for pipes and other files without a size.
bool kiln_rt_file_size(FILE *f, uint64_t *size);

// Reads the header of a weights blob and returns its payload size (checks magic and file size).
int kiln_rt_weights_probe(const char *path, uint64_t *payload_bytes, char *err, size_t errlen);

#endif

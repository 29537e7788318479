// Status messages, the element-type table and the small kiln_array helpers.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

const char *kiln_status_str(int status) {
  switch (status) {
    case KILN_OK: return "success";
    case KILN_ERR_ARG: return "invalid argument";
    case KILN_ERR_IO: return "file could not be opened, read or written";
    case KILN_ERR_FORMAT: return "file is malformed or truncated";
    case KILN_ERR_SHAPE: return "array has the wrong shape";
    case KILN_ERR_DTYPE: return "array has the wrong element type";
    case KILN_ERR_NOMEM: return "out of memory";
    case KILN_ERR_WEIGHTS: return "weights do not belong to this model";
    case KILN_ERR_CPU:
      return "this model was compiled for AMX tiles (kiln --target native on an AMX host), which "
             "this CPU or operating system does not provide: rebuild it with --target native-noamx "
             "or --target avx512";
    default: return "unknown error";
  }
}

static const struct {
  const char *name;
  size_t size;
} dtype_table[KILN_RT_DTYPE_COUNT] = {
    [KILN_RT_F32] = {"f32", 4},   [KILN_RT_F64] = {"f64", 8}, [KILN_RT_I8] = {"i8", 1},
    [KILN_RT_U8] = {"u8", 1},     [KILN_RT_I32] = {"i32", 4}, [KILN_RT_I64] = {"i64", 8},
    [KILN_RT_BOOL] = {"bool", 1},
};

static bool dtype_known(int dtype) { return dtype >= 0 && dtype < KILN_RT_DTYPE_COUNT; }

size_t kiln_rt_dtype_size(int dtype) { return dtype_known(dtype) ? dtype_table[dtype].size : 0; }

const char *kiln_rt_dtype_name(int dtype) {
  return dtype_known(dtype) ? dtype_table[dtype].name : "?";
}

void kiln_rt_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

bool kiln_rt_shape_bytes(const int64_t *shape, int rank, size_t elem_size, int64_t *numel,
                         size_t *bytes) {
  if (rank < 0 || rank > KILN_RT_MAX_RANK || elem_size == 0) return false;
  bool empty = false;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0) return false;
    if (shape[i] == 0) empty = true;
  }
  uint64_t count = 1;
  for (int i = 0; i < rank && !empty; i++) {
    uint64_t d = (uint64_t)shape[i];
    if (d > KILN_RT_MAX_DATA_BYTES / elem_size / count) return false;
    count *= d;
  }
  if (empty) count = 0;
  if (numel) *numel = (int64_t)count;
  if (bytes) *bytes = (size_t)(count * elem_size);
  return true;
}

bool kiln_rt_array_valid(const kiln_array *a, const char *path, char *err, size_t errlen) {
  if (!a) {
    kiln_rt_errf(err, errlen, "%s: no array given", path);
    return false;
  }
  if (!dtype_known(a->dtype)) {
    kiln_rt_errf(err, errlen, "%s: unknown dtype code %d", path, a->dtype);
    return false;
  }
  size_t bytes = 0;
  if (!kiln_rt_shape_bytes(a->shape, a->rank, kiln_rt_dtype_size(a->dtype), NULL, &bytes)) {
    kiln_rt_errf(err, errlen, "%s: invalid shape (rank %d)", path, a->rank);
    return false;
  }
  if (bytes != a->nbytes || (bytes > 0 && !a->data)) {
    kiln_rt_errf(err, errlen, "%s: array holds %zu bytes, its shape needs %zu", path,
                 a->data ? a->nbytes : 0, bytes);
    return false;
  }
  return true;
}

int64_t kiln_array_numel(const kiln_array *a) {
  int64_t numel = 0;
  if (!a || !kiln_rt_shape_bytes(a->shape, a->rank, 1, &numel, NULL)) return -1;
  return numel;
}

void kiln_array_free(kiln_array *a) {
  if (!a) return;
  kiln_aligned_free(a->data);
  memset(a, 0, sizeof *a);
}

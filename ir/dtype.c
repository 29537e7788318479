#include "dtype.h"

#include <math.h>
#include <string.h>

static const struct {
  const char *name;
  const char *ctype;
  size_t size;
} dtype_table[KILN_DTYPE_COUNT] = {
    [KILN_F32] = {"f32", "float", 4},     [KILN_F64] = {"f64", "double", 8},
    [KILN_I8] = {"i8", "int8_t", 1},      [KILN_U8] = {"u8", "uint8_t", 1},
    [KILN_I32] = {"i32", "int32_t", 4},   [KILN_I64] = {"i64", "int64_t", 8},
    [KILN_BOOL] = {"bool", "uint8_t", 1},
};

const char *kiln_dtype_name(kiln_dtype t) {
  return t < KILN_DTYPE_COUNT ? dtype_table[t].name : "?";
}
const char *kiln_dtype_ctype(kiln_dtype t) {
  return t < KILN_DTYPE_COUNT ? dtype_table[t].ctype : "?";
}
size_t kiln_dtype_size(kiln_dtype t) { return t < KILN_DTYPE_COUNT ? dtype_table[t].size : 0; }
bool kiln_dtype_is_float(kiln_dtype t) { return t == KILN_F32 || t == KILN_F64; }

bool kiln_dtype_parse(const char *s, kiln_dtype *out) {
  for (int t = 0; t < KILN_DTYPE_COUNT; t++) {
    if (strcmp(s, dtype_table[t].name) == 0) {
      *out = (kiln_dtype)t;
      return true;
    }
  }
  return false;
}

double kiln_dtype_round(kiln_dtype t, double v) {
  switch (t) {
    case KILN_F32: return (double)(float)v;
    case KILN_F64: return v;
    case KILN_I8: return (double)(int8_t)(int64_t)v;
    case KILN_U8: return (double)(uint8_t)(int64_t)v;
    case KILN_I32: return (double)(int32_t)(int64_t)v;
    case KILN_I64: return (double)(int64_t)v;
    case KILN_BOOL: return v != 0.0 ? 1.0 : 0.0;
    default: return v;
  }
}

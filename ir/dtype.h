// Element types shared by the graph IR, the loop IR, the runtime and the backends.
#ifndef KILN_IR_DTYPE_H
#define KILN_IR_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  KILN_F32,
  KILN_F64,
  KILN_I8,
  KILN_U8,
  KILN_I32,
  KILN_I64,
  KILN_BOOL,
  KILN_DTYPE_COUNT
} kiln_dtype;

const char *kiln_dtype_name(kiln_dtype t);   // "f32", "f64", ...
const char *kiln_dtype_ctype(kiln_dtype t);  // "float", "double", "int8_t", ...
size_t kiln_dtype_size(kiln_dtype t);
bool kiln_dtype_is_float(kiln_dtype t);
bool kiln_dtype_parse(const char *s, kiln_dtype *out);
// Rounds a double to what a tensor of dtype t can hold (f32 rounding, integer truncation).
double kiln_dtype_round(kiln_dtype t, double v);

#endif

// Parameter initializers of the model format (`params[i].init`, docs/model-format.md): zeros,
// ones, constant, values, normal, uniform, xavier_uniform, xavier_normal, kaiming_uniform and
// kaiming_normal. Internal to the frontend.
//
// Checking and filling are separate so that nothing is allocated for a param whose `init` is bad:
// kiln_init_parse validates every field (unknown fields, types, ranges, the dtype, `values`
// length and integrality) and kiln_init_fill then cannot fail.
//
// Random values are deterministic on every machine: a SplitMix64 stream seeded with `seed` gives
// uniform doubles in [0, 1) from the top 53 bits of each output. Normal values use Box–Muller and
// use BOTH values of each pair: elements 2k and 2k+1 get r·cos(θ) and r·sin(θ) from draws u1, u2
// (r = √(-2·ln(1 - u1)), θ = 2π·u2). Values are computed in double, then rounded to the param's
// dtype (f32 rounding); random kinds need a float dtype.
#ifndef KILN_INITIALIZERS_H
#define KILN_INITIALIZERS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "../ir/diag.h"
#include "../ir/graph.h"

typedef enum {
  KILN_INIT_ZEROS,
  KILN_INIT_ONES,
  KILN_INIT_CONSTANT,
  KILN_INIT_VALUES,
  KILN_INIT_NORMAL,
  KILN_INIT_UNIFORM,
  KILN_INIT_XAVIER_UNIFORM,
  KILN_INIT_XAVIER_NORMAL,
  KILN_INIT_KAIMING_UNIFORM,
  KILN_INIT_KAIMING_NORMAL,
} kiln_init_kind;

// A checked initializer. `json` borrows the JSON document (valid while it lives).
typedef struct kiln_init_spec {
  kiln_init_kind kind;
  double value;      // constant
  double mean, std;  // normal; also xavier_normal / kaiming_normal after parsing
  double low, high;  // uniform; also xavier_uniform / kaiming_uniform (±bound) after parsing
  uint64_t seed;
  json_object *json;  // values: the array; constant: the value (integers are stored exactly)
} kiln_init_spec;

// Checks the `init` object of a param with the given dtype and shape (both already valid).
// `where` is its JSON path, e.g. "params[2].init". Reports every problem; false if any.
bool kiln_init_parse(json_object *init, const char *where, kiln_dtype dtype,
                     const kiln_shape *shape, kiln_init_spec *out, kiln_diag *d);

// Writes numel(shape) elements of dtype to data (little-endian raw values).
void kiln_init_fill(const kiln_init_spec *spec, kiln_dtype dtype, const kiln_shape *shape,
                    void *data);

// Short description of a JSON value for "got ..." in messages: `-3`, `"abc"`, `an array of 3
// elements`, `an object`, ... Writes into buf[size] and returns buf.
const char *kiln_json_describe(json_object *v, char *buf, int size);

// Reads an integer JSON value (json_type_int only, not 2.0) into *out. False if v is not an
// integer or does not fit in int64.
bool kiln_json_int64(json_object *v, int64_t *out);

// A model node {"op", "name", "inputs", "outputs"} (docs/model-format.md); takes ownership of the
// two arrays. kiln_json_strings: a JSON array of n strings.
json_object *kiln_json_node(const char *op, const char *name, json_object *inputs,
                            json_object *outputs);
json_object *kiln_json_strings(int n, const char *const *strings);

// Reads a finite number (integer or double) into *out. False otherwise (NaN, Infinity, 1e400).
bool kiln_json_number(json_object *v, double *out);

// Reports an error written as "PATH: message" in one format string (e.g. "%s.kind: unknown init
// kind"): PATH, up to the first ": " outside parentheses and quotes, becomes the diagnostic's
// `where`, so the output reads "FILE: PATH: error: message" like the ops' errors.
void kiln_fe_error(kiln_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

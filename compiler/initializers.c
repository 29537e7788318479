// Parameter initializers: checking (kiln_init_parse) and filling (kiln_init_fill). See
// initializers.h for the random number conventions.
#include "initializers.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Kiln stores param data as native values and assumes a little-endian host"
#endif

// ---- Helpers shared with the frontend ----

void kiln_fe_error(kiln_diag *d, const char *fmt, ...) {
  char small[1024], *msg = small;
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof small) {
    msg = kiln_xmalloc((size_t)n + 1);
    vsnprintf(msg, (size_t)n + 1, fmt, ap2);
  }
  va_end(ap2);
  // Split "PATH: message" at the first ": " outside (...) and quotes.
  int depth = 0;
  char quote = 0;
  char *split = NULL;
  for (char *c = msg; *c && !split; c++) {
    if (quote) {
      if (*c == quote) quote = 0;
    } else if (*c == '\'' || *c == '"') {
      quote = *c;
    } else if (*c == '(') {
      depth++;
    } else if (*c == ')') {
      depth--;
    } else if (depth == 0 && c[0] == ':' && c[1] == ' ' && c != msg) {
      split = c;
    }
  }
  if (split) {
    *split = 0;
    kiln_diag_error(d, msg, "%s", split + 2);
  } else {
    kiln_diag_error(d, NULL, "%s", msg);
  }
  if (msg != small) free(msg);
}

json_object *kiln_json_node(const char *op, const char *name, json_object *inputs,
                            json_object *outputs) {
  json_object *node = json_object_new_object();
  json_object_object_add(node, "op", json_object_new_string(op));
  json_object_object_add(node, "name", json_object_new_string(name));
  json_object_object_add(node, "inputs", inputs);
  json_object_object_add(node, "outputs", outputs);
  return node;
}

json_object *kiln_json_strings(int n, const char *const *strings) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < n; i++) json_object_array_add(a, json_object_new_string(strings[i]));
  return a;
}

const char *kiln_json_describe(json_object *v, char *buf, int size) {
  switch (json_object_get_type(v)) {
    case json_type_null: snprintf(buf, (size_t)size, "null"); break;
    case json_type_boolean:
      snprintf(buf, (size_t)size, "%s", json_object_get_boolean(v) ? "true" : "false");
      break;
    case json_type_int: {
      int64_t i = json_object_get_int64(v);
      if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)
        snprintf(buf, (size_t)size, "%" PRIu64, json_object_get_uint64(v));
      else
        snprintf(buf, (size_t)size, "%" PRId64, i);
      break;
    }
    case json_type_double: {
      double f = json_object_get_double(v);
      if (isfinite(f) && f == floor(f) && fabs(f) < 1e15)
        snprintf(buf, (size_t)size, "%.1f", f);  // "2.0", so that it reads as not an integer
      else if (snprintf(buf, (size_t)size, "%.15g", f) > 0 && strtod(buf, NULL) != f)
        snprintf(buf, (size_t)size, "%.17g", f);  // the shorter form does not read back exactly
      break;
    }
    case json_type_string: {
      const char *s = json_object_get_string(v);
      int n = json_object_get_string_len(v);
      snprintf(buf, (size_t)size, "\"%.*s%s\"", n > 40 ? 40 : n, s, n > 40 ? "..." : "");
      break;
    }
    case json_type_array: {
      size_t n = json_object_array_length(v);
      snprintf(buf, (size_t)size, "an array of %zu element%s", n, n == 1 ? "" : "s");
      break;
    }
    case json_type_object: snprintf(buf, (size_t)size, "an object"); break;
  }
  return buf;
}

bool kiln_json_int64(json_object *v, int64_t *out) {
  if (!json_object_is_type(v, json_type_int)) return false;
  int64_t i = json_object_get_int64(v);
  // json-c keeps integers above INT64_MAX as uint64 (and saturates beyond UINT64_MAX).
  if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX) return false;
  *out = i;
  return true;
}

bool kiln_json_number(json_object *v, double *out) {
  if (json_object_is_type(v, json_type_int)) {
    int64_t i = json_object_get_int64(v);
    *out = (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)
               ? (double)json_object_get_uint64(v)
               : (double)i;
    return true;
  }
  if (!json_object_is_type(v, json_type_double)) return false;
  double f = json_object_get_double(v);
  if (!isfinite(f)) return false;
  *out = f;
  return true;
}

// ---- Kinds and their fields ----

static const struct {
  const char *name;
  kiln_init_kind kind;
  const char *fields[4];  // besides `kind`; NULL-terminated
  bool random;
} kinds[] = {
    {"zeros", KILN_INIT_ZEROS, {0}, false},
    {"ones", KILN_INIT_ONES, {0}, false},
    {"constant", KILN_INIT_CONSTANT, {"value", 0}, false},
    {"values", KILN_INIT_VALUES, {"values", 0}, false},
    {"normal", KILN_INIT_NORMAL, {"mean", "std", "seed", 0}, true},
    {"uniform", KILN_INIT_UNIFORM, {"low", "high", "seed", 0}, true},
    {"xavier_uniform", KILN_INIT_XAVIER_UNIFORM, {"gain", "seed", 0}, true},
    {"xavier_normal", KILN_INIT_XAVIER_NORMAL, {"gain", "seed", 0}, true},
    {"kaiming_uniform", KILN_INIT_KAIMING_UNIFORM, {"a", "seed", 0}, true},
    {"kaiming_normal", KILN_INIT_KAIMING_NORMAL, {"a", "seed", 0}, true},
};
enum { N_KINDS = sizeof(kinds) / sizeof(kinds[0]) };

static int64_t numel_of(const kiln_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

// Range of the integer dtypes, as doubles (exact for all but i64's upper end, handled below).
static void int_range(kiln_dtype t, double *lo, double *hi) {
  switch (t) {
    case KILN_I8: *lo = -128, *hi = 127; break;
    case KILN_U8: *lo = 0, *hi = 255; break;
    case KILN_I32: *lo = -2147483648.0, *hi = 2147483647.0; break;
    case KILN_BOOL: *lo = 0, *hi = 1; break;
    default: *lo = -9223372036854775808.0, *hi = 9223372036854775807.0; break;
  }
}

// Checks that JSON number v can be stored in dtype t; on failure writes the reason to why.
static bool value_fits(json_object *v, kiln_dtype t, char *why, int size) {
  char got[96];
  double f;
  if (!kiln_json_number(v, &f)) {
    snprintf(why, (size_t)size, "expected a finite number, got %s", kiln_json_describe(v, got, 96));
    return false;
  }
  if (kiln_dtype_is_float(t)) {
    if (t == KILN_F32 && isinf((float)f)) {
      snprintf(why, (size_t)size, "%s is out of range for f32", kiln_json_describe(v, got, 96));
      return false;
    }
    return true;
  }
  int64_t i;
  bool is_int = kiln_json_int64(v, &i);
  if (!is_int && (json_object_is_type(v, json_type_int) || f != floor(f))) {
    if (json_object_is_type(v, json_type_int))
      snprintf(why, (size_t)size, "%s is out of range for %s", kiln_json_describe(v, got, 96),
               kiln_dtype_name(t));
    else
      snprintf(why, (size_t)size, "expected an integer for dtype %s, got %s", kiln_dtype_name(t),
               kiln_json_describe(v, got, 96));
    return false;
  }
  double lo, hi;
  int_range(t, &lo, &hi);
  bool ok = is_int ? (t == KILN_I64 || ((double)i >= lo && (double)i <= hi))
                   : (f >= lo && f < (t == KILN_I64 ? 9223372036854775808.0 : hi + 1));
  if (!ok) {
    snprintf(why, (size_t)size, "%s is out of range for %s%s", kiln_json_describe(v, got, 96),
             kiln_dtype_name(t), t == KILN_BOOL ? " (use 0 or 1)" : "");
    return false;
  }
  return true;
}

// Reads an optional finite number field; reports and returns false on a bad one.
static bool opt_number(json_object *init, const char *field, const char *where, double dflt,
                       double *out, kiln_diag *d) {
  json_object *v;
  *out = dflt;
  if (!json_object_object_get_ex(init, field, &v)) return true;
  char got[96];
  if (!kiln_json_number(v, out)) {
    kiln_fe_error(d, "%s.%s: expected a finite number, got %s", where, field,
                  kiln_json_describe(v, got, 96));
    return false;
  }
  return true;
}

// fan_in / fan_out, PyTorch's convention (see docs/model-format.md).
static void fans(const kiln_shape *s, double *fan_in, double *fan_out) {
  if (s->rank == 1) {
    *fan_in = *fan_out = (double)s->dim[0];
    return;
  }
  double rf = 1;
  for (int i = 2; i < s->rank; i++) rf *= (double)s->dim[i];
  *fan_in = (double)s->dim[1] * rf;
  *fan_out = (double)s->dim[0] * rf;
}

bool kiln_init_parse(json_object *init, const char *where, kiln_dtype dtype,
                     const kiln_shape *shape, kiln_init_spec *out, kiln_diag *d) {
  char got[96];
  memset(out, 0, sizeof(*out));
  if (!json_object_is_type(init, json_type_object)) {
    kiln_diag_error(d, where, "expected an object such as {\"kind\": \"zeros\"}, got %s",
                    kiln_json_describe(init, got, 96));
    return false;
  }
  json_object *kv;
  if (!json_object_object_get_ex(init, "kind", &kv)) {
    kiln_diag_error(d, where, "missing required field 'kind'");
    return false;
  }
  if (!json_object_is_type(kv, json_type_string)) {
    kiln_fe_error(d, "%s.kind: expected a string, got %s", where, kiln_json_describe(kv, got, 96));
    return false;
  }
  const char *kname = json_object_get_string(kv);
  int k = 0;
  while (k < N_KINDS && strcmp(kinds[k].name, kname) != 0) k++;
  if (k == N_KINDS) {
    char list[256] = "";
    for (int j = 0; j < N_KINDS; j++) {
      strcat(list, j ? ", " : "");
      strcat(list, kinds[j].name);
    }
    kiln_fe_error(d, "%s.kind: unknown init kind %s; expected one of %s", where,
                  kiln_json_describe(kv, got, 96), list);
    return false;
  }
  out->kind = kinds[k].kind;
  bool ok = true;

  // Unknown fields for this kind.
  json_object_object_foreach(init, key, val) {
    (void)val;
    if (strcmp(key, "kind") == 0) continue;
    bool known = false;
    for (int j = 0; kinds[k].fields[j]; j++) known |= strcmp(kinds[k].fields[j], key) == 0;
    if (known) continue;
    char list[128] = "kind";
    for (int j = 0; kinds[k].fields[j]; j++) {
      strcat(list, ", ");
      strcat(list, kinds[k].fields[j]);
    }
    kiln_fe_error(d, "%s.%.100s: unknown field for kind '%s'; expected %s%s", where, key, kname,
                  kinds[k].fields[0] ? "one of " : "", list);
    ok = false;
  }

  if (kinds[k].random) {
    if (!kiln_dtype_is_float(dtype)) {
      kiln_fe_error(d, "%s.kind: %s init needs a float dtype (f32 or f64), not %s", where, kname,
                    kiln_dtype_name(dtype));
      ok = false;
    }
    json_object *sv;
    if (json_object_object_get_ex(init, "seed", &sv)) {
      int64_t seed;
      if (!kiln_json_int64(sv, &seed) || seed < 0) {
        kiln_fe_error(d, "%s.seed: expected an integer >= 0, got %s", where,
                      kiln_json_describe(sv, got, 96));
        ok = false;
      } else {
        out->seed = (uint64_t)seed;
      }
    }
  }

  char why[200];
  switch (out->kind) {
    case KILN_INIT_ZEROS:
    case KILN_INIT_ONES: break;
    case KILN_INIT_CONSTANT: {
      json_object *v;
      if (!json_object_object_get_ex(init, "value", &v)) {
        kiln_diag_error(d, where, "kind 'constant' needs a field 'value' (a number)");
        ok = false;
      } else if (!value_fits(v, dtype, why, sizeof why)) {
        kiln_fe_error(d, "%s.value: %s", where, why);
        ok = false;
      } else {
        kiln_json_number(v, &out->value);
        out->json = v;
      }
      break;
    }
    case KILN_INIT_VALUES: {
      json_object *v;
      if (!json_object_object_get_ex(init, "values", &v)) {
        kiln_diag_error(d, where, "kind 'values' needs a field 'values' (an array of numbers)");
        ok = false;
        break;
      }
      if (!json_object_is_type(v, json_type_array)) {
        kiln_fe_error(d, "%s.values: expected an array of numbers, got %s", where,
                      kiln_json_describe(v, got, 96));
        ok = false;
        break;
      }
      size_t n = json_object_array_length(v);
      int64_t numel = numel_of(shape);
      if ((uint64_t)n != (uint64_t)numel) {
        char sbuf[200];
        kiln_fe_error(d, "%s.values: has %zu value%s, but shape %s needs %" PRId64, where, n,
                      n == 1 ? "" : "s", kiln_shape_str(shape, sbuf, sizeof sbuf), numel);
        ok = false;
        break;
      }
      size_t bad = 0, first = 0;
      char first_why[200] = "";
      for (size_t i = 0; i < n; i++) {
        if (!value_fits(json_object_array_get_idx(v, i), dtype, why, sizeof why)) {
          if (bad++ == 0) {
            first = i;
            memcpy(first_why, why, sizeof why);
          }
        }
      }
      if (bad) {
        if (bad > 1)
          kiln_fe_error(d, "%s.values[%zu]: %s (and %zu more bad value%s)", where, first, first_why,
                        bad - 1, bad == 2 ? "" : "s");
        else
          kiln_fe_error(d, "%s.values[%zu]: %s", where, first, first_why);
        ok = false;
      }
      out->json = v;
      break;
    }
    case KILN_INIT_NORMAL:
      ok &= opt_number(init, "mean", where, 0, &out->mean, d);
      if (opt_number(init, "std", where, 1, &out->std, d) && out->std < 0) {
        kiln_fe_error(d, "%s.std: must be >= 0, got %g", where, out->std);
        ok = false;
      }
      break;
    case KILN_INIT_UNIFORM: {
      bool lo_ok = opt_number(init, "low", where, 0, &out->low, d);
      bool hi_ok = opt_number(init, "high", where, 1, &out->high, d);
      ok &= lo_ok && hi_ok;
      if (lo_ok && hi_ok && !(out->low <= out->high)) {
        kiln_diag_error(d, where, "low (%g) must be <= high (%g)", out->low, out->high);
        ok = false;
      }
      break;
    }
    case KILN_INIT_XAVIER_UNIFORM:
    case KILN_INIT_XAVIER_NORMAL:
    case KILN_INIT_KAIMING_UNIFORM:
    case KILN_INIT_KAIMING_NORMAL: {
      bool xavier = out->kind == KILN_INIT_XAVIER_UNIFORM || out->kind == KILN_INIT_XAVIER_NORMAL;
      bool uniform =
          out->kind == KILN_INIT_XAVIER_UNIFORM || out->kind == KILN_INIT_KAIMING_UNIFORM;
      double p;
      if (!opt_number(init, xavier ? "gain" : "a", where, xavier ? 1 : 0, &p, d)) {
        ok = false;
        break;
      }
      if (shape->rank < 1) {
        kiln_fe_error(d, "%s.kind: %s init needs a shape of rank >= 1 (it uses fan_in%s)", where,
                      kname, xavier ? " and fan_out" : "");
        ok = false;
        break;
      }
      double fan_in, fan_out;
      fans(shape, &fan_in, &fan_out);
      // `scale` is the bound of the uniform case; the normal case's std is scale / √3.
      double scale =
          xavier ? fabs(p) * sqrt(6.0 / (fan_in + fan_out)) : sqrt(6.0 / ((1 + p * p) * fan_in));
      if (uniform) {
        out->low = -scale;
        out->high = scale;
      } else {
        out->mean = 0;
        out->std =
            xavier ? fabs(p) * sqrt(2.0 / (fan_in + fan_out)) : sqrt(2.0 / ((1 + p * p) * fan_in));
      }
      if (!isfinite(scale)) {
        kiln_diag_error(d, where, "%s init with this shape and parameter gives a non-finite scale",
                        kname);
        ok = false;
      }
      break;
    }
  }
  return ok;
}

// ---- Filling ----

static void store_double(kiln_dtype t, void *data, int64_t i, double v) {
  switch (t) {
    case KILN_F32: ((float *)data)[i] = (float)v; break;
    case KILN_F64: ((double *)data)[i] = v; break;
    case KILN_I8: ((int8_t *)data)[i] = (int8_t)v; break;
    case KILN_U8: ((uint8_t *)data)[i] = (uint8_t)v; break;
    case KILN_I32: ((int32_t *)data)[i] = (int32_t)v; break;
    case KILN_I64: ((int64_t *)data)[i] = (int64_t)v; break;
    case KILN_BOOL: ((uint8_t *)data)[i] = v != 0.0; break;
    default: break;
  }
}

static void store_int(kiln_dtype t, void *data, int64_t i, int64_t v) {
  switch (t) {
    case KILN_I8: ((int8_t *)data)[i] = (int8_t)v; break;
    case KILN_U8: ((uint8_t *)data)[i] = (uint8_t)v; break;
    case KILN_I32: ((int32_t *)data)[i] = (int32_t)v; break;
    case KILN_I64: ((int64_t *)data)[i] = v; break;
    case KILN_BOOL: ((uint8_t *)data)[i] = v != 0; break;
    default: store_double(t, data, i, (double)v); break;
  }
}

// SplitMix64 (Steele, Lea, Flood 2014), the reference constants.
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) from the top 53 bits.
static double next_uniform(uint64_t *state) {
  return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

void kiln_init_fill(const kiln_init_spec *spec, kiln_dtype dtype, const kiln_shape *shape,
                    void *data) {
  int64_t n = numel_of(shape);
  uint64_t state = spec->seed;
  switch (spec->kind) {
    case KILN_INIT_ZEROS: memset(data, 0, (size_t)n * kiln_dtype_size(dtype)); break;
    case KILN_INIT_ONES:
      for (int64_t i = 0; i < n; i++) store_int(dtype, data, i, 1);
      break;
    case KILN_INIT_CONSTANT: {
      int64_t iv;
      bool exact = !kiln_dtype_is_float(dtype) && kiln_json_int64(spec->json, &iv);
      for (int64_t i = 0; i < n; i++) {
        if (exact)
          store_int(dtype, data, i, iv);  // exact, also for i64 beyond 2^53
        else
          store_double(dtype, data, i, spec->value);
      }
      break;
    }
    case KILN_INIT_VALUES:
      for (int64_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(spec->json, (size_t)i);
        int64_t iv;
        double f = 0;
        if (!kiln_dtype_is_float(dtype) && kiln_json_int64(v, &iv)) {
          store_int(dtype, data, i, iv);  // exact, also for i64 beyond 2^53
        } else {
          kiln_json_number(v, &f);
          store_double(dtype, data, i, f);
        }
      }
      break;
    case KILN_INIT_UNIFORM:
    case KILN_INIT_XAVIER_UNIFORM:
    case KILN_INIT_KAIMING_UNIFORM:
      for (int64_t i = 0; i < n; i++) {
        double u = next_uniform(&state);
        store_double(dtype, data, i, spec->low + (spec->high - spec->low) * u);
      }
      break;
    case KILN_INIT_NORMAL:
    case KILN_INIT_XAVIER_NORMAL:
    case KILN_INIT_KAIMING_NORMAL:
      for (int64_t i = 0; i < n; i += 2) {
        double u1 = next_uniform(&state), u2 = next_uniform(&state);
        double r = sqrt(-2.0 * log(1.0 - u1));  // 1 - u1 is in (0, 1]
        double theta = 2.0 * M_PI * u2;
        store_double(dtype, data, i, spec->mean + spec->std * r * cos(theta));
        if (i + 1 < n) store_double(dtype, data, i + 1, spec->mean + spec->std * r * sin(theta));
      }
      break;
  }
}

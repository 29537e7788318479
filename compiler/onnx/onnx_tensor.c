// ONNX TensorProto → kiln_array: dtype mapping, dims, and the three places ONNX keeps tensor data
// (raw_data, the typed repeated field of the dtype, an external file beside the model). Also reads
// the serialized TensorProto files of the ONNX backend tests.
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx_import.h"
#include "onnx_internal.h"

#define MAX_TENSOR_BYTES (kiln_limits_get()->tensor_bytes)  // KILN_LIMITS tensor-bytes

bool kiln_onnx_dtype(int onnx_type, kiln_dtype *out) {
  switch (onnx_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: *out = KILN_F32; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: *out = KILN_F64; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: *out = KILN_I8; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: *out = KILN_U8; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: *out = KILN_I32; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: *out = KILN_I64; return true;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: *out = KILN_BOOL; return true;
    default: return false;
  }
}

const char *kiln_onnx_dtype_name(int onnx_type, char *buf) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&onnx__tensor_proto__data_type__descriptor, onnx_type);
  if (v) return v->name;
  snprintf(buf, 32, "type %d", onnx_type);
  return buf;
}

unsigned char *kiln_onnx_read_file(const char *path, size_t limit, size_t *len, char *err,
                                   size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "'%s' is not a regular file", path);
    fclose(f);
    return NULL;
  }
  if ((uint64_t)st.st_size > limit) {
    snprintf(err, errlen, "'%s' is %lld bytes; the limit is %zu", path, (long long)st.st_size,
             limit);
    fclose(f);
    return NULL;
  }
  size_t size = (size_t)st.st_size;
  unsigned char *buf = malloc(size ? size : 1);
  size_t got = buf ? fread(buf, 1, size, f) : 0;
  bool failed = !buf || ferror(f) || got != size;
  fclose(f);
  if (failed) {
    snprintf(err, errlen, "cannot read '%s'", path);
    free(buf);
    return NULL;
  }
  *len = size;
  return buf;
}

// Checks dims (rank <= 8, each >= 0, total size sane) and fills the array's header.
static bool set_header(const Onnx__TensorProto *t, kiln_dtype dtype, kiln_array *out, char *err,
                       size_t errlen) {
  if (t->n_dims > KILN_RT_MAX_RANK) {
    snprintf(err, errlen, "rank %zu is more than the maximum %d", t->n_dims, KILN_RT_MAX_RANK);
    return false;
  }
  int64_t bytes = (int64_t)kiln_dtype_size(dtype);
  for (size_t i = 0; i < t->n_dims; i++) {
    int64_t d = t->dims[i];
    if (d < 0 || (d > 0 && bytes > MAX_TENSOR_BYTES / d)) {
      snprintf(err, errlen, "dims[%zu] = %lld is negative or absurdly large", i, (long long)d);
      return false;
    }
    bytes *= d;
    out->shape[i] = d;
  }
  out->dtype = (int)dtype;
  out->rank = (int)t->n_dims;
  out->nbytes = (size_t)bytes;
  return true;
}

// The number of values in the typed repeated field of t's dtype (and the field's name).
static size_t typed_count(const Onnx__TensorProto *t, kiln_dtype dtype, const char **field) {
  switch (dtype) {
    case KILN_F32: return *field = "float_data", t->n_float_data;
    case KILN_F64: return *field = "double_data", t->n_double_data;
    case KILN_I64: return *field = "int64_data", t->n_int64_data;
    default: return *field = "int32_data", t->n_int32_data;
  }
}

// Whether the data in the file (raw_data or the typed field) is as large as dims and dtype say;
// checked before the array is allocated, so a header promising gigabytes allocates nothing.
static bool inline_data_matches(const Onnx__TensorProto *t, kiln_dtype dtype, const kiln_array *a,
                                char *err, size_t errlen) {
  if (t->has_raw_data) {
    if (t->raw_data.len == a->nbytes) return true;
    snprintf(err, errlen, "raw_data has %zu bytes, but dims and dtype give %zu", t->raw_data.len,
             a->nbytes);
    return false;
  }
  const char *field;
  size_t have = typed_count(t, dtype, &field);
  if (have == (size_t)kiln_array_numel(a)) return true;
  snprintf(err, errlen, "%s has %zu values, but dims give %lld elements (and there is no raw_data)",
           field, have, (long long)kiln_array_numel(a));
  return false;
}

// Copies the typed repeated field of t's dtype (n values, checked by inline_data_matches).
static void copy_typed(const Onnx__TensorProto *t, kiln_dtype dtype, int64_t n, void *dst) {
  for (int64_t i = 0; i < n; i++) {
    switch (dtype) {
      case KILN_F32: ((float *)dst)[i] = t->float_data[i]; break;
      case KILN_F64: ((double *)dst)[i] = t->double_data[i]; break;
      case KILN_I64: ((int64_t *)dst)[i] = t->int64_data[i]; break;
      default: kiln_element_set(dst, (int)dtype, i, (double)t->int32_data[i]); break;
    }
  }
}

static const char *external_key(const Onnx__TensorProto *t, const char *key) {
  for (size_t i = 0; i < t->n_external_data; i++)
    if (t->external_data[i]->key && strcmp(t->external_data[i]->key, key) == 0)
      return t->external_data[i]->value ? t->external_data[i]->value : "";
  return NULL;
}

// A non-negative decimal integer (the format of external_data offset/length).
static bool parse_size(const char *s, int64_t *out) {
  if (!s || !*s) return false;
  int64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return true;
}

// location must name a file inside model_dir: relative, no "..", and still inside once symbolic
// links are resolved.
static char *resolve_location(const char *model_dir, const char *loc, char *err, size_t errlen) {
  bool escapes = loc[0] == '/' || strcmp(loc, "..") == 0 || strncmp(loc, "../", 3) == 0 ||
                 strstr(loc, "/../") ||
                 (strlen(loc) >= 3 && strcmp(loc + strlen(loc) - 3, "/..") == 0);
  if (!*loc || escapes) {
    snprintf(err, errlen,
             "external data location '%s' is not a relative path inside the model's directory",
             loc);
    return NULL;
  }
  char *joined = NULL;
  if (asprintf(&joined, "%s/%s", model_dir, loc) < 0) return NULL;
  char *dir_real = realpath(model_dir, NULL), *file_real = realpath(joined, NULL);
  bool inside = dir_real && file_real && strncmp(file_real, dir_real, strlen(dir_real)) == 0 &&
                file_real[strlen(dir_real)] == '/';
  if (!file_real)
    snprintf(err, errlen, "external data file '%s': %s", joined, strerror(errno));
  else if (!inside)
    snprintf(err, errlen, "external data location '%s' resolves outside the model's directory",
             loc);
  free(dir_real);
  free(file_real);
  if (!inside) {
    free(joined);
    return NULL;
  }
  return joined;
}

// Opens t's external data file positioned at its offset, once the file is known to hold nbytes
// there; checked before the array is allocated, so a header promising gigabytes allocates nothing.
static FILE *open_external(const Onnx__TensorProto *t, const char *model_dir, size_t nbytes,
                           char *err, size_t errlen) {
  const char *loc = external_key(t, "location"), *off_s = external_key(t, "offset"),
             *len_s = external_key(t, "length");
  int64_t off = 0, len = (int64_t)nbytes;
  if (!loc) {
    snprintf(err, errlen, "data_location is EXTERNAL but external_data has no 'location'");
    return NULL;
  }
  if ((off_s && !parse_size(off_s, &off)) || (len_s && !parse_size(len_s, &len))) {
    snprintf(err, errlen, "external data offset/length must be non-negative integers");
    return NULL;
  }
  if (len != (int64_t)nbytes) {
    snprintf(err, errlen, "external data length %lld, but dims and dtype give %zu bytes",
             (long long)len, nbytes);
    return NULL;
  }
  if (!model_dir) {
    snprintf(err, errlen, "external data is not allowed here");
    return NULL;
  }
  char *file = resolve_location(model_dir, loc, err, errlen);
  if (!file) return NULL;
  FILE *f = fopen(file, "rb");
  struct stat st;
  bool ok = f && fstat(fileno(f), &st) == 0 && st.st_size >= off &&
            (uint64_t)(st.st_size - off) >= nbytes && fseeko(f, (off_t)off, SEEK_SET) == 0;
  if (!ok) {
    snprintf(err, errlen, "external data file '%s' has no %zu bytes at offset %lld", file, nbytes,
             (long long)off);
    if (f) fclose(f);
    f = NULL;
  }
  free(file);
  return f;
}

// Booleans must be 0 or 1 whatever the file held.
static void normalize_bools(kiln_array *a) {
  unsigned char *p = a->data;
  for (size_t i = 0; i < a->nbytes; i++) p[i] = p[i] != 0;
}

kiln_onnx_tensor_status kiln_onnx_tensor_to_array(const Onnx__TensorProto *t, const char *model_dir,
                                                  kiln_array *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  char tb[32];
  kiln_dtype dtype;
  if (!t->has_data_type || t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED) {
    snprintf(err, errlen, "data_type is missing");
    return KILN_ONNX_TENSOR_BAD;
  }
  if (!kiln_onnx_dtype(t->data_type, &dtype)) {
    snprintf(err, errlen,
             "dtype %s is not supported (Kiln has FLOAT, DOUBLE, INT8, UINT8, INT32, "
             "INT64, BOOL)",
             kiln_onnx_dtype_name(t->data_type, tb));
    return KILN_ONNX_TENSOR_DTYPE;
  }
  if (t->segment) {
    snprintf(err, errlen, "segmented tensors are not supported");
    return KILN_ONNX_TENSOR_BAD;
  }
  if (!set_header(t, dtype, out, err, errlen)) return KILN_ONNX_TENSOR_BAD;
  bool external =
      t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  FILE *ext = NULL;
  if (external && !(ext = open_external(t, model_dir, out->nbytes, err, errlen)))
    return KILN_ONNX_TENSOR_BAD;
  if (!external && !inline_data_matches(t, dtype, out, err, errlen)) return KILN_ONNX_TENSOR_BAD;
  out->data = kiln_aligned_alloc(out->nbytes ? out->nbytes : 1);
  bool ok = out->data != NULL;
  if (!ok)
    snprintf(err, errlen, "out of memory for %zu bytes", out->nbytes);
  else if (ext)
    ok = fread(out->data, 1, out->nbytes, ext) == out->nbytes;
  else if (t->has_raw_data && out->nbytes)
    memcpy(out->data, t->raw_data.data, out->nbytes);
  else if (!t->has_raw_data)
    copy_typed(t, dtype, kiln_array_numel(out), out->data);
  if (out->data && !ok) snprintf(err, errlen, "external data: read error");
  if (ext) fclose(ext);
  if (!ok) {
    kiln_array_free(out);
    return KILN_ONNX_TENSOR_BAD;
  }
  if (dtype == KILN_BOOL) normalize_bools(out);
  return KILN_ONNX_TENSOR_OK;
}

int kiln_onnx_read_tensor_file(const char *path, kiln_array *out, char **name, char *err,
                               size_t errlen) {
  memset(out, 0, sizeof *out);
  if (name) *name = NULL;
  char why[512];
  size_t len;
  unsigned char *buf = kiln_onnx_read_file(path, KILN_ONNX_MAX_FILE_BYTES, &len, why, sizeof why);
  if (!buf) {
    snprintf(err, errlen, "%s", why);
    return KILN_ERR_IO;
  }
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, len, buf);
  free(buf);
  if (!t) {
    snprintf(err, errlen, "%s: not a serialized ONNX TensorProto", path);
    return KILN_ERR_FORMAT;
  }
  kiln_onnx_tensor_status st = kiln_onnx_tensor_to_array(t, NULL, out, why, sizeof why);
  if (st == KILN_ONNX_TENSOR_OK && name) *name = strdup(t->name ? t->name : "");
  onnx__tensor_proto__free_unpacked(t, NULL);
  if (st != KILN_ONNX_TENSOR_OK) {
    snprintf(err, errlen, "%s: %s", path, why);
    return st == KILN_ONNX_TENSOR_DTYPE ? KILN_ERR_DTYPE : KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

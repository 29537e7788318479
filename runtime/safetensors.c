// .safetensors files: an 8-byte little-endian header length N, N bytes of JSON describing the
// tensors, then their data. The JSON is parsed by the small reader below (the runtime does not
// depend on a JSON library). Writing goes through a temporary file renamed into place.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

#define ST_MAX_HEADER_BYTES ((uint64_t)100 << 20)
#define JSON_MAX_DEPTH 64

static const char *const st_dtype_names[KILN_RT_DTYPE_COUNT] = {
    [KILN_RT_F32] = "F32", [KILN_RT_F64] = "F64", [KILN_RT_I8] = "I8",     [KILN_RT_U8] = "U8",
    [KILN_RT_I32] = "I32", [KILN_RT_I64] = "I64", [KILN_RT_BOOL] = "BOOL",
};

static int st_dtype_lookup(const char *name) {
  for (int i = 0; i < KILN_RT_DTYPE_COUNT; i++) {
    if (strcmp(st_dtype_names[i], name) == 0) return i;
  }
  return -1;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Returns a name that occurs twice, NULL if none (or on allocation failure, *nomem is set).
static const char *find_duplicate(const char *const *names, int n, bool *nomem) {
  *nomem = false;
  if (n < 2) return NULL;
  const char **sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) {
    *nomem = true;
    return NULL;
  }
  memcpy(sorted, names, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, compare_names);
  const char *dup = NULL;
  for (int i = 1; i < n && !dup; i++) {
    if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
  }
  free(sorted);
  return dup;
}

// ---- a small JSON reader ----

typedef struct json {
  const char *start, *p, *end;
  const char *path;
  char *err;
  size_t errlen;
  int status;  // first error
} json;

static bool json_fail(json *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool json_fail(json *j, int status, const char *fmt, ...) {
  if (j->status != KILN_OK) return false;
  j->status = status;
  char detail[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  kiln_rt_errf(j->err, j->errlen, "%s: %s", j->path, detail);
  return false;
}

static bool syntax_error(json *j, const char *what) {
  return json_fail(j, KILN_ERR_FORMAT, "malformed safetensors header: %s at byte %ld", what,
                   (long)(j->p - j->start));
}

static void json_ws(json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool json_peek(json *j, char ch) {
  json_ws(j);
  return j->p < j->end && *j->p == ch;
}

static bool json_take(json *j, char ch) {
  if (!json_peek(j, ch)) return false;
  j->p++;
  return true;
}

static bool json_expect(json *j, char ch) {
  if (json_take(j, ch)) return true;
  char what[32];
  snprintf(what, sizeof what, "expected '%c'", ch);
  return syntax_error(j, what);
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool read_hex4(json *j, unsigned *out) {
  if (j->end - j->p < 4) return syntax_error(j, "short \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int d = hex_digit(j->p[i]);
    if (d < 0) return syntax_error(j, "bad \\u escape");
    v = v * 16 + (unsigned)d;
  }
  j->p += 4;
  *out = v;
  return true;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

// After "\u": one code point, combining a surrogate pair.
static bool read_code_point(json *j, unsigned *cp) {
  if (!read_hex4(j, cp)) return false;
  if (*cp >= 0xdc00 && *cp <= 0xdfff) return syntax_error(j, "lone low surrogate");
  if (*cp < 0xd800 || *cp > 0xdbff) return true;
  unsigned low = 0;
  if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
    return syntax_error(j, "lone high surrogate");
  }
  j->p += 2;
  if (!read_hex4(j, &low)) return false;
  if (low < 0xdc00 || low > 0xdfff) return syntax_error(j, "bad surrogate pair");
  *cp = 0x10000 + ((*cp - 0xd800) << 10) + (low - 0xdc00);
  return true;
}

// After a backslash: appends the escaped character(s) to out.
static bool read_escape(json *j, char *out, size_t *n) {
  if (j->p >= j->end) return syntax_error(j, "unterminated string");
  char c = *j->p++;
  const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
  const char *hit = strchr(from, c);
  if (c != '\0' && hit) {
    out[(*n)++] = to[hit - from];
    return true;
  }
  if (c != 'u') return syntax_error(j, "bad escape");
  unsigned cp = 0;
  if (!read_code_point(j, &cp)) return false;
  if (cp == 0) return syntax_error(j, "\\u0000 in a string");
  *n += put_utf8(out + *n, cp);
  return true;
}

// A string, decoded into a new allocation (*out may be NULL to skip it).
static bool json_string(json *j, char **out) {
  if (!json_take(j, '"')) return syntax_error(j, "expected a string");
  const char *start = j->p;
  while (j->p < j->end && *j->p != '"') j->p += (*j->p == '\\' && j->p + 1 < j->end) ? 2 : 1;
  if (j->p >= j->end) return syntax_error(j, "unterminated string");
  size_t raw = (size_t)(j->p - start);
  char *s = malloc(raw + 1);
  if (!s) return json_fail(j, KILN_ERR_NOMEM, "out of memory");
  size_t n = 0;
  j->p = start;
  while (*j->p != '"') {
    char c = *j->p++;
    if ((unsigned char)c < 0x20) {
      free(s);
      return syntax_error(j, "control character in a string");
    }
    if (c != '\\')
      s[n++] = c;
    else if (!read_escape(j, s, &n)) {
      free(s);
      return false;
    }
  }
  j->p++;
  s[n] = '\0';
  if (out)
    *out = s;
  else
    free(s);
  return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A non-negative integer that fits in 63 bits.
static bool json_uint(json *j, uint64_t *out) {
  json_ws(j);
  if (j->p >= j->end || !is_digit(*j->p)) return syntax_error(j, "expected a non-negative integer");
  uint64_t v = 0;
  while (j->p < j->end && is_digit(*j->p)) {
    unsigned d = (unsigned)(*j->p++ - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10) return syntax_error(j, "integer too large");
    v = v * 10 + d;
  }
  if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) {
    return syntax_error(j, "expected an integer");
  }
  *out = v;
  return true;
}

// [a, b, ...] of non-negative integers, at most max of them.
static bool json_uint_array(json *j, uint64_t *vals, int max, int *count, const char *what) {
  if (!json_expect(j, '[')) return false;
  *count = 0;
  if (json_take(j, ']')) return true;
  do {
    if (*count == max) return syntax_error(j, what);
    if (!json_uint(j, &vals[(*count)++])) return false;
  } while (json_take(j, ','));
  return json_expect(j, ']');
}

static bool json_skip(json *j, int depth);

static bool skip_container(json *j, char close, bool keyed, int depth) {
  if (depth > JSON_MAX_DEPTH) return syntax_error(j, "nesting too deep");
  j->p++;
  if (json_take(j, close)) return true;
  do {
    if (keyed && !(json_string(j, NULL) && json_expect(j, ':'))) return false;
    if (!json_skip(j, depth + 1)) return false;
  } while (json_take(j, ','));
  return json_expect(j, close);
}

static bool skip_scalar(json *j) {
  const char *start = j->p;
  while (j->p < j->end && (is_digit(*j->p) || strchr("+-.eEtruefalsn", *j->p))) j->p++;
  return j->p > start || syntax_error(j, "expected a value");
}

// Skips any value.
static bool json_skip(json *j, int depth) {
  json_ws(j);
  if (j->p >= j->end) return syntax_error(j, "expected a value");
  if (*j->p == '{') return skip_container(j, '}', true, depth);
  if (*j->p == '[') return skip_container(j, ']', false, depth);
  if (*j->p == '"') return json_string(j, NULL);
  return skip_scalar(j);
}

// ---- tensor entries ----

typedef struct entry_fields {
  char *dtype;
  uint64_t shape[KILN_RT_MAX_RANK];
  int rank;
  uint64_t offsets[2];
  int n_offsets;
  bool have_shape;
} entry_fields;

static bool parse_field(json *j, const char *tensor, const char *key, entry_fields *f) {
  if (strcmp(key, "dtype") == 0) {
    free(f->dtype);
    f->dtype = NULL;
    return json_string(j, &f->dtype);
  }
  if (strcmp(key, "shape") == 0) {
    f->have_shape = true;
    if (json_uint_array(j, f->shape, KILN_RT_MAX_RANK, &f->rank, "more than 8 dimensions")) {
      return true;
    }
    return json_fail(j, KILN_ERR_FORMAT, "tensor '%s': bad shape", tensor);
  }
  if (strcmp(key, "data_offsets") == 0) {
    if (json_uint_array(j, f->offsets, 2, &f->n_offsets, "more than 2 data_offsets")) return true;
    return json_fail(j, KILN_ERR_FORMAT, "tensor '%s': bad data_offsets", tensor);
  }
  return json_skip(j, 1);
}

static bool parse_fields(json *j, const char *tensor, entry_fields *f) {
  if (!json_expect(j, '{')) return false;
  if (json_take(j, '}')) return true;
  do {
    char *key = NULL;
    if (!json_string(j, &key)) return false;
    bool ok = json_expect(j, ':') && parse_field(j, tensor, key, f);
    free(key);
    if (!ok) return false;
  } while (json_take(j, ','));
  return json_expect(j, '}');
}

// Checks the fields against the data section and fills e (e->data is an offset for now).
static bool make_entry(json *j, const char *tensor, const entry_fields *f, uint64_t data_bytes,
                       kiln_st_entry *e) {
  if (!f->dtype || !f->have_shape || f->n_offsets != 2) {
    const char *missing = !f->dtype ? "dtype" : !f->have_shape ? "shape" : "data_offsets";
    return json_fail(j, KILN_ERR_FORMAT, "tensor '%s' has no %s", tensor, missing);
  }
  e->dtype = st_dtype_lookup(f->dtype);
  if (e->dtype < 0) {
    return json_fail(j, KILN_ERR_DTYPE,
                     "tensor '%s' has dtype %s, which is not supported "
                     "(supported: F32, F64, I8, U8, I32, I64, BOOL)",
                     tensor, f->dtype);
  }
  e->rank = f->rank;
  for (int i = 0; i < f->rank; i++) e->shape[i] = (int64_t)f->shape[i];
  size_t bytes = 0;
  if (!kiln_rt_shape_bytes(e->shape, e->rank, kiln_rt_dtype_size(e->dtype), NULL, &bytes)) {
    return json_fail(j, KILN_ERR_FORMAT, "tensor '%s' has an absurdly large shape", tensor);
  }
  uint64_t begin = f->offsets[0], end = f->offsets[1];
  if (begin > end || end > data_bytes) {
    return json_fail(
        j, KILN_ERR_FORMAT, "tensor '%s' has data_offsets [%llu, %llu] outside the %llu data bytes",
        tensor, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_bytes);
  }
  if (end - begin != bytes) {
    return json_fail(j, KILN_ERR_FORMAT,
                     "tensor '%s' has %llu data bytes, its dtype and shape need %zu", tensor,
                     (unsigned long long)(end - begin), bytes);
  }
  e->nbytes = bytes;
  e->data = (const void *)(uintptr_t)begin;
  return true;
}

static bool push_entry(json *j, kiln_safetensors *st, int *cap, const kiln_st_entry *e) {
  if (st->count == *cap) {
    int new_cap = *cap ? *cap * 2 : 16;
    kiln_st_entry *grown = realloc(st->entries, (size_t)new_cap * sizeof *grown);
    if (!grown) return json_fail(j, KILN_ERR_NOMEM, "out of memory");
    st->entries = grown;
    *cap = new_cap;
  }
  st->entries[st->count++] = *e;
  return true;
}

static bool parse_tensor(json *j, char *name, uint64_t data_bytes, kiln_safetensors *st, int *cap) {
  entry_fields f = {0};
  kiln_st_entry e = {.name = name};
  bool ok = parse_fields(j, name, &f) && make_entry(j, name, &f, data_bytes, &e) &&
            push_entry(j, st, cap, &e);
  free(f.dtype);
  if (!ok) free(name);
  return ok;
}

static bool parse_top(json *j, uint64_t data_bytes, kiln_safetensors *st) {
  int cap = 0;
  if (!json_expect(j, '{')) return false;
  if (json_take(j, '}')) return true;
  do {
    char *name = NULL;
    if (!json_string(j, &name)) return false;
    if (!json_expect(j, ':')) {
      free(name);
      return false;
    }
    if (strcmp(name, "__metadata__") == 0) {
      free(name);
      if (!json_peek(j, '{')) return syntax_error(j, "__metadata__ must be an object");
      if (!json_skip(j, 1)) return false;
    } else if (!parse_tensor(j, name, data_bytes, st, &cap)) {
      return false;
    }
  } while (json_take(j, ','));
  if (!json_expect(j, '}')) return false;
  json_ws(j);
  return j->p == j->end || syntax_error(j, "unexpected text after the header");
}

// ---- reading ----

static int load_file(const char *path, kiln_safetensors *st, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    kiln_rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return KILN_ERR_IO;
  }
  uint64_t size = 0;
  int status = KILN_OK;
  if (!kiln_rt_file_size(f, &size) || size > SIZE_MAX) {
    kiln_rt_errf(err, errlen, "%s: not a regular file", path);
    status = KILN_ERR_IO;
  } else if (!(st->file = malloc(size ? (size_t)size : 1))) {
    kiln_rt_errf(err, errlen, "%s: out of memory for %llu bytes", path, (unsigned long long)size);
    status = KILN_ERR_NOMEM;
  } else if (fread(st->file, 1, (size_t)size, f) != size) {
    kiln_rt_errf(err, errlen, "%s: read error", path);
    status = KILN_ERR_IO;
  }
  st->file_size = (size_t)size;
  fclose(f);
  return status;
}

static int parse_header(const char *path, kiln_safetensors *st, char *err, size_t errlen) {
  const unsigned char *bytes = st->file;
  uint64_t n = 0;
  for (int i = 7; i >= 0 && st->file_size >= 8; i--) n = (n << 8) | bytes[i];
  if (st->file_size < 8 || n > st->file_size - 8 || n > ST_MAX_HEADER_BYTES) {
    kiln_rt_errf(err, errlen, "%s: not a safetensors file (bad header length)", path);
    return KILN_ERR_FORMAT;
  }
  const char *text = (const char *)bytes + 8;
  json j = {text, text, text + n, path, err, errlen, KILN_OK};
  uint64_t data_bytes = st->file_size - 8 - n;
  if (!parse_top(&j, data_bytes, st)) return j.status;
  for (int i = 0; i < st->count; i++) {
    uintptr_t offset = (uintptr_t)st->entries[i].data;
    st->entries[i].data = (const unsigned char *)text + n + offset;
  }
  return KILN_OK;
}

static int check_unique(const char *path, const kiln_safetensors *st, char *err, size_t errlen) {
  const char **names = malloc(((size_t)st->count + 1) * sizeof *names);
  if (!names) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  for (int i = 0; i < st->count; i++) names[i] = st->entries[i].name;
  bool nomem = false;
  const char *dup = find_duplicate(names, st->count, &nomem);
  int status = KILN_OK;
  if (dup) kiln_rt_errf(err, errlen, "%s: tensor '%s' appears twice", path, dup);
  if (nomem) kiln_rt_errf(err, errlen, "%s: out of memory", path);
  if (dup || nomem) status = nomem ? KILN_ERR_NOMEM : KILN_ERR_FORMAT;
  free(names);
  return status;
}

int kiln_safetensors_read(const char *path, kiln_safetensors *out, char *err, size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!out) return KILN_ERR_ARG;
  memset(out, 0, sizeof *out);
  if (!path) {
    kiln_rt_errf(err, errlen, "(null): no path given");
    return KILN_ERR_ARG;
  }
  int status = load_file(path, out, err, errlen);
  if (status == KILN_OK) status = parse_header(path, out, err, errlen);
  if (status == KILN_OK) status = check_unique(path, out, err, errlen);
  if (status != KILN_OK) kiln_safetensors_free(out);
  return status;
}

const kiln_st_entry *kiln_safetensors_find(const kiln_safetensors *st, const char *name) {
  if (!st || !name) return NULL;
  for (int i = 0; i < st->count; i++) {
    if (strcmp(st->entries[i].name, name) == 0) return &st->entries[i];
  }
  return NULL;
}

void kiln_safetensors_free(kiln_safetensors *st) {
  if (!st) return;
  for (int i = 0; i < st->count; i++) free(st->entries[i].name);
  free(st->entries);
  free(st->file);
  memset(st, 0, sizeof *st);
}

// ---- writing ----

typedef struct strbuf {
  char *s;
  size_t len, cap;
  bool oom;
} strbuf;

static void sb_reserve(strbuf *b, size_t extra) {
  if (b->oom || b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *s = realloc(b->s, cap);
  if (!s) {
    b->oom = true;
    return;
  }
  b->s = s;
  b->cap = cap;
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(strbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  sb_reserve(b, (size_t)n);
  if (b->oom) return;
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static void sb_json_string(strbuf *b, const char *s) {
  sb_printf(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      sb_printf(b, "\\%c", c);
    else if (c < 0x20)
      sb_printf(b, "\\u%04x", c);
    else
      sb_printf(b, "%c", c);
  }
  sb_printf(b, "\"");
}

static void sb_entry(strbuf *b, const char *name, const kiln_array *a, size_t offset) {
  sb_json_string(b, name);
  sb_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_names[a->dtype]);
  for (int d = 0; d < a->rank; d++) sb_printf(b, "%s%lld", d ? "," : "", (long long)a->shape[d]);
  sb_printf(b, "],\"data_offsets\":[%zu,%zu]}", offset, offset + a->nbytes);
}

// The JSON header, padded with spaces to a multiple of 8 bytes.
static void build_header(strbuf *b, int count, const char *const *names, const kiln_array *arrays) {
  size_t offset = 0;
  sb_printf(b, "{");
  for (int i = 0; i < count; i++) {
    if (i) sb_printf(b, ",");
    sb_entry(b, names[i], &arrays[i], offset);
    offset += arrays[i].nbytes;
  }
  sb_printf(b, "}");
  while (!b->oom && b->len % 8 != 0) sb_printf(b, " ");
}

static int check_write_args(const char *path, int count, const char *const *names,
                            const kiln_array *arrays, char *err, size_t errlen) {
  if (count < 0 || (count > 0 && (!names || !arrays))) {
    kiln_rt_errf(err, errlen, "%s: bad tensor list", path);
    return KILN_ERR_ARG;
  }
  for (int i = 0; i < count; i++) {
    if (!names[i] || !*names[i] || strcmp(names[i], "__metadata__") == 0) {
      kiln_rt_errf(err, errlen, "%s: tensor %d has an invalid name", path, i);
      return KILN_ERR_ARG;
    }
    if (!kiln_rt_array_valid(&arrays[i], path, err, errlen)) return KILN_ERR_ARG;
  }
  bool nomem = false;
  const char *dup = find_duplicate(names, count, &nomem);
  if (nomem) kiln_rt_errf(err, errlen, "%s: out of memory", path);
  if (dup) kiln_rt_errf(err, errlen, "%s: tensor name '%s' given twice", path, dup);
  return nomem ? KILN_ERR_NOMEM : dup ? KILN_ERR_ARG : KILN_OK;
}

static int write_file(const char *path, const strbuf *header, int count, const kiln_array *arrays,
                      char *err, size_t errlen) {
  kiln_rt_span *parts = malloc(((size_t)count + 2) * sizeof *parts);
  if (!parts) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)header->len >> (8 * i));
  parts[0] = (kiln_rt_span){len, sizeof len};
  parts[1] = (kiln_rt_span){header->s, header->len};
  for (int i = 0; i < count; i++) parts[i + 2] = (kiln_rt_span){arrays[i].data, arrays[i].nbytes};
  int status = kiln_rt_write_atomic(path, parts, count + 2, err, errlen);
  free(parts);
  return status;
}

int kiln_safetensors_write(const char *path, int count, const char *const *names,
                           const kiln_array *arrays, char *err, size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!path) {
    kiln_rt_errf(err, errlen, "(null): no path given");
    return KILN_ERR_ARG;
  }
  int status = check_write_args(path, count, names, arrays, err, errlen);
  if (status != KILN_OK) return status;
  strbuf header = {0};
  build_header(&header, count, names, arrays);
  if (header.oom) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    status = KILN_ERR_NOMEM;
  } else {
    status = write_file(path, &header, count, arrays, err, errlen);
  }
  free(header.s);
  return status;
}

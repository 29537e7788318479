// .npy files: reading v1/v2/v3 headers (the python-dict header is parsed by hand) and writing v1
// (v2 if needed) with the data 64-byte aligned in the file, through a temporary file.
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
#define NPY_MAX_HEADER_BYTES (1u << 20)

// ---- header dictionary parsing ----

typedef struct npy_header {
  char descr[32];
  bool fortran_order;
  int rank;
  int64_t shape[KILN_RT_MAX_RANK];
  bool have_descr, have_fortran, have_shape;
} npy_header;

typedef struct cursor {
  const char *p, *end;
  const char *problem;  // set on the first parse error
} cursor;

static bool fail_at(cursor *c, const char *problem) {
  if (!c->problem) c->problem = problem;
  return false;
}

static void skip_ws(cursor *c) {
  while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static bool at(cursor *c, char ch) {
  skip_ws(c);
  return c->p < c->end && *c->p == ch;
}

static bool take(cursor *c, char ch) {
  if (!at(c, ch)) return false;
  c->p++;
  return true;
}

// A python string literal in single or double quotes (a backslash keeps the next character).
static bool parse_pystr(cursor *c, char *out, size_t cap) {
  skip_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return fail_at(c, "expected a string");
  char quote = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != quote) {
    if (*c->p == '\\' && c->p + 1 < c->end) c->p++;
    if (n + 1 >= cap) return fail_at(c, "string too long");
    out[n++] = *c->p++;
  }
  if (c->p >= c->end) return fail_at(c, "unterminated string");
  c->p++;
  out[n] = '\0';
  return true;
}

static bool take_word(cursor *c, const char *word) {
  skip_ws(c);
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
  c->p += n;
  return true;
}

static bool parse_pybool(cursor *c, bool *out) {
  if (take_word(c, "True"))
    *out = true;
  else if (take_word(c, "False"))
    *out = false;
  else
    return fail_at(c, "'fortran_order' must be True or False");
  return true;
}

// A non-negative integer (python 2 files may add an 'L' suffix).
static bool parse_dim(cursor *c, int64_t *out) {
  skip_ws(c);
  if (c->p >= c->end || !isdigit((unsigned char)*c->p)) return fail_at(c, "bad dimension in shape");
  int64_t v = 0;
  while (c->p < c->end && isdigit((unsigned char)*c->p)) {
    int digit = *c->p++ - '0';
    if (v > (INT64_MAX - digit) / 10) return fail_at(c, "dimension too large");
    v = v * 10 + digit;
  }
  if (c->p < c->end && *c->p == 'L') c->p++;
  *out = v;
  return true;
}

// (), (5,), (2, 3), (2, 3,)
static bool parse_shape(cursor *c, npy_header *h) {
  if (!take(c, '(')) return fail_at(c, "'shape' must be a tuple");
  h->rank = 0;
  while (!take(c, ')')) {
    if (h->rank == KILN_RT_MAX_RANK) return fail_at(c, "more than 8 dimensions");
    if (!parse_dim(c, &h->shape[h->rank])) return false;
    h->rank++;
    if (!take(c, ',') && !at(c, ')')) return fail_at(c, "expected ',' or ')' in shape");
  }
  return true;
}

// Skips the value of a key this reader does not use: a string, a bracketed group or a bare word.
static bool skip_pyvalue(cursor *c) {
  skip_ws(c);
  if (at(c, '\'') || at(c, '"')) {
    char scratch[256];
    return parse_pystr(c, scratch, sizeof scratch);
  }
  int depth = 0;
  for (; c->p < c->end; c->p++) {
    char ch = *c->p;
    if (ch == '(' || ch == '[' || ch == '{') depth++;
    if (ch == ')' || ch == ']' || ch == '}') {
      if (depth == 0) return true;
      depth--;
    }
    if (ch == ',' && depth == 0) return true;
  }
  return fail_at(c, "unterminated value");
}

static bool parse_entry(cursor *c, npy_header *h) {
  char key[64];
  if (!parse_pystr(c, key, sizeof key)) return false;
  if (!take(c, ':')) return fail_at(c, "expected ':' after a key");
  if (strcmp(key, "descr") == 0) {
    if (at(c, '[')) return fail_at(c, "structured dtypes are not supported");
    h->have_descr = true;
    return parse_pystr(c, h->descr, sizeof h->descr);
  }
  if (strcmp(key, "fortran_order") == 0) {
    h->have_fortran = true;
    return parse_pybool(c, &h->fortran_order);
  }
  if (strcmp(key, "shape") == 0) {
    h->have_shape = true;
    return parse_shape(c, h);
  }
  return skip_pyvalue(c);
}

static bool parse_dict(cursor *c, npy_header *h) {
  if (!take(c, '{')) return fail_at(c, "the header is not a dictionary");
  while (!take(c, '}')) {
    if (!parse_entry(c, h)) return false;
    if (!take(c, ',') && !at(c, '}')) return fail_at(c, "expected ',' or '}'");
  }
  skip_ws(c);
  if (c->p != c->end) return fail_at(c, "unexpected text after the dictionary");
  if (!h->have_descr) return fail_at(c, "no 'descr' key");
  if (!h->have_fortran) return fail_at(c, "no 'fortran_order' key");
  if (!h->have_shape) return fail_at(c, "no 'shape' key");
  return true;
}

// ---- dtype strings ----

static const struct {
  char kind;
  int size;
  int dtype;
} npy_kinds[] = {
    {'f', 4, KILN_RT_F32}, {'f', 8, KILN_RT_F64}, {'i', 1, KILN_RT_I8},   {'u', 1, KILN_RT_U8},
    {'i', 4, KILN_RT_I32}, {'i', 8, KILN_RT_I64}, {'b', 1, KILN_RT_BOOL},
};

static const char *const npy_write_descr[KILN_RT_DTYPE_COUNT] = {
    [KILN_RT_F32] = "<f4", [KILN_RT_F64] = "<f8", [KILN_RT_I8] = "|i1",   [KILN_RT_U8] = "|u1",
    [KILN_RT_I32] = "<i4", [KILN_RT_I64] = "<i8", [KILN_RT_BOOL] = "|b1",
};

static int kind_lookup(char kind, int size) {
  for (size_t i = 0; i < sizeof npy_kinds / sizeof npy_kinds[0]; i++) {
    if (npy_kinds[i].kind == kind && npy_kinds[i].size == size) return npy_kinds[i].dtype;
  }
  return -1;
}

static int parse_descr(const char *path, const char *descr, int *dtype, char *err, size_t errlen) {
  char order = descr[0], kind = descr[0] ? descr[1] : '\0';
  char *end = NULL;
  long size = kind && isdigit((unsigned char)descr[2]) ? strtol(descr + 2, &end, 10) : 0;
  int found =
      (kind && end && *end == '\0' && size > 0 && size <= 16) ? kind_lookup(kind, (int)size) : -1;
  bool one_byte = size == 1;
  if (found >= 0 && order == '>' && !one_byte) {
    kiln_rt_errf(err, errlen,
                 "%s: big-endian dtype '%s' is not supported; save it as little-endian "
                 "(numpy: a.astype(a.dtype.newbyteorder('<')))",
                 path, descr);
    return KILN_ERR_DTYPE;
  }
  bool order_ok = order == '<' || (one_byte && (order == '|' || order == '>' || order == '='));
  if (found < 0 || !order_ok) {
    kiln_rt_errf(err, errlen, "%s: unsupported dtype '%s' (supported: <f4 <f8 |i1 |u1 <i4 <i8 |b1)",
                 path, descr);
    return KILN_ERR_DTYPE;
  }
  *dtype = found;
  return KILN_OK;
}

// ---- reading ----

static uint32_t read_le(const unsigned char *p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// Reads the magic, version and header length; leaves f at the start of the header text.
static int read_preamble(FILE *f, const char *path, uint32_t *header_len, long *data_start,
                         char *err, size_t errlen) {
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, npy_magic, sizeof npy_magic) != 0) {
    kiln_rt_errf(err, errlen, "%s: not a .npy file (bad magic)", path);
    return KILN_ERR_FORMAT;
  }
  int major = pre[6];
  if (major < 1 || major > 3) {
    kiln_rt_errf(err, errlen, "%s: unsupported .npy format version %d.%d", path, major, pre[7]);
    return KILN_ERR_FORMAT;
  }
  int len_bytes = major == 1 ? 2 : 4;
  if (fread(pre + 8, 1, (size_t)len_bytes, f) != (size_t)len_bytes) {
    kiln_rt_errf(err, errlen, "%s: truncated .npy header", path);
    return KILN_ERR_FORMAT;
  }
  *header_len = read_le(pre + 8, len_bytes);
  *data_start = 8 + len_bytes + (long)*header_len;
  if (*header_len > NPY_MAX_HEADER_BYTES) {
    kiln_rt_errf(err, errlen, "%s: .npy header of %u bytes is implausibly large", path,
                 (unsigned)*header_len);
    return KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

static int parse_header_text(const char *path, const char *text, size_t len, npy_header *h,
                             char *err, size_t errlen) {
  cursor c = {text, text + len, NULL};
  memset(h, 0, sizeof *h);
  if (!parse_dict(&c, h)) {
    kiln_rt_errf(err, errlen, "%s: malformed .npy header: %s", path, c.problem);
    return KILN_ERR_FORMAT;
  }
  if (h->fortran_order) {
    kiln_rt_errf(err, errlen,
                 "%s: fortran_order=True is not supported; save a C-ordered array "
                 "(numpy: np.ascontiguousarray)",
                 path);
    return KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

static int read_header(FILE *f, const char *path, npy_header *h, long *data_start, char *err,
                       size_t errlen) {
  uint32_t len = 0;
  int status = read_preamble(f, path, &len, data_start, err, errlen);
  if (status != KILN_OK) return status;
  char *text = malloc(len + 1u);
  if (!text) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  if (fread(text, 1, len, f) != len) {
    kiln_rt_errf(err, errlen, "%s: truncated .npy header", path);
    status = KILN_ERR_FORMAT;
  } else {
    status = parse_header_text(path, text, len, h, err, errlen);
  }
  free(text);
  return status;
}

// Fills out's dtype and shape from the header and checks the size against the file.
static int describe_array(FILE *f, const char *path, const npy_header *h, long data_start,
                          kiln_array *out, char *err, size_t errlen) {
  int status = parse_descr(path, h->descr, &out->dtype, err, errlen);
  if (status != KILN_OK) return status;
  out->rank = h->rank;
  memcpy(out->shape, h->shape, sizeof h->shape);
  if (!kiln_rt_shape_bytes(out->shape, out->rank, kiln_rt_dtype_size(out->dtype), NULL,
                           &out->nbytes)) {
    kiln_rt_errf(err, errlen, "%s: shape is too large (more than 2^40 bytes of data)", path);
    return KILN_ERR_FORMAT;
  }
  uint64_t size = 0;
  if (kiln_rt_file_size(f, &size) && size < (uint64_t)data_start + out->nbytes) {
    uint64_t got = size > (uint64_t)data_start ? size - (uint64_t)data_start : 0;
    kiln_rt_errf(err, errlen, "%s: truncated: expected %zu bytes of data, got %llu", path,
                 out->nbytes, (unsigned long long)got);
    return KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

static int read_data(FILE *f, const char *path, kiln_array *out, char *err, size_t errlen) {
  out->data = kiln_aligned_alloc(out->nbytes);
  if (!out->data) {
    kiln_rt_errf(err, errlen, "%s: out of memory for %zu bytes", path, out->nbytes);
    return KILN_ERR_NOMEM;
  }
  size_t got = fread(out->data, 1, out->nbytes, f);
  if (got != out->nbytes) {
    if (ferror(f)) {
      kiln_rt_errf(err, errlen, "%s: read error: %s", path, strerror(errno));
      return KILN_ERR_IO;
    }
    kiln_rt_errf(err, errlen, "%s: truncated: expected %zu bytes of data, got %zu", path,
                 out->nbytes, got);
    return KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

static int read_open(FILE *f, const char *path, kiln_array *out, char *err, size_t errlen) {
  npy_header h;
  long data_start = 0;
  int status = read_header(f, path, &h, &data_start, err, errlen);
  if (status == KILN_OK) status = describe_array(f, path, &h, data_start, out, err, errlen);
  if (status == KILN_OK) status = read_data(f, path, out, err, errlen);
  return status;
}

int kiln_npy_read(const char *path, kiln_array *out, char *err, size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!out) return KILN_ERR_ARG;
  memset(out, 0, sizeof *out);
  if (!path) {
    kiln_rt_errf(err, errlen, "(null): no path given");
    return KILN_ERR_ARG;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    kiln_rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return KILN_ERR_IO;
  }
  int status = read_open(f, path, out, err, errlen);
  fclose(f);
  if (status != KILN_OK) kiln_array_free(out);
  return status;
}

// ---- writing ----

// "()" / "(5,)" / "(2, 3)"
static void format_shape(const kiln_array *a, char *buf, size_t cap) {
  size_t n = (size_t)snprintf(buf, cap, "(");
  for (int i = 0; i < a->rank && n < cap; i++) {
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
  }
  if (n < cap) snprintf(buf + n, cap - n, "%s", a->rank == 1 ? ",)" : ")");
}

// Total header size (preamble + dict + padding + '\n') when the preamble is pre_bytes long, padded
// so that the data starts at a multiple of 64.
static size_t padded_header_bytes(size_t pre_bytes, size_t dict_len) {
  return (pre_bytes + dict_len + 1 + KILN_RT_ALIGN - 1) / KILN_RT_ALIGN * KILN_RT_ALIGN;
}

// Builds the whole header: v1.0 (2-byte length) unless the length needs v2.0 (4 bytes).
static size_t build_header(const kiln_array *a, char *buf, size_t cap) {
  char shape[KILN_RT_MAX_RANK * 24 + 8];
  format_shape(a, shape, sizeof shape);
  char dict[sizeof shape + 96];
  size_t dict_len =
      (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       npy_write_descr[a->dtype], shape);
  size_t pre = 10;
  if (padded_header_bytes(pre, dict_len) - pre > 65535) pre = 12;
  size_t total = padded_header_bytes(pre, dict_len), header_len = total - pre;
  if (total > cap) return 0;
  memcpy(buf, npy_magic, sizeof npy_magic);
  buf[6] = pre == 10 ? 1 : 2;
  buf[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (char)((header_len >> (8 * i)) & 0xff);
  memset(buf + pre, ' ', header_len);
  memcpy(buf + pre, dict, dict_len);
  buf[total - 1] = '\n';
  return total;
}

int kiln_npy_write(const char *path, const kiln_array *a, char *err, size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!path) {
    kiln_rt_errf(err, errlen, "(null): no path given");
    return KILN_ERR_ARG;
  }
  if (!kiln_rt_array_valid(a, path, err, errlen)) return KILN_ERR_ARG;
  char header[512];
  size_t header_bytes = build_header(a, header, sizeof header);
  if (header_bytes == 0) {
    kiln_rt_errf(err, errlen, "%s: .npy header too large", path);
    return KILN_ERR_ARG;
  }
  kiln_rt_span parts[2] = {{header, header_bytes}, {a->data, a->nbytes}};
  return kiln_rt_write_atomic(path, parts, 2, err, errlen);
}

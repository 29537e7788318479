// Training data sources (train_data.h): .npy pairs, IDX files plain or gzip'd (zlib reads both),
// Debian's Fashion-MNIST / MNIST packages by name, and CSV with the label in the last column.
#include "train_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kiln_rt_internal.h"

enum { IDX_MAX_RANK = 4, CSV_MAX_COLS = 1 << 16 };
#define IDX_MAX_BYTES ((uint64_t)1 << 32)

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Reads exactly n bytes; false at a short read.
static bool gz_read_all(gzFile f, void *buf, uint64_t n) {
  unsigned char *p = buf;
  while (n > 0) {
    unsigned chunk = n > (1u << 30) ? 1u << 30 : (unsigned)n;
    int got = gzread(f, p, chunk);
    if (got <= 0) return false;
    p += got;
    n -= (uint64_t)got;
  }
  return true;
}

// Reads exactly n bytes of data into a new aligned buffer, growing a staging buffer as bytes
// actually arrive: a header that promises gigabytes over a short (or compressed) file fails as
// truncated without allocating what it promised. NULL if the data ends early or memory runs out
// (*nomem says which).
static void *gz_read_exact(gzFile f, uint64_t n, bool *nomem) {
  unsigned char *stage = NULL;
  uint64_t have = 0, cap = 0;
  *nomem = false;
  while (have < n) {
    if (have == cap) {
      uint64_t next = cap ? cap * 2 : (uint64_t)1 << 20;
      if (next > n) next = n;
      unsigned char *grown = realloc(stage, (size_t)next);
      if (!grown) return free(stage), *nomem = true, NULL;
      stage = grown, cap = next;
    }
    if (!gz_read_all(f, stage + have, cap - have)) return free(stage), NULL;
    have = cap;
  }
  void *out = kiln_aligned_alloc((size_t)(n ? n : 1));
  if (out && n) memcpy(out, stage, (size_t)n);
  free(stage);
  *nomem = out == NULL;
  return out;
}

// An IDX file (magic 0 0 TYPE RANK, RANK big-endian u32 dims, data); unsigned bytes only (the
// MNIST family), plain or gzip'd.
static int read_idx(const char *path, kiln_array *out, char *err, size_t errlen) {
  gzFile f = gzopen(path, "rb");
  if (!f) {
    kiln_rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    return KILN_ERR_IO;
  }
  unsigned char head[4 + 4 * IDX_MAX_RANK];
  int st = KILN_ERR_FORMAT;
  memset(out, 0, sizeof(*out));
  if (gzread(f, head, 4) != 4 || head[0] || head[1] || head[2] != 0x08 || head[3] < 1 ||
      head[3] > IDX_MAX_RANK) {
    kiln_rt_errf(err, errlen, "%s: not an IDX file of unsigned bytes (bad magic)", path);
  } else if (!gz_read_all(f, head + 4, 4u * head[3])) {
    kiln_rt_errf(err, errlen, "%s: truncated IDX header", path);
  } else {
    out->dtype = KILN_RT_U8;
    out->rank = head[3];
    uint64_t total = 1;
    for (int i = 0; i < out->rank; i++) total *= out->shape[i] = be32(head + 4 + 4 * i);
    bool nomem = false;
    if (total == 0 || total > IDX_MAX_BYTES) {
      kiln_rt_errf(err, errlen, "%s: implausible IDX size", path);
    } else if (!(out->data = gz_read_exact(f, total, &nomem))) {
      if (nomem)
        kiln_rt_errf(err, errlen, "%s: out of memory", path);
      else
        kiln_rt_errf(err, errlen, "%s: truncated IDX data (expected %llu bytes)", path,
                     (unsigned long long)total);
      st = nomem ? KILN_ERR_NOMEM : KILN_ERR_FORMAT;
    } else {
      out->nbytes = (size_t)total;
      st = KILN_OK;
    }
  }
  gzclose(f);
  return st;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int read_array(const char *path, kiln_array *out, bool *is_idx, char *err, size_t errlen) {
  *is_idx = !ends_with(path, ".npy");
  return *is_idx ? read_idx(path, out, err, errlen) : kiln_npy_read(path, out, err, errlen);
}

// Parses one CSV line of numbers into v[max]; returns the count or -1 if a field is no number.
static int csv_fields(char *line, double *v, int max) {
  int n = 0;
  for (char *p = line; *p && *p != '\n' && *p != '\r';) {
    char *end;
    double x = strtod(p, &end);
    if (end == p || n == max) return -1;
    v[n++] = x;
    while (*end == ' ' || *end == '\t') end++;
    if (*end == ',')
      end++;
    else if (*end && *end != '\n' && *end != '\r')
      return -1;
    p = end;
  }
  return n;
}

// CSV: every row the same number of columns; the last one is the label (f64 (N,) labels, f32
// (N, cols - 1) samples).
static int read_csv(const char *path, kiln_dataset *d, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    kiln_rt_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return KILN_ERR_IO;
  }
  char *line = NULL;
  size_t cap = 0;
  double *v = malloc(sizeof(double) * CSV_MAX_COLS), *rows = NULL;
  int64_t n = 0, cap_rows = 0, lineno = 0;
  int cols = -1, st = KILN_OK;
  while (st == KILN_OK && getline(&line, &cap, f) > 0) {
    lineno++;
    int k = csv_fields(line, v, CSV_MAX_COLS);
    if (k < 0 && lineno == 1) continue;  // a header
    if (k == 0) continue;                // a blank line
    if (k < 2 || (cols >= 0 && k != cols)) {
      kiln_rt_errf(err, errlen, "%s:%lld: expected %d numbers separated by commas", path,
                   (long long)lineno, cols >= 0 ? cols : 2);
      st = KILN_ERR_FORMAT;
      break;
    }
    cols = k;
    if ((n + 1) * cols > cap_rows) {
      cap_rows = cap_rows ? cap_rows * 2 : 1024 * cols;
      rows = realloc(rows, sizeof(double) * (size_t)cap_rows);
    }
    memcpy(rows + n * cols, v, sizeof(double) * (size_t)cols);
    n++;
  }
  if (st == KILN_OK && n == 0) {
    kiln_rt_errf(err, errlen, "%s: no rows of numbers", path);
    st = KILN_ERR_FORMAT;
  }
  if (st == KILN_OK) {
    d->x = (kiln_array){.dtype = KILN_RT_F32, .rank = 2, .shape = {n, cols - 1}};
    d->y = (kiln_array){.dtype = KILN_RT_F64, .rank = 1, .shape = {n}};
    d->x.nbytes = sizeof(float) * (size_t)(n * (cols - 1));
    d->y.nbytes = sizeof(double) * (size_t)n;
    d->x.data = kiln_aligned_alloc(d->x.nbytes);
    d->y.data = kiln_aligned_alloc(d->y.nbytes);
    for (int64_t i = 0; i < n; i++) {
      for (int c = 0; c < cols - 1; c++)
        ((float *)d->x.data)[i * (cols - 1) + c] = (float)rows[i * cols + c];
      ((double *)d->y.data)[i] = rows[i * cols + cols - 1];
    }
  }
  free(rows);
  free(v);
  free(line);
  fclose(f);
  return st;
}

// "fashion-mnist:train" -> Debian's dataset-fashion-mnist files (or mnist: dataset-mnist's).
static bool named_dataset(const char *src, char *x, char *y, size_t size) {
  const char *dirs[][2] = {{"fashion-mnist:", "/usr/share/datasets/fashion-mnist"},
                           {"mnist:", "/usr/share/datasets/mnist"}};
  for (int i = 0; i < 2; i++) {
    size_t k = strlen(dirs[i][0]);
    if (strncmp(src, dirs[i][0], k) != 0) continue;
    const char *part = src + k, *pre = strcmp(part, "train") == 0 ? "train" : "t10k";
    if (strcmp(part, "train") != 0 && strcmp(part, "test") != 0) return false;
    snprintf(x, size, "%s/%s-images-idx3-ubyte.gz", dirs[i][1], pre);
    snprintf(y, size, "%s/%s-labels-idx1-ubyte.gz", dirs[i][1], pre);
    return true;
  }
  return false;
}

static int check_pair(kiln_dataset *d, char *err, size_t errlen) {
  if (d->x.rank < 1 || d->y.rank < 1 || d->x.shape[0] != d->y.shape[0] || d->x.shape[0] < 1) {
    kiln_rt_errf(err, errlen, "%s: %lld samples but %lld labels", d->source,
                 (long long)(d->x.rank ? d->x.shape[0] : 0),
                 (long long)(d->y.rank ? d->y.shape[0] : 0));
    return KILN_ERR_SHAPE;
  }
  d->n = d->x.shape[0];
  d->x_numel = kiln_array_numel(&d->x) / d->n;
  d->y_numel = kiln_array_numel(&d->y) / d->n;
  if (d->x_numel < 1 || d->y_numel < 1) {
    kiln_rt_errf(err, errlen, "%s: each %s has no values (shape has a 0)", d->source,
                 d->x_numel < 1 ? "sample" : "label");
    return KILN_ERR_SHAPE;
  }
  return KILN_OK;
}

// The extra .npy arrays after X,Y: one per sample each, like X.
static int read_extras(kiln_dataset *d, const char *list, char *err, size_t errlen) {
  for (const char *s = list; *s;) {
    size_t len = strcspn(s, ",");
    char path[512];
    snprintf(path, sizeof path, "%.*s", (int)len, s);
    if (d->n_extra == KILN_DATASET_MAX_EXTRA || !ends_with(path, ".npy")) {
      kiln_rt_errf(err, errlen, "%s: after X,Y up to %d further .npy files, got '%s'", d->source,
                   KILN_DATASET_MAX_EXTRA, path);
      return KILN_ERR_ARG;
    }
    kiln_array *a = &d->extra[d->n_extra];
    int st = kiln_npy_read(path, a, err, errlen);
    if (st != KILN_OK) return st;
    d->n_extra++;
    if (a->rank < 1 || a->shape[0] != d->n) {
      kiln_rt_errf(err, errlen, "%s: %lld samples but %s has %lld rows", d->source, (long long)d->n,
                   path, (long long)(a->rank ? a->shape[0] : 0));
      return KILN_ERR_SHAPE;
    }
    d->extra_numel[d->n_extra - 1] = kiln_array_numel(a) / d->n;
    s += len + (s[len] == ',');
  }
  return KILN_OK;
}

int kiln_dataset_load(const char *src, kiln_dataset *d, char *err, size_t errlen) {
  memset(d, 0, sizeof(*d));
  d->x_scale = 1.0;
  snprintf(d->source, sizeof d->source, "%s", src);
  char xp[512], yp[512];
  int st;
  bool named = named_dataset(src, xp, yp, sizeof xp);
  const char *comma = strchr(src, ',');
  const char *extras = NULL;  // after Y: the extra arrays' paths, comma-separated
  if (!named && comma) {
    const char *comma2 = strchr(comma + 1, ',');
    snprintf(xp, sizeof xp, "%.*s", (int)(comma - src), src);
    snprintf(yp, sizeof yp, "%.*s", (int)(comma2 ? comma2 - comma - 1 : (long)strlen(comma + 1)),
             comma + 1);
    extras = comma2 ? comma2 + 1 : NULL;
  }
  if (named || comma) {
    bool x_idx, y_idx;
    st = read_array(xp, &d->x, &x_idx, err, errlen);
    if (st == KILN_OK) st = read_array(yp, &d->y, &y_idx, err, errlen);
    if (st == KILN_OK && x_idx) d->x_scale = 1.0 / 255.0;  // IDX pixels: bytes -> [0, 1]
  } else if (ends_with(src, ".csv")) {
    st = read_csv(src, d, err, errlen);
  } else {
    kiln_rt_errf(err, errlen,
                 "%s: expected X.npy,Y.npy, IMAGES,LABELS (IDX files), fashion-mnist:train|test, "
                 "mnist:train|test or FILE.csv",
                 src);
    st = KILN_ERR_ARG;
  }
  if (st == KILN_OK) st = check_pair(d, err, errlen);
  if (st == KILN_OK && extras) st = read_extras(d, extras, err, errlen);
  if (st != KILN_OK) kiln_dataset_free(d);
  return st;
}

void kiln_dataset_free(kiln_dataset *d) {
  kiln_array_free(&d->x);
  kiln_array_free(&d->y);
  for (int j = 0; j < d->n_extra; j++) kiln_array_free(&d->extra[j]);
  d->n_extra = 0;
}

double kiln_dataset_extra(const kiln_dataset *d, int j, int64_t i, int64_t k) {
  return kiln_element_get(d->extra[j].data, d->extra[j].dtype, i * d->extra_numel[j] + k);
}

double kiln_dataset_x(const kiln_dataset *d, int64_t i, int64_t k) {
  return kiln_element_get(d->x.data, d->x.dtype, i * d->x_numel + k) * d->x_scale;
}

double kiln_dataset_y(const kiln_dataset *d, int64_t i, int64_t k) {
  return kiln_element_get(d->y.data, d->y.dtype, i * d->y_numel + k);
}

// ---- Subsets: the validation split and --train-limit ----

static int copy_rows(const kiln_array *a, int64_t row_numel, const int64_t *idx, int64_t n,
                     kiln_array *out) {
  size_t row = (size_t)row_numel * kiln_rt_dtype_size(a->dtype);
  *out = *a;
  out->shape[0] = n;
  out->nbytes = row * (size_t)n;
  out->data = kiln_aligned_alloc(out->nbytes ? out->nbytes : 64);
  if (!out->data) return KILN_ERR_NOMEM;
  for (int64_t i = 0; i < n; i++)
    memcpy((char *)out->data + row * (size_t)i, (const char *)a->data + row * (size_t)idx[i], row);
  return KILN_OK;
}

int kiln_dataset_subset(const kiln_dataset *d, const int64_t *idx, int64_t n, const char *what,
                        kiln_dataset *out, char *err, size_t errlen) {
  memset(out, 0, sizeof(*out));
  int st = copy_rows(&d->x, d->x_numel, idx, n, &out->x);
  if (st == KILN_OK) st = copy_rows(&d->y, d->y_numel, idx, n, &out->y);
  for (int j = 0; j < d->n_extra && st == KILN_OK; j++, out->n_extra++) {
    st = copy_rows(&d->extra[j], d->extra_numel[j], idx, n, &out->extra[j]);
    out->extra_numel[j] = d->extra_numel[j];
  }
  if (st != KILN_OK) {
    kiln_rt_errf(err, errlen, "%s: out of memory", d->source);
    kiln_dataset_free(out);
    return st;
  }
  out->x_scale = d->x_scale;
  out->n = n, out->x_numel = d->x_numel, out->y_numel = d->y_numel;
  snprintf(out->source, sizeof out->source, "%.200s%s", d->source, what);
  return KILN_OK;
}

static uint64_t split_rng(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

int kiln_dataset_split(const kiln_dataset *d, double fraction, uint64_t seed, kiln_dataset *train,
                       kiln_dataset *val, char *err, size_t errlen) {
  int64_t n_val = (int64_t)llround(fraction * (double)d->n);
  if (n_val < 1 || n_val >= d->n) {
    kiln_rt_errf(err, errlen,
                 "%s: a validation fraction of %g of %lld samples leaves %lld for validation and "
                 "%lld for training",
                 d->source, fraction, (long long)d->n, (long long)n_val, (long long)(d->n - n_val));
    return KILN_ERR_ARG;
  }
  int64_t *perm = malloc(sizeof(int64_t) * (size_t)d->n),
          *idx = malloc(sizeof(int64_t) * (size_t)d->n);
  unsigned char *held = calloc((size_t)d->n, 1);
  if (!perm || !idx || !held) {
    free(perm), free(idx), free(held);
    return KILN_ERR_NOMEM;
  }
  // A Fisher-Yates permutation drawn from its own stream of seed; its first n_val are held out.
  uint64_t state = seed ^ UINT64_C(0x5a17a11d5eed0001);
  for (int64_t i = 0; i < d->n; i++) perm[i] = i;
  for (int64_t i = d->n - 1; i > 0; i--) {
    int64_t j = (int64_t)(split_rng(&state) % (uint64_t)(i + 1)), t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  for (int64_t i = 0; i < n_val; i++) held[perm[i]] = 1;
  int64_t nv = 0, nt = 0;
  for (int64_t i = 0; i < d->n; i++)  // validation rows first, then training rows, in d's order
    if (held[i]) idx[nv++] = i;
  for (int64_t i = 0; i < d->n; i++)
    if (!held[i]) idx[nv + nt++] = i;
  int st = kiln_dataset_subset(d, idx, nv, " (validation split)", val, err, errlen);
  if (st == KILN_OK)
    st = kiln_dataset_subset(d, idx + nv, nt, " (training split)", train, err, errlen);
  if (st != KILN_OK) kiln_dataset_free(val);
  free(perm), free(idx), free(held);
  return st;
}

// Data augmentation for the generated trainer (augment.h): the spec parser, the counter-based
// random stream, the five augmentations and per-channel normalization. The exact definitions
// (which draws, in which order) are in docs/training.md; tools/goldens_augment.py implements
// them independently in numpy.
#include "augment.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_rt_internal.h"

// ---- The random stream: splitmix64 keyed by (seed, step, slot) ----

static const uint64_t GOLDEN = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

kiln_aug_rng kiln_aug_rng_init(uint64_t seed, uint64_t step, uint64_t slot) {
  uint64_t k = mix(seed + GOLDEN);
  k = mix((k ^ step) + GOLDEN);
  k = mix((k ^ slot) + GOLDEN);
  return (kiln_aug_rng){.state = k};
}

uint64_t kiln_aug_rng_next(kiln_aug_rng *r) {
  r->state += GOLDEN;
  return mix(r->state);
}

double kiln_aug_uniform(kiln_aug_rng *r) {
  return (double)(kiln_aug_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

int64_t kiln_aug_below(kiln_aug_rng *r, int64_t n) {
  int64_t k = (int64_t)(kiln_aug_uniform(r) * (double)n);
  return k < n ? k : n - 1;
}

double kiln_aug_normal(kiln_aug_rng *r) {
  double u1 = kiln_aug_uniform(r), u2 = kiln_aug_uniform(r);
  return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

// ---- Parsing ----

static const char *const kind_names[KILN_AUG_KIND_COUNT] = {"random_crop", "hflip", "translate",
                                                            "gaussian_noise", "cutout"};
static const char *const value_keys[KILN_AUG_KIND_COUNT] = {"padding", "p", "max_pixels", "std",
                                                            "size"};

// "a,b,c" -> values; the count, or -1 if any is not a number.
static int parse_list(const char *s, double *v, int max) {
  int n = 0;
  for (const char *p = s; *p;) {
    char *end;
    errno = 0;
    double x = strtod(p, &end);
    if (end == p || errno || n == max || !isfinite(x)) return -1;
    v[n++] = x;
    if (*end == ',')
      end++;
    else if (*end)
      return -1;
    p = end;
  }
  return n;
}

enum { MAX_TOKENS = 8 };

// Splits s at blanks in place; the token count (at most max).
static int tokens(char *s, char **tok, int max) {
  int n = 0;
  char *save = NULL;
  for (char *t = strtok_r(s, " \t\n", &save); t && n < max; t = strtok_r(NULL, " \t\n", &save))
    tok[n++] = t;
  return n;
}

static int parse_normalize(char **tok, int n, kiln_augment *a, char *err, size_t errlen) {
  int n_mean = -1, n_std = -1;
  for (int i = 1; i < n; i++) {
    if (strncmp(tok[i], "mean=", 5) == 0)
      n_mean = parse_list(tok[i] + 5, a->mean, KILN_AUG_MAX_CHANNELS);
    else if (strncmp(tok[i], "std=", 4) == 0)
      n_std = parse_list(tok[i] + 4, a->std, KILN_AUG_MAX_CHANNELS);
    else
      n_mean = -1, n = 0;
  }
  bool ok = n_mean >= 1 && n_mean == n_std;
  for (int c = 0; ok && c < n_std; c++) ok = a->std[c] > 0;
  if (!ok) {
    kiln_rt_errf(err, errlen,
                 "augment spec: normalize needs mean=A,B,... and std=A,B,... only, lists of the "
                 "same length (1 to %d numbers, std > 0)",
                 KILN_AUG_MAX_CHANNELS);
    return KILN_ERR_FORMAT;
  }
  a->n_channels = n_mean;
  return KILN_OK;
}

static bool value_ok(kiln_aug_kind k, double v) {
  bool integral = v == floor(v);
  switch (k) {
    case KILN_AUG_HFLIP: return v >= 0 && v <= 1;
    case KILN_AUG_NOISE: return v > 0 && isfinite(v);
    default: return integral && v >= 1 && v <= 1 << 20;
  }
}

// One item: "KIND KEY=VALUE" or "normalize mean=... std=...".
static int parse_step(char *item, kiln_augment *a, char *err, size_t errlen) {
  char *tok[MAX_TOKENS];
  int n = tokens(item, tok, MAX_TOKENS);
  if (n == 0) return KILN_OK;
  if (strcmp(tok[0], "normalize") == 0) return parse_normalize(tok, n, a, err, errlen);
  int k = 0;
  while (k < KILN_AUG_KIND_COUNT && strcmp(tok[0], kind_names[k]) != 0) k++;
  if (k == KILN_AUG_KIND_COUNT || a->n_steps == KILN_AUG_MAX_STEPS) {
    kiln_rt_errf(err, errlen, "augment spec: unknown step '%s' (or more than %d steps)", tok[0],
                 KILN_AUG_MAX_STEPS);
    return KILN_ERR_FORMAT;
  }
  size_t klen = strlen(value_keys[k]);
  char *end = NULL;
  double v = NAN;
  if (n == 2 && strncmp(tok[1], value_keys[k], klen) == 0 && tok[1][klen] == '=')
    v = strtod(tok[1] + klen + 1, &end);
  if (!end || *end || end == tok[1] + klen + 1 || !value_ok((kiln_aug_kind)k, v)) {
    kiln_rt_errf(err, errlen, "augment spec: %s needs %s=VALUE (a valid value) and nothing else",
                 tok[0], value_keys[k]);
    return KILN_ERR_FORMAT;
  }
  a->steps[a->n_steps++] = (kiln_aug_step){.kind = (kiln_aug_kind)k, .value = v};
  return KILN_OK;
}

int kiln_augment_parse(const char *spec, kiln_augment *out, char *err, size_t errlen) {
  memset(out, 0, sizeof(*out));
  if (!spec || !*spec) return KILN_OK;
  char *copy = strdup(spec);
  if (!copy) return KILN_ERR_NOMEM;
  int st = KILN_OK;
  char *save = NULL;
  for (char *item = strtok_r(copy, ";", &save); item && st == KILN_OK;
       item = strtok_r(NULL, ";", &save)) {
    char *dup = strdup(item);  // parse_step tokenizes its own copy
    st = dup ? parse_step(dup, out, err, errlen) : KILN_ERR_NOMEM;
    free(dup);
  }
  free(copy);
  return st;
}

int kiln_augment_active(const kiln_augment *a) { return a->n_steps > 0 || a->n_channels > 0; }

int kiln_augment_check(const kiln_augment *a, int rank, const int64_t *dims, kiln_image_shape *s,
                       char *err, size_t errlen) {
  // (F) -> (1, 1, F); (H, W) -> (1, H, W); (C, H, W)
  *s = (kiln_image_shape){.c = 1, .h = 1, .w = 1};
  if (rank == 1) s->w = dims[0];
  if (rank == 2) s->h = dims[0], s->w = dims[1];
  if (rank == 3) s->c = dims[0], s->h = dims[1], s->w = dims[2];
  if (a->n_steps > 0 && (rank < 2 || rank > 3)) {
    kiln_rt_errf(err, errlen,
                 "augmentation (%s) needs image samples (C, H, W) or (H, W); the model's samples "
                 "have %d dims",
                 kind_names[a->steps[0].kind], rank);
    return KILN_ERR_SHAPE;
  }
  if (rank > 3) {  // normalization only: channels first, the rest flattened
    s->c = dims[0];
    for (int i = 1; i < rank; i++) s->w *= dims[i];
  }
  if (a->n_channels > 1 && a->n_channels != s->c) {
    kiln_rt_errf(err, errlen, "normalize has %d means and stds; the samples have %lld channels",
                 a->n_channels, (long long)s->c);
    return KILN_ERR_SHAPE;
  }
  return KILN_OK;
}

// ---- The augmentations: img is (C, H, W) ----

// out[c, y, x] = in[c, y - dy, x - dx], zero outside.
static void shift(kiln_image_shape s, float *img, float *tmp, int64_t dy, int64_t dx) {
  memcpy(tmp, img, sizeof(float) * (size_t)(s.c * s.h * s.w));
  for (int64_t c = 0; c < s.c; c++)
    for (int64_t y = 0; y < s.h; y++)
      for (int64_t x = 0; x < s.w; x++) {
        int64_t sy = y - dy, sx = x - dx;
        bool inside = sy >= 0 && sy < s.h && sx >= 0 && sx < s.w;
        img[(c * s.h + y) * s.w + x] = inside ? tmp[(c * s.h + sy) * s.w + sx] : 0.0f;
      }
}

// Pad by p zeros, then crop H x W at (oy, ox) in [0, 2p]: out[y, x] = in[y + oy - p, x + ox - p].
static void random_crop(kiln_image_shape s, float *img, float *tmp, int64_t p, kiln_aug_rng *r) {
  int64_t oy = kiln_aug_below(r, 2 * p + 1), ox = kiln_aug_below(r, 2 * p + 1);
  shift(s, img, tmp, p - oy, p - ox);
}

static void translate(kiln_image_shape s, float *img, float *tmp, int64_t m, kiln_aug_rng *r) {
  int64_t dy = kiln_aug_below(r, 2 * m + 1) - m, dx = kiln_aug_below(r, 2 * m + 1) - m;
  shift(s, img, tmp, dy, dx);
}

static void hflip(kiln_image_shape s, float *img, double p, kiln_aug_rng *r) {
  if (!(kiln_aug_uniform(r) < p)) return;
  for (int64_t row = 0; row < s.c * s.h; row++)
    for (int64_t x = 0; x < s.w / 2; x++) {
      float *a = &img[row * s.w + x], *b = &img[row * s.w + s.w - 1 - x], t = *a;
      *a = *b, *b = t;
    }
}

static void noise(kiln_image_shape s, float *img, double std, kiln_aug_rng *r) {
  for (int64_t i = 0; i < s.c * s.h * s.w; i++)
    img[i] = (float)((double)img[i] + std * kiln_aug_normal(r));
}

// Zeroes the size x size square centred on a random pixel (clipped at the borders).
static void cutout(kiln_image_shape s, float *img, int64_t size, kiln_aug_rng *r) {
  int64_t cy = kiln_aug_below(r, s.h), cx = kiln_aug_below(r, s.w);
  int64_t y0 = cy - size / 2, x0 = cx - size / 2;
  for (int64_t c = 0; c < s.c; c++)
    for (int64_t y = y0 < 0 ? 0 : y0; y < y0 + size && y < s.h; y++)
      for (int64_t x = x0 < 0 ? 0 : x0; x < x0 + size && x < s.w; x++)
        img[(c * s.h + y) * s.w + x] = 0.0f;
}

void kiln_augment_sample(const kiln_augment *a, kiln_image_shape s, float *img, float *scratch,
                         uint64_t seed, uint64_t step, uint64_t slot) {
  kiln_aug_rng r = kiln_aug_rng_init(seed, step, slot);
  for (int i = 0; i < a->n_steps; i++) {
    double v = a->steps[i].value;
    switch (a->steps[i].kind) {
      case KILN_AUG_RANDOM_CROP: random_crop(s, img, scratch, (int64_t)v, &r); break;
      case KILN_AUG_HFLIP: hflip(s, img, v, &r); break;
      case KILN_AUG_TRANSLATE: translate(s, img, scratch, (int64_t)v, &r); break;
      case KILN_AUG_NOISE: noise(s, img, v, &r); break;
      case KILN_AUG_CUTOUT: cutout(s, img, (int64_t)v, &r); break;
      default: break;
    }
  }
}

void kiln_normalize_sample(const kiln_augment *a, kiln_image_shape s, float *img) {
  if (a->n_channels == 0) return;
  for (int64_t c = 0; c < s.c; c++) {
    int k = a->n_channels == 1 ? 0 : (int)c;
    float *p = img + c * s.h * s.w;
    for (int64_t i = 0; i < s.h * s.w; i++) p[i] = (float)(((double)p[i] - a->mean[k]) / a->std[k]);
  }
}

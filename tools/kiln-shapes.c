// kiln-shapes: a seeded synthetic detection data set for the YOLO recipe (docs/models.md,
// "YOLO-style detection"): RGB images of squares, circles and triangles in random colours on
// uniform noise, with their boxes and the YOLOv1 target grid.
//   kiln-shapes --count N --seed S --out PREFIX [--size 64] [--grid 4] [--max-objects 3]
// writes
//   PREFIX.x.npy      f32 (N, 3, SIZE, SIZE), values in [0, 1]
//   PREFIX.y.npy      f32 (N, GRID, GRID, 8): per cell [x, y, w, h, obj, one-hot class of 3]
//                     (x, y: the centre within the cell, 0..1; w, h: over the image)
//   PREFIX.boxes.npy  f32 (N, MAX, 5): [class, x1, y1, x2, y2] in pixels, class -1 = no object
// Objects have distinct grid cells (one object a cell, as the target grid needs), lie inside the
// image and overlap no other. The same seed gives the same bytes; the train and held-out splits
// are two seeds. Exit status: 0 ok, 2 bad arguments or an unwritable file.
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_runtime.h"

enum { N_CLASSES = 3, BOX_FIELDS = 5, TARGET_FIELDS = 5 + N_CLASSES, MAX_TRIES = 100 };
enum { SQUARE, CIRCLE, TRIANGLE };

typedef struct options {
  long long count, seed;
  int size, grid, max_objects;
  const char *out;
} options;

typedef struct box {
  int cls;
  double x1, y1, x2, y2;  // pixels; x2, y2 exclusive
} box;

// ---- Random numbers: SplitMix64 ----

static uint64_t next_u64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *state) { return (double)(next_u64(state) >> 11) * 0x1p-53; }
static int below(uint64_t *state, int n) { return (int)(next_u64(state) % (uint64_t)n); }

// ---- Drawing ----

static const float COLOURS[6][3] = {{1, 0.1f, 0.1f}, {0.1f, 0.9f, 0.1f}, {0.2f, 0.3f, 1},
                                    {1, 0.9f, 0.1f}, {1, 0.2f, 1},       {0.1f, 1, 1}};

// Whether the pixel centre (px, py) lies in the shape drawn in box b.
static bool inside(const box *b, double px, double py) {
  double w = b->x2 - b->x1, h = b->y2 - b->y1, cx = b->x1 + w / 2, cy = b->y1 + h / 2;
  if (px < b->x1 || px >= b->x2 || py < b->y1 || py >= b->y2) return false;
  switch (b->cls) {
    case SQUARE: return true;
    case CIRCLE: return (px - cx) * (px - cx) + (py - cy) * (py - cy) <= w * w / 4;
    default: return fabs(px - cx) <= (py - b->y1) / h * w / 2;  // apex up, base at the bottom
  }
}

// img: (3, size, size)
static void draw(float *img, int size, const box *b, const float *rgb) {
  for (int y = (int)b->y1; y < (int)ceil(b->y2) && y < size; y++)
    for (int x = (int)b->x1; x < (int)ceil(b->x2) && x < size; x++)
      if (inside(b, x + 0.5, y + 0.5))
        for (int c = 0; c < 3; c++) img[((size_t)c * size + y) * size + x] = rgb[c];
}

// ---- One image ----

static bool overlaps(const box *a, const box *b) {
  return a->x1 < b->x2 && b->x1 < a->x2 && a->y1 < b->y2 && b->y1 < a->y2;
}

static int cell_of(const options *o, const box *b) {
  int col = (int)((b->x1 + b->x2) / 2 * o->grid / o->size);
  int row = (int)((b->y1 + b->y2) / 2 * o->grid / o->size);
  return row * o->grid + col;
}

// A random box inside the image, its side between size/5 and size/2.
static box random_box(const options *o, uint64_t *rng) {
  int lo = o->size / 5, hi = o->size / 2;
  int side = lo + below(rng, hi - lo + 1);
  box b = {.cls = below(rng, N_CLASSES)};
  b.x1 = below(rng, o->size - side + 1), b.y1 = below(rng, o->size - side + 1);
  b.x2 = b.x1 + side, b.y2 = b.y1 + side;
  return b;
}

// Places up to max_objects boxes; returns how many.
static int place_boxes(const options *o, uint64_t *rng, box *boxes) {
  int want = 1 + below(rng, o->max_objects), n = 0;
  for (int tries = 0; n < want && tries < MAX_TRIES; tries++) {
    box b = random_box(o, rng);
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
      ok = !overlaps(&b, &boxes[i]) && cell_of(o, &b) != cell_of(o, &boxes[i]);
    if (ok) boxes[n++] = b;
  }
  return n;
}

static void write_target(const options *o, const box *b, float *grid) {
  double cx = (b->x1 + b->x2) / 2 / o->size, cy = (b->y1 + b->y2) / 2 / o->size;
  float *t = grid + (size_t)cell_of(o, b) * TARGET_FIELDS;
  t[0] = (float)(cx * o->grid - floor(cx * o->grid));
  t[1] = (float)(cy * o->grid - floor(cy * o->grid));
  t[2] = (float)((b->x2 - b->x1) / o->size), t[3] = (float)((b->y2 - b->y1) / o->size);
  t[4] = 1, t[5 + b->cls] = 1;
}

// img: (3, size, size); grid: (grid, grid, 8), zeroed; rows: (max_objects, 5)
static void make_image(const options *o, uint64_t *rng, float *img, float *grid, float *rows) {
  size_t pixels = (size_t)3 * o->size * o->size;
  for (size_t i = 0; i < pixels; i++) img[i] = (float)(0.45 * uniform(rng));
  box boxes[16];
  int n = place_boxes(o, rng, boxes);
  for (int i = 0; i < o->max_objects; i++) {
    float *r = rows + (size_t)i * BOX_FIELDS;
    r[0] = -1, r[1] = r[2] = r[3] = r[4] = 0;
    if (i >= n) continue;
    draw(img, o->size, &boxes[i], COLOURS[below(rng, 6)]);
    write_target(o, &boxes[i], grid);
    r[0] = (float)boxes[i].cls, r[1] = (float)boxes[i].x1, r[2] = (float)boxes[i].y1;
    r[3] = (float)boxes[i].x2, r[4] = (float)boxes[i].y2;
  }
}

// ---- Files ----

static int write_array(const char *prefix, const char *suffix, kiln_array *a) {
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s.%s.npy", prefix, suffix);
  if (kiln_npy_write(path, a, err, sizeof err) != KILN_OK) {
    fprintf(stderr, "kiln-shapes: %s\n", err);
    return 2;
  }
  return 0;
}

static int generate(const options *o) {
  int64_t n = o->count, s = o->size, g = o->grid, m = o->max_objects;
  kiln_array x = {.dtype = KILN_RT_F32, .rank = 4, .shape = {n, 3, s, s}};
  kiln_array y = {.dtype = KILN_RT_F32, .rank = 4, .shape = {n, g, g, TARGET_FIELDS}};
  kiln_array b = {.dtype = KILN_RT_F32, .rank = 3, .shape = {n, m, BOX_FIELDS}};
  kiln_array *all[3] = {&x, &y, &b};
  for (int i = 0; i < 3; i++) {
    all[i]->nbytes = (size_t)kiln_array_numel(all[i]) * sizeof(float);
    all[i]->data = calloc(all[i]->nbytes, 1);
  }
  int status = 0;
  if (!x.data || !y.data || !b.data) {
    fprintf(stderr, "kiln-shapes: out of memory for %lld images\n", (long long)n);
    status = 2;
  }
  uint64_t rng = (uint64_t)o->seed * 0x2545f4914f6cdd1du + 0x5eed;
  for (int64_t i = 0; i < n && status == 0; i++)
    make_image(o, &rng, (float *)x.data + i * 3 * s * s,
               (float *)y.data + i * g * g * TARGET_FIELDS, (float *)b.data + i * m * BOX_FIELDS);
  if (status == 0) status = write_array(o->out, "x", &x);
  if (status == 0) status = write_array(o->out, "y", &y);
  if (status == 0) status = write_array(o->out, "boxes", &b);
  for (int i = 0; i < 3; i++) free(all[i]->data);
  return status;
}

static int usage(const char *why) {
  fprintf(stderr,
          "kiln-shapes: %s\nusage: kiln-shapes --count N --seed S --out PREFIX [--size 64] "
          "[--grid 4] [--max-objects 3]\n",
          why);
  return 2;
}

static bool read_number(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int main(int argc, char **argv) {
  options o = {.size = 64, .grid = 4, .max_objects = 3, .count = -1};
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) return usage("every option takes a value");
    const char *k = argv[i], *v = argv[i + 1];
    long long x = 0;
    bool ok = true;
    if (!strcmp(k, "--out"))
      o.out = v;
    else if (!strcmp(k, "--count"))
      ok = read_number(v, 1, 1000000, &o.count);
    else if (!strcmp(k, "--seed"))
      ok = read_number(v, 0, INT64_MAX, &o.seed);
    else if (!strcmp(k, "--size"))
      ok = read_number(v, 16, 1024, &x), o.size = (int)x;
    else if (!strcmp(k, "--grid"))
      ok = read_number(v, 1, 32, &x), o.grid = (int)x;
    else if (!strcmp(k, "--max-objects"))
      ok = read_number(v, 1, 16, &x), o.max_objects = (int)x;
    else
      return usage("unknown option");
    if (!ok) {
      fprintf(stderr, "kiln-shapes: %s: bad value '%s'\n", k, v);
      return 2;
    }
  }
  if (!o.out || o.count < 0) return usage("--count and --out are required");
  return generate(&o);
}

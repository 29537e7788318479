// Post-processing of a YOLOv1-style detector's output: decoding, NMS, average precision, drawing
// (tools/kiln-detect.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln-detect.h"

bool kiln_det_push(kiln_det_list *l, kiln_det d) {
  if (l->n == l->cap) {
    int64_t cap = l->cap ? 2 * l->cap : 64;
    kiln_det *v = realloc(l->v, sizeof(kiln_det) * (size_t)cap);
    if (!v) return false;
    l->v = v, l->cap = cap;
  }
  l->v[l->n++] = d;
  return true;
}

void kiln_det_list_free(kiln_det_list *l) {
  free(l->v);
  *l = (kiln_det_list){0};
}

// ---- Decoding ----

static int best_class(const float *scores, int classes) {
  int best = 0;
  for (int c = 1; c < classes; c++)
    if (scores[c] > scores[best]) best = c;
  return best;
}

// The boxes of one cell (row, col) of image i: cell[5 boxes + classes].
static bool decode_cell(const float *cell, int64_t i, int row, int col, const kiln_yolo_layout *l,
                        float min_score, kiln_det_list *out) {
  const float *scores = cell + 5 * l->boxes;
  int cls = best_class(scores, l->classes);
  double s = l->image_size, g = l->grid;
  for (int j = 0; j < l->boxes; j++) {
    const float *b = cell + 5 * j;
    float score = b[4] * scores[cls];
    if (!(score >= min_score)) continue;
    double cx = (col + b[0]) / g * s, cy = (row + b[1]) / g * s, w = b[2] * s, h = b[3] * s;
    kiln_det d = {.image = i,
                  .cls = cls,
                  .score = score,
                  .x1 = (float)(cx - w / 2),
                  .y1 = (float)(cy - h / 2),
                  .x2 = (float)(cx + w / 2),
                  .y2 = (float)(cy + h / 2)};
    if (!kiln_det_push(out, d)) return false;
  }
  return true;
}

bool kiln_yolo_decode(const float *pred, int64_t n_images, const kiln_yolo_layout *l,
                      float min_score, kiln_det_list *out) {
  int64_t len = 5 * l->boxes + l->classes;
  for (int64_t i = 0; i < n_images; i++)
    for (int r = 0; r < l->grid; r++)
      for (int c = 0; c < l->grid; c++) {
        const float *cell = pred + ((i * l->grid + r) * l->grid + c) * len;
        if (!decode_cell(cell, i, r, c, l, min_score, out)) return false;
      }
  return true;
}

// ---- IoU and NMS ----

double kiln_box_iou(const kiln_det *a, const kiln_det *b) {
  double iw = fmin(a->x2, b->x2) - fmax(a->x1, b->x1);
  double ih = fmin(a->y2, b->y2) - fmax(a->y1, b->y1);
  double inter = fmax(iw, 0) * fmax(ih, 0);
  double uni =
      (double)(a->x2 - a->x1) * (a->y2 - a->y1) + (double)(b->x2 - b->x1) * (b->y2 - b->y1) - inter;
  return uni > 0 ? inter / uni : 0;
}

// Descending score; ties broken by image, then x1, for a deterministic order.
static int by_score(const void *pa, const void *pb) {
  const kiln_det *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  if (a->image != b->image) return a->image < b->image ? -1 : 1;
  return a->x1 < b->x1 ? -1 : a->x1 > b->x1;
}

static int by_image_score(const void *pa, const void *pb) {
  const kiln_det *a = pa, *b = pb;
  if (a->image != b->image) return a->image < b->image ? -1 : 1;
  return by_score(pa, pb);
}

void kiln_nms(kiln_det_list *l, double iou_threshold) {
  if (l->n == 0) return;
  qsort(l->v, (size_t)l->n, sizeof(kiln_det), by_image_score);
  int64_t kept = 0, first = 0;  // l->v[first, kept): the kept boxes of the current image
  for (int64_t i = 0; i < l->n; i++) {
    if (kept > 0 && l->v[kept - 1].image != l->v[i].image) first = kept;
    bool keep = true;
    for (int64_t k = first; k < kept && keep; k++)
      keep = l->v[k].cls != l->v[i].cls || kiln_box_iou(&l->v[k], &l->v[i]) <= iou_threshold;
    if (keep) l->v[kept++] = l->v[i];
  }
  l->n = kept;
}

// ---- Average precision ----

// The unmatched ground-truth box of the detection's image and class overlapping it most, if
// the IoU reaches the threshold; -1 otherwise.
static int64_t match(const kiln_det *d, const kiln_det *truth, int64_t n_truth, const bool *used,
                     double iou_threshold) {
  int64_t best = -1;
  double best_iou = iou_threshold;
  for (int64_t t = 0; t < n_truth; t++) {
    if (used[t] || truth[t].image != d->image || truth[t].cls != d->cls) continue;
    double iou = kiln_box_iou(d, &truth[t]);
    if (iou >= best_iou) best_iou = iou, best = t;
  }
  return best;
}

// The area under the precision envelope: precision made non-increasing from the right.
static double area_under_envelope(double *precision, const double *recall, int64_t n) {
  for (int64_t k = n - 2; k >= 0; k--) precision[k] = fmax(precision[k], precision[k + 1]);
  double ap = 0, prev_recall = 0;
  for (int64_t k = 0; k < n; k++) {
    ap += (recall[k] - prev_recall) * precision[k];
    prev_recall = recall[k];
  }
  return ap;
}

double kiln_average_precision(kiln_det *dets, int64_t n, const kiln_det *truth, int64_t n_truth,
                              int cls, double iou_threshold) {
  int64_t positives = 0;
  for (int64_t t = 0; t < n_truth; t++) positives += truth[t].cls == cls;
  if (positives == 0) return -1;
  if (n > 0) qsort(dets, (size_t)n, sizeof(kiln_det), by_score);
  bool *used = calloc((size_t)n_truth + 1, 1);
  double *precision = malloc(sizeof(double) * ((size_t)n + 1));
  double *recall = malloc(sizeof(double) * ((size_t)n + 1));
  double ap = -1;
  if (used && precision && recall) {
    int64_t tp = 0, seen = 0;
    for (int64_t i = 0; i < n; i++) {
      if (dets[i].cls != cls) continue;
      int64_t t = match(&dets[i], truth, n_truth, used, iou_threshold);
      if (t >= 0) used[t] = true, tp++;
      seen++;
      precision[seen - 1] = (double)tp / (double)seen;
      recall[seen - 1] = (double)tp / (double)positives;
    }
    ap = area_under_envelope(precision, recall, seen);
  }
  free(used), free(precision), free(recall);
  return ap;
}

double kiln_mean_ap(kiln_det *dets, int64_t n, const kiln_det *truth, int64_t n_truth, int classes,
                    double iou_threshold, double *per_class) {
  double sum = 0;
  int counted = 0;
  for (int c = 0; c < classes; c++) {
    double ap = kiln_average_precision(dets, n, truth, n_truth, c, iou_threshold);
    if (per_class) per_class[c] = ap;
    if (ap >= 0) sum += ap, counted++;
  }
  return counted ? sum / counted : 0;
}

// ---- Drawing ----

static const uint8_t CLASS_RGB[][3] = {{255, 255, 255}, {255, 140, 0}, {255, 0, 200}, {0, 0, 0}};
enum { PAD = 2, N_CLASS_RGB = sizeof CLASS_RGB / sizeof CLASS_RGB[0] };

static void put(kiln_det_canvas *c, int x, int y, const uint8_t *rgb) {
  if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
  memcpy(c->rgb + ((size_t)y * (size_t)c->width + (size_t)x) * 3, rgb, 3);
}

static uint8_t to_byte(float v) {
  float t = v > 0 ? (v < 1 ? v : 1) : 0;  // NaN -> 0
  return (uint8_t)lrintf(255.0f * t);
}

// img: (3, size, size) at (x0, y0), each pixel a scale x scale block.
static void blit(kiln_det_canvas *c, const float *img, int size, int scale, int x0, int y0) {
  for (int y = 0; y < size * scale; y++)
    for (int x = 0; x < size * scale; x++) {
      size_t p = (size_t)(y / scale) * (size_t)size + (size_t)(x / scale),
             plane = (size_t)size * size;
      uint8_t rgb[3] = {to_byte(img[p]), to_byte(img[plane + p]), to_byte(img[2 * plane + p])};
      put(c, x0 + x, y0 + y, rgb);
    }
}

// A 1-pixel rectangle outline, clipped to the tile [x0, x0 + extent) x [y0, y0 + extent).
static void outline(kiln_det_canvas *c, const kiln_det *d, int scale, int x0, int y0, int extent) {
  const uint8_t *rgb = CLASS_RGB[d->cls >= 0 && d->cls < N_CLASS_RGB ? d->cls : N_CLASS_RGB - 1];
  int l = (int)lrintf(d->x1 * scale), r = (int)lrintf(d->x2 * scale) - 1;
  int t = (int)lrintf(d->y1 * scale), b = (int)lrintf(d->y2 * scale) - 1;
  l = l < 0 ? 0 : l, t = t < 0 ? 0 : t;
  r = r >= extent ? extent - 1 : r, b = b >= extent ? extent - 1 : b;
  for (int x = l; x <= r; x++) put(c, x0 + x, y0 + t, rgb), put(c, x0 + x, y0 + b, rgb);
  for (int y = t; y <= b; y++) put(c, x0 + l, y0 + y, rgb), put(c, x0 + r, y0 + y, rgb);
}

bool kiln_draw_detections(const float *images, int64_t n, int size, int cols, int scale,
                          const kiln_det *dets, int64_t n_dets, kiln_det_canvas *canvas) {
  int tile = size * scale, shown_cols = n < cols ? (int)n : cols,
      rows = (int)((n + cols - 1) / cols);
  canvas->width = shown_cols * (tile + PAD) + PAD;
  canvas->height = rows * (tile + PAD) + PAD;
  canvas->rgb = calloc((size_t)canvas->width * (size_t)canvas->height, 3);
  if (!canvas->rgb) return false;
  for (int64_t i = 0; i < n; i++) {
    int x0 = PAD + (int)(i % cols) * (tile + PAD), y0 = PAD + (int)(i / cols) * (tile + PAD);
    blit(canvas, images + (size_t)i * 3 * (size_t)size * (size_t)size, size, scale, x0, y0);
    for (int64_t k = 0; k < n_dets; k++)
      if (dets[k].image == i) outline(canvas, &dets[k], scale, x0, y0, tile);
  }
  return true;
}

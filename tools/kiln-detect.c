// kiln-detect: scores and draws a YOLOv1-style detector's predictions (docs/models.md, "YOLO-style
// detection"). The predictions are the model's output grid (N, S, S, 5B + C) as written by the
// inference binary (`./yolo --input x=X.npy --output pred=P.npy`); decoding, NMS (per image and
// class) and mAP are in tools/kiln-detect-post.c.
//   kiln-detect eval --pred P.npy --boxes B.npy [--boxes-per-cell 2] [--image-size 64]
//                    [--min-score 0.01] [--nms 0.5] [--iou 0.5]
//       prints ap_<class>=<float> per class and map50=<float> (the mean AP at --iou)
//   kiln-detect draw --pred P.npy --images X.npy --out PNG [--count 16] [--cols 4] [--scale 2]
//                    [--min-score 0.3] [--boxes-per-cell 2] [--nms 0.5]
//       the first --count images with their detections as boxes (white: square, orange: circle,
//       magenta: triangle), an RGB PNG written atomically
// B.npy is kiln-shapes' PREFIX.boxes.npy: (N, MAX, 5) [class, x1, y1, x2, y2], class -1 = none.
// Exit status: 0 ok, 2 bad arguments or files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln-detect.h"
#include "kiln_runtime.h"
#include "plot.h"

static const char *const CLASS_NAMES[] = {"square", "circle", "triangle"};

typedef struct options {
  const char *pred, *boxes, *images, *out;
  int boxes_per_cell, image_size, count, cols, scale;
  double min_score, nms, iou;
} options;

static int fail(const char *what, const char *detail) {
  fprintf(stderr, "kiln-detect: %s: %s\n", what, detail);
  return 2;
}

static bool read_f32(const char *path, int rank, kiln_array *a) {
  char err[512];
  if (kiln_npy_read(path, a, err, sizeof err) != KILN_OK) {
    fprintf(stderr, "kiln-detect: %s\n", err);  // err names the file
    return false;
  }
  if (a->dtype != KILN_RT_F32 || a->rank != rank) {
    fprintf(stderr, "kiln-detect: %s: expected an f32 array of rank %d\n", path, rank);
    kiln_array_free(a);
    return false;
  }
  return true;
}

// The layout of pred (N, S, S, 5B + C) with o->boxes_per_cell boxes.
static bool layout_of(const options *o, const kiln_array *pred, kiln_yolo_layout *l) {
  l->grid = (int)pred->shape[1], l->boxes = o->boxes_per_cell, l->image_size = o->image_size;
  l->classes = (int)(pred->shape[3] - 5 * l->boxes);
  if (pred->shape[1] != pred->shape[2] || l->classes < 1) {
    fprintf(stderr,
            "kiln-detect: %s: expected (N, S, S, 5 * %d + classes), got last dims (%lld, %lld, "
            "%lld)\n",
            o->pred, o->boxes_per_cell, (long long)pred->shape[1], (long long)pred->shape[2],
            (long long)pred->shape[3]);
    return false;
  }
  return true;
}

// Decoded and NMS-filtered detections of pred.
static bool detections(const options *o, const kiln_array *pred, kiln_det_list *out) {
  kiln_yolo_layout l;
  if (!layout_of(o, pred, &l)) return false;
  if (!kiln_yolo_decode(pred->data, pred->shape[0], &l, (float)o->min_score, out))
    return fail(o->pred, "out of memory"), false;
  kiln_nms(out, o->nms);
  return true;
}

// Ground truth from kiln-shapes' boxes (N, MAX, 5).
static bool read_truth(const options *o, int64_t n_images, kiln_det_list *truth) {
  kiln_array b;
  if (!read_f32(o->boxes, 3, &b)) return false;
  bool ok = b.shape[0] == n_images && b.shape[2] == 5;
  if (!ok)
    fprintf(stderr, "kiln-detect: %s: expected (%lld, MAX, 5)\n", o->boxes, (long long)n_images);
  const float *v = b.data;
  for (int64_t i = 0; ok && i < b.shape[0] * b.shape[1]; i++) {
    const float *r = v + i * 5;
    if (r[0] < 0) continue;
    kiln_det d = {
        .image = i / b.shape[1], .cls = (int)r[0], .x1 = r[1], .y1 = r[2], .x2 = r[3], .y2 = r[4]};
    ok = kiln_det_push(truth, d);
  }
  kiln_array_free(&b);
  return ok;
}

static int cmd_eval(const options *o) {
  if (!o->pred || !o->boxes) return fail("eval", "--pred and --boxes are required");
  kiln_array pred;
  if (!read_f32(o->pred, 4, &pred)) return 2;
  kiln_det_list dets = {0}, truth = {0};
  int status = 2;
  if (detections(o, &pred, &dets) && read_truth(o, pred.shape[0], &truth)) {
    int classes = (int)(pred.shape[3] - 5 * o->boxes_per_cell);
    double *ap = calloc((size_t)classes, sizeof(double));
    if (ap) {
      double map = kiln_mean_ap(dets.v, dets.n, truth.v, truth.n, classes, o->iou, ap);
      for (int c = 0; c < classes; c++)
        printf("ap_%s=%.4f\n", c < 3 ? CLASS_NAMES[c] : "other", ap[c]);
      printf("detections=%lld objects=%lld\nmap50=%.4f\n", (long long)dets.n, (long long)truth.n,
             map);
      status = 0;
    }
    free(ap);
  }
  kiln_det_list_free(&dets), kiln_det_list_free(&truth);
  kiln_array_free(&pred);
  return status;
}

static int cmd_draw(const options *o) {
  if (!o->pred || !o->images || !o->out)
    return fail("draw", "--pred, --images and --out are required");
  kiln_array pred, x;
  if (!read_f32(o->pred, 4, &pred)) return 2;
  if (!read_f32(o->images, 4, &x)) return kiln_array_free(&pred), 2;
  int status = 2;
  kiln_det_list dets = {0};
  int64_t n = x.shape[0] < o->count ? x.shape[0] : o->count;
  if (x.shape[0] != pred.shape[0] || x.shape[1] != 3 || x.shape[2] != o->image_size ||
      x.shape[3] != o->image_size) {
    fprintf(stderr, "kiln-detect: %s: expected (%lld, 3, %d, %d) images\n", o->images,
            (long long)pred.shape[0], o->image_size, o->image_size);
  } else if (detections(o, &pred, &dets)) {
    kiln_det_canvas c;
    char err[512];
    if (!kiln_draw_detections(x.data, n, o->image_size, o->cols, o->scale, dets.v, dets.n, &c))
      fail(o->out, "out of memory");
    else if (kiln_rgb_png(o->out, c.rgb, c.width, c.height, err, sizeof err) != KILN_OK)
      fprintf(stderr, "kiln-detect: %s\n", err), free(c.rgb);
    else
      status = 0, free(c.rgb);
  }
  kiln_det_list_free(&dets);
  kiln_array_free(&pred), kiln_array_free(&x);
  return status;
}

static bool read_int(const char *s, int lo, int hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

static bool read_unit(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= 0 && v <= 1)) return false;
  *out = v;
  return true;
}

static bool set_option(options *o, const char *k, const char *v) {
  if (!strcmp(k, "--pred")) return o->pred = v, true;
  if (!strcmp(k, "--boxes")) return o->boxes = v, true;
  if (!strcmp(k, "--images")) return o->images = v, true;
  if (!strcmp(k, "--out")) return o->out = v, true;
  if (!strcmp(k, "--boxes-per-cell")) return read_int(v, 1, 16, &o->boxes_per_cell);
  if (!strcmp(k, "--image-size")) return read_int(v, 1, 4096, &o->image_size);
  if (!strcmp(k, "--count")) return read_int(v, 1, 10000, &o->count);
  if (!strcmp(k, "--cols")) return read_int(v, 1, 100, &o->cols);
  if (!strcmp(k, "--scale")) return read_int(v, 1, 16, &o->scale);
  if (!strcmp(k, "--min-score")) return read_unit(v, &o->min_score);
  if (!strcmp(k, "--nms")) return read_unit(v, &o->nms);
  if (!strcmp(k, "--iou")) return read_unit(v, &o->iou);
  return false;
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "eval") && strcmp(argv[1], "draw")))
    return fail("usage", "kiln-detect eval|draw --pred P.npy ... (see tools/kiln-detect.c)");
  bool draw = !strcmp(argv[1], "draw");
  options o = {.boxes_per_cell = 2,
               .image_size = 64,
               .count = 16,
               .cols = 4,
               .scale = 2,
               .min_score = draw ? 0.3 : 0.01,
               .nms = 0.5,
               .iou = 0.5};
  for (int i = 2; i < argc; i += 2)
    if (i + 1 >= argc || !set_option(&o, argv[i], argv[i + 1]))
      return fail(argv[i], i + 1 < argc ? "unknown option or bad value" : "missing value");
  return draw ? cmd_draw(&o) : cmd_eval(&o);
}

// The YOLO-style detection recipe (docs/models.md, "YOLO-style detection"):
//  - step parity with PyTorch: a tiny detector (tools/goldens_yolo.py, tests/goldens/yolo/parity)
//    trained 5 Adam steps with YoloLoss through the reference interpreter and through a trainer
//    built by `kiln build --train` (losses and final params); the trainer's loss falls over a short
//    run on kiln-shapes images;
//  - YoloLossGrad against central finite differences of YoloLoss (reference kernels, double); the
//    op goldens (tests/test_ops.c) hold both to PyTorch;
//  - the kiln-shapes generator: the same seed gives the same bytes, another seed other bytes, every
//    box lies inside its image and the target grid agrees with the boxes;
//  - post-processing (tools/kiln-detect-post.c): decoding, NMS, AP / mAP@0.5 on hand-computed
//    cases, `kiln-detect eval` on perfect predictions (map50=1), the RGB PNG read back.
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "../runtime/plot.h"
#include "../tools/kiln-detect.h"
#include "test_util.h"

TestSuite(yolo, .fini = check_leaks);

// Within f32 noise: PyTorch and Kiln sum in different orders; 5 Adam steps compound it.
static const double LOSS_RTOL = 5e-5, LOSS_ATOL = 1e-5;
static const double PARAM_RTOL = 2e-4, PARAM_ATOL = 1e-5;

static char *golden(const char *file) {
  return path_join(KILN_TEST_GOLDENS_DIR "/yolo/parity", file);
}

static void expect_loss(const char *what, int step, double got, double want) {
  cr_expect(fabs(got - want) <= LOSS_ATOL + LOSS_RTOL * fabs(want),
            "%s: step %d: loss %.9g, PyTorch %.9g", what, step, got, want);
}

// Every entry of the golden safetensors `want_file` against `lookup(name)`'s data.
static void check_params(const char *what, const char *want_file, const kiln_safetensors *got_st,
                         const kiln_graph *g) {
  char *path = golden(want_file), err[512];
  kiln_safetensors want;
  cr_assert_eq(kiln_safetensors_read(path, &want, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *e = &want.entries[i];
    kiln_array w = {
        .dtype = e->dtype, .rank = e->rank, .nbytes = e->nbytes, .data = (void *)e->data};
    memcpy(w.shape, e->shape, sizeof(int64_t) * (size_t)e->rank);
    kiln_array got = w;
    if (g) {
      int t = kiln_graph_find_tensor(g, e->name);
      cr_assert(t >= 0 && g->tensors[t].kind == KILN_TENSOR_STATE, "%s: %s is not trained", what,
                e->name);
      got.data = g->tensors[t].data;
    } else {
      const kiln_st_entry *ge = kiln_safetensors_find(got_st, e->name);
      cr_assert(ge && ge->nbytes == e->nbytes, "%s: no %s in the checkpoint", what, e->name);
      got.data = (void *)ge->data;
    }
    char why[512];
    cr_expect(arrays_close(&got, &w, PARAM_ATOL, PARAM_RTOL, why, sizeof why), "%s: %s: %s", what,
              e->name, why);
  }
  kiln_safetensors_free(&want);
  free(path);
}

Test(yolo, interpreter_matches_pytorch_for_5_steps) {
  char *model = golden("model.json"), *xp = golden("x.npy"), *tp = golden("target.npy"),
       *lp = golden("losses.npy");
  kiln_graph *g = training_graph_or_fail(model);
  kiln_diag d;
  kiln_diag_init(&d, model);
  cr_assert_eq(g->n_inputs, 2, "inputs x and target");
  kiln_array in[2] = {read_npy_or_fail(xp), read_npy_or_fail(tp)}, losses = read_npy_or_fail(lp);
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  for (int s = 0; s < 5; s++) {
    cr_assert(kiln_interp_run(g, in, out, &d), "step %d fails", s);
    expect_loss("interpreter", s, kiln_element_get(out[0].data, out[0].dtype, 0),
                kiln_element_get(losses.data, losses.dtype, s));
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  check_params("interpreter", "final.safetensors", NULL, g);
  free(out);
  kiln_array_free(&in[0]), kiln_array_free(&in[1]), kiln_array_free(&losses);
  kiln_graph_free(g);
  free(model), free(xp), free(tp), free(lp);
}

// ---- The built trainer: parity, then the loss falls on generated images ----

static void run_ok(char *const argv[], const char *what) {
  run_result r = run_cmd(argv, 300);
  cr_assert_eq(r.status, 0, "%s: %s%s", what, r.out, r.err);
  run_result_free(&r);
}

static void trainer_parity(const char *exe) {
  char *xp = golden("x.npy"), *tp = golden("target.npy"), *lp = golden("trainer_losses.npy");
  char src[1300], ck[700], log[700], err[512];
  snprintf(src, sizeof src, "%s,%s", xp, tp);
  snprintf(ck, sizeof ck, "%s.parity.safetensors", exe);
  snprintf(log, sizeof log, "%s.parity.csv", exe);
  char *run[] = {(char *)exe, "--train", src, "--epochs", "5", "--save", ck, "--log", log, NULL};
  run_ok(run, "the trainer");
  kiln_array want = read_npy_or_fail(lp);
  for (int s = 0; s < 5; s++)
    expect_loss("trainer", s, mean_logged_loss(log, s, s + 1),
                kiln_element_get(want.data, want.dtype, s));
  kiln_safetensors got;
  cr_assert_eq(kiln_safetensors_read(ck, &got, err, sizeof err), KILN_OK, "%s", err);
  check_params("trainer", "trainer_final.safetensors", &got, NULL);
  kiln_safetensors_free(&got);
  kiln_array_free(&want);
  free(xp), free(tp), free(lp);
}

Test(yolo, trainer_matches_pytorch_and_its_loss_falls, .timeout = 600) {
  char *dir = make_temp_dir(), *model = golden("model.json"), *exe = path_join(dir, "yolo-train");
  char *data = path_join(dir, "shapes"), src[1300], log[700];
  char *build[] = {KILN_EXE, "build", "--train", model, "-o", exe, NULL};
  run_ok(build, "kiln build --train");
  trainer_parity(exe);
  // 96 images of 16 x 16 on a 2 x 2 grid: 24 steps an epoch, 2 epochs.
  char *gen[] = {KILN_SHAPES_EXE, "--count", "96",    "--seed", "3", "--size", "16",
                 "--grid",        "2",       "--out", data,     NULL};
  run_ok(gen, "kiln-shapes");
  snprintf(src, sizeof src, "%s.x.npy,%s.y.npy", data, data);
  snprintf(log, sizeof log, "%s.csv", exe);
  char *train[] = {exe, "--train", src, "--epochs", "2", "--log", log, NULL};
  run_ok(train, "the trainer on kiln-shapes images");
  double first = mean_logged_loss(log, 0, 10), last = mean_logged_loss(log, 38, 48);
  cr_expect(last < 0.9 * first, "loss %g over the first 10 steps, %g over the last 10", first,
            last);
  rm_rf(dir);
  free(dir), free(model), free(exe), free(data);
}

// ---- YoloLossGrad against finite differences of YoloLoss ----

// L(pred) = sum_n dloss[n] * YoloLoss(pred, target)[n], through the reference kernel.
static double weighted_loss(const kiln_node *n, kiln_eval_tensor *in, const double *dloss,
                            int64_t batch) {
  kiln_shape s = {.rank = 1, .dim = {batch}};
  double *loss = calloc((size_t)batch, sizeof(double)), sum = 0;
  kiln_eval_tensor out = {.shape = &s, .dtype = KILN_F64, .data = loss};
  kiln_op_YoloLoss.eval(n, in, &out);
  for (int64_t i = 0; i < batch; i++) sum += dloss[i] * loss[i];
  free(loss);
  return sum;
}

static double *as_doubles(const kiln_array *a) {
  int64_t n = kiln_array_numel(a);
  double *v = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) v[i] = kiln_element_get(a->data, a->dtype, i);
  return v;
}

static void check_finite_differences(const char *c) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR "/ops", c), *mp = path_join(dir, "model.json");
  char *pp = path_join(dir, "pred.npy"), *tp = path_join(dir, "target.npy"),
       *dp = path_join(dir, "dloss.npy");
  kiln_diag d;
  kiln_diag_init(&d, mp);
  kiln_graph *g = kiln_load_model(mp, &d);
  cr_assert(g, "%s: does not load", mp);
  const kiln_node *n = &g->nodes[0];
  kiln_array pa = read_npy_or_fail(pp), ta = read_npy_or_fail(tp), da = read_npy_or_fail(dp);
  double *p = as_doubles(&pa), *t = as_doubles(&ta), *dl = as_doubles(&da);
  const kiln_shape *ps = &g->tensors[n->inputs[0]].shape, *ts = &g->tensors[n->inputs[1]].shape;
  const kiln_shape *ds = &g->tensors[n->inputs[2]].shape;
  int64_t count = kiln_shape_numel(ps), batch = ps->dim[0];
  double *grad = calloc((size_t)count, sizeof(double));
  kiln_eval_tensor in[3] = {{ps, KILN_F64, p}, {ts, KILN_F64, t}, {ds, KILN_F64, dl}};
  kiln_eval_tensor out = {ps, KILN_F64, grad};
  kiln_op_YoloLossGrad.eval(n, in, &out);
  const double h = 1e-6;
  for (int64_t i = 0; i < count; i++) {
    double keep = p[i];
    p[i] = keep + h;
    double up = weighted_loss(n, in, dl, batch);
    p[i] = keep - h;
    double down = weighted_loss(n, in, dl, batch);
    p[i] = keep;
    double fd = (up - down) / (2 * h);
    cr_expect(fabs(grad[i] - fd) <= 1e-5 + 1e-5 * fabs(fd),
              "%s: element %lld: gradient %.9g, finite difference %.9g", c, (long long)i, grad[i],
              fd);
  }
  free(grad), free(p), free(t), free(dl);
  kiln_array_free(&pa), kiln_array_free(&ta), kiln_array_free(&da);
  kiln_graph_free(g);
  free(dir), free(mp), free(pp), free(tp), free(dp);
}

Test(yolo, loss_gradient_matches_finite_differences) {
  check_finite_differences("yolo_loss_s3_grad");
  check_finite_differences("yolo_loss_b3_rect_grad");
  check_finite_differences("yolo_loss_b1_grad");
}

// ---- The generator ----

static void generate(const char *prefix, const char *seed) {
  char *gen[] = {KILN_SHAPES_EXE, "--count", "40",           "--seed",
                 (char *)seed,    "--out",   (char *)prefix, NULL};
  run_ok(gen, "kiln-shapes");
}

static char *file_of(const char *prefix, const char *suffix) {
  size_t n = strlen(prefix) + strlen(suffix) + 1;
  char *p = malloc(n);
  snprintf(p, n, "%s%s", prefix, suffix);
  return p;
}

static void expect_same(const char *a, const char *b, const char *suffix, bool same) {
  char *fa = file_of(a, suffix), *fb = file_of(b, suffix);
  cr_expect_eq(files_equal(fa, fb), same, "%s vs %s: expected %s", fa, fb,
               same ? "the same bytes" : "a difference");
  free(fa), free(fb);
}

// Every box inside the 64 x 64 image with a known class, and its cell of the 4 x 4 target grid
// holding it: obj 1, the centre, the size, the class.
static void check_boxes(const char *prefix) {
  char *bp = file_of(prefix, ".boxes.npy"), *yp = file_of(prefix, ".y.npy");
  kiln_array b = read_npy_or_fail(bp), y = read_npy_or_fail(yp);
  cr_assert(b.rank == 3 && b.shape[0] == 40 && b.shape[2] == 5 && y.rank == 4 && y.shape[3] == 8);
  const float *v = b.data, *t = y.data;
  int64_t objects = 0, marked = 0;
  for (int64_t k = 0; k < 40 * 4 * 4; k++) marked += t[k * 8 + 4] == 1.0f;
  for (int64_t i = 0; i < b.shape[0] * b.shape[1]; i++) {
    const float *r = v + i * 5;
    if (r[0] < 0) continue;
    objects++;
    cr_expect(r[0] <= 2 && r[1] >= 0 && r[2] >= 0 && r[3] <= 64 && r[4] <= 64 && r[1] < r[3] &&
                  r[2] < r[4],
              "box %lld: class %g, (%g, %g)-(%g, %g)", (long long)i, r[0], r[1], r[2], r[3], r[4]);
    double cx = (r[1] + r[3]) / 2 / 16, cy = (r[2] + r[4]) / 2 / 16;
    const float *cell = t + ((i / b.shape[1] * 4 + (int64_t)cy) * 4 + (int64_t)cx) * 8;
    cr_expect(cell[4] == 1 && fabs(cell[0] - (cx - floor(cx))) < 1e-6 &&
                  fabs(cell[2] - (r[3] - r[1]) / 64) < 1e-6 && cell[5 + (int)r[0]] == 1,
              "box %lld: its target cell disagrees", (long long)i);
  }
  cr_expect(objects >= 40 && objects == marked, "%lld boxes, %lld object cells", (long long)objects,
            (long long)marked);
  kiln_array_free(&b), kiln_array_free(&y);
  free(bp), free(yp);
}

Test(yolo, generator_is_deterministic_and_its_boxes_fit) {
  char *dir = make_temp_dir(), *a = path_join(dir, "a"), *b = path_join(dir, "b"),
       *c = path_join(dir, "c");
  generate(a, "5"), generate(b, "5"), generate(c, "6");
  const char *suffixes[] = {".x.npy", ".y.npy", ".boxes.npy"};
  for (int i = 0; i < 3; i++)
    expect_same(a, b, suffixes[i], true), expect_same(a, c, suffixes[i], false);
  check_boxes(a);
  char *bad[] = {KILN_SHAPES_EXE, "--count", "0", "--out", a, NULL};
  run_result r = run_cmd(bad, 60);
  cr_expect(r.status == 2 && strstr(r.err, "--count"), "status %d: %s", r.status, r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(a), free(b), free(c);
}

// ---- Post-processing ----

static kiln_det det(int64_t image, int cls, float score, float x1, float y1, float x2, float y2) {
  return (kiln_det){
      .image = image, .cls = cls, .score = score, .x1 = x1, .y1 = y1, .x2 = x2, .y2 = y2};
}

Test(yolo, decoding_places_boxes_in_pixels) {
  // One image, a 2 x 2 grid, 1 box a cell, 2 classes: cell (row 1, col 0) holds a box centred at
  // (0.5, 0.25) of the cell, 0.25 x 0.5 of the 64-pixel image, conf 0.8, class 1 at 0.9.
  float pred[2 * 2 * 7] = {0};
  float *cell = pred + (1 * 2 + 0) * 7;
  cell[0] = 0.5f, cell[1] = 0.25f, cell[2] = 0.25f, cell[3] = 0.5f, cell[4] = 0.8f, cell[5] = 0.1f,
  cell[6] = 0.9f;
  kiln_yolo_layout l = {.grid = 2, .boxes = 1, .classes = 2, .image_size = 64};
  kiln_det_list out = {0};
  cr_assert(kiln_yolo_decode(pred, 1, &l, 0.5f, &out));
  cr_assert_eq(out.n, 1);
  kiln_det d = out.v[0];  // centre (16, 40), 16 x 32
  cr_expect(d.cls == 1 && fabsf(d.score - 0.72f) < 1e-6f && d.x1 == 8 && d.x2 == 24 && d.y1 == 24 &&
                d.y2 == 56,
            "class %d score %g (%g, %g)-(%g, %g)", d.cls, d.score, d.x1, d.y1, d.x2, d.y2);
  kiln_det_list_free(&out);
}

Test(yolo, nms_keeps_the_best_of_each_overlapping_group) {
  kiln_det_list l = {0};
  kiln_det_push(&l, det(0, 0, 0.6f, 0, 0, 10, 10));     // IoU 0.81 with the 0.9 box: suppressed
  kiln_det_push(&l, det(0, 0, 0.9f, 0, 0, 10, 9));      // kept
  kiln_det_push(&l, det(0, 1, 0.5f, 0, 0, 10, 10));     // another class: kept
  kiln_det_push(&l, det(0, 0, 0.7f, 5, 0, 15, 9));      // IoU 1/3 with the 0.9 box: kept
  kiln_det_push(&l, det(1, 0, 0.3f, 0, 0, 10, 10));     // another image: kept
  kiln_det_push(&l, det(0, 0, 0.65f, 20, 20, 30, 30));  // far away: kept
  kiln_nms(&l, 0.5);
  float want[] = {0.9f, 0.7f, 0.65f, 0.5f, 0.3f};
  cr_assert_eq(l.n, 5);
  for (int i = 0; i < 5; i++)
    cr_expect_eq(l.v[i].score, want[i], "kept %d: score %g", i, l.v[i].score);
  kiln_det_list_free(&l);
}

Test(yolo, average_precision_hand_computed) {
  kiln_det truth[] = {det(0, 0, 0, 0, 0, 10, 10), det(1, 0, 0, 20, 20, 30, 30),
                      det(1, 1, 0, 0, 0, 8, 8)};
  // Perfect detections: AP 1 for both classes.
  kiln_det perfect[] = {det(0, 0, 0.9f, 0, 0, 10, 10), det(1, 0, 0.8f, 20, 20, 30, 30),
                        det(1, 1, 0.7f, 0, 0, 8, 8)};
  double ap[2];
  cr_expect_float_eq(kiln_mean_ap(perfect, 3, truth, 3, 2, 0.5, ap), 1.0, 1e-12);
  // Class 0: hit (0.9), miss (0.8: wrong place), hit (0.7), then a duplicate of a matched box
  // (0.6: a false positive). Precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1: the envelope
  // gives AP = 1/2 * 1 + 1/2 * 2/3 = 5/6. Class 1: nothing detected, AP 0. Class 2: no truth.
  kiln_det partial[] = {det(0, 0, 0.9f, 0, 0, 10, 10), det(0, 0, 0.8f, 40, 40, 50, 50),
                        det(1, 0, 0.7f, 21, 21, 31, 31), det(0, 0, 0.6f, 0, 0, 10, 11)};
  double ap3[3];
  cr_expect_float_eq(kiln_mean_ap(partial, 4, truth, 3, 3, 0.5, ap3), (5.0 / 6 + 0) / 2, 1e-12);
  cr_expect_float_eq(ap3[0], 5.0 / 6, 1e-12);
  cr_expect_float_eq(ap3[1], 0.0, 1e-12);
  cr_expect_float_eq(ap3[2], -1.0, 1e-12);
  // IoU (21..31 vs 20..30) = 81 / 119: below 0.75, so at that threshold the 0.7 box misses too.
  cr_expect_float_eq(kiln_average_precision(partial, 4, truth, 3, 0, 0.75), 0.5, 1e-12);
}

// kiln-shapes images, predictions made from their own target grid (box 0 = the object, conf 1;
// box 1 conf 0): `kiln-detect eval` reports map50=1; `draw` writes a PNG.
Test(yolo, kiln_detect_scores_perfect_predictions_1) {
  char *dir = make_temp_dir(), *data = path_join(dir, "s"), *pp = path_join(dir, "pred.npy");
  char *png = path_join(dir, "det.png"), *yp = file_of(data, ".y.npy"),
       *bp = file_of(data, ".boxes.npy");
  char *xp = file_of(data, ".x.npy"), err[512];
  generate(data, "8");
  kiln_array y = read_npy_or_fail(yp);
  int64_t cells = kiln_array_numel(&y) / 8;
  kiln_array p = {.dtype = KILN_RT_F32, .rank = 4, .shape = {y.shape[0], 4, 4, 13}};
  p.nbytes = (size_t)cells * 13 * sizeof(float);
  p.data = calloc(p.nbytes, 1);
  for (int64_t k = 0; k < cells; k++) {
    const float *t = (const float *)y.data + k * 8;
    float *o = (float *)p.data + k * 13;
    memcpy(o, t, 5 * sizeof(float));           // box 0: the target box, conf = obj
    memcpy(o + 10, t + 5, 3 * sizeof(float));  // classes
  }
  cr_assert_eq(kiln_npy_write(pp, &p, err, sizeof err), KILN_OK, "%s", err);
  char *eval[] = {KILN_DETECT_EXE, "eval", "--pred", pp, "--boxes", bp, NULL};
  run_result r = run_cmd(eval, 60);
  cr_expect(r.status == 0 && strstr(r.out, "map50=1.0000"), "status %d: %s%s", r.status, r.out,
            r.err);
  run_result_free(&r);
  char *draw[] = {KILN_DETECT_EXE, "draw", "--pred", pp, "--images", xp, "--out", png, NULL};
  run_ok(draw, "kiln-detect draw");
  cr_expect(access(png, R_OK) == 0);
  char *bad[] = {KILN_DETECT_EXE, "eval", "--pred", xp, "--boxes", bp, NULL};  // images, not a grid
  r = run_cmd(bad, 60);
  cr_expect(r.status == 2 && strstr(r.err, xp), "status %d: %s", r.status, r.err);
  run_result_free(&r);
  free(p.data);
  kiln_array_free(&y);
  rm_rf(dir);
  free(dir), free(data), free(pp), free(png), free(yp), free(bp), free(xp);
}

Test(yolo, rgb_png_and_drawn_boxes_read_back) {
  // One 4 x 4 image (red everywhere), scale 1, a class-1 box over pixels 1..2: orange outline.
  float img[3 * 16] = {0};
  for (int i = 0; i < 16; i++) img[i] = 1;
  kiln_det d = det(0, 1, 1, 1, 1, 3, 3);
  kiln_det_canvas c;
  cr_assert(kiln_draw_detections(img, 1, 4, 4, 1, &d, 1, &c));
  cr_assert(c.width == 8 && c.height == 8, "%d x %d", c.width, c.height);  // 2-pixel border
  char *dir = make_temp_dir(), *path = path_join(dir, "d.png"), err[256];
  cr_assert_eq(kiln_rgb_png(path, c.rgb, c.width, c.height, err, sizeof err), KILN_OK, "%s", err);
  png_image im = {.version = PNG_IMAGE_VERSION};
  cr_assert(png_image_begin_read_from_file(&im, path), "%s", im.message);
  im.format = PNG_FORMAT_RGB;
  uint8_t got[8 * 8 * 3];
  cr_assert(im.width == 8 && im.height == 8 && png_image_finish_read(&im, NULL, got, 0, NULL));
  for (int y = 0; y < 8; y++)
    for (int x = 0; x < 8; x++) {
      bool border = x < 2 || y < 2 || x >= 6 || y >= 6, box = x >= 3 && x <= 4 && y >= 3 && y <= 4;
      uint8_t want[3] = {border ? 0 : 255, box ? 140 : 0, 0};
      const uint8_t *g = got + (y * 8 + x) * 3;
      cr_expect(!memcmp(g, want, 3), "pixel (%d, %d): %d %d %d, want %d %d %d", x, y, g[0], g[1],
                g[2], want[0], want[1], want[2]);
    }
  cr_expect(kiln_rgb_png(path, NULL, 0, 0, err, sizeof err) != KILN_OK);
  free(c.rgb);
  rm_rf(dir);
  free(dir), free(path);
}

// ---- Bad models ----

static void expect_bad_model(const char *pred_shape, const char *attrs, const char *message) {
  char *dir = make_temp_dir(), *path = path_join(dir, "m.json"), *exe = path_join(dir, "m");
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(
      f,
      "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"m\",\n"
      " \"inputs\": [{\"name\": \"pred\", \"dtype\": \"f32\", \"shape\": %s},\n"
      "            {\"name\": \"target\", \"dtype\": \"f32\", \"shape\": [1, 2, 2, 8]}],\n"
      " \"outputs\": [{\"name\": \"loss\"}], \"params\": [],\n"
      " \"nodes\": [{\"op\": \"YoloLoss\", \"name\": \"yolo\", \"inputs\": [\"pred\", \"target\"], "
      "\"outputs\": [\"loss\"], \"attrs\": %s}]}\n",
      pred_shape, attrs);
  fclose(f);
  char *args[] = {KILN_EXE, "build", path, "-o", exe, NULL};
  run_result r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2, "%s %s: status %d", pred_shape, attrs, r.status);
  cr_expect(strstr(r.err, path) && strstr(r.err, "nodes[0] (yolo)") && strstr(r.err, message),
            "expected '%s' in: %s", message, r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(path), free(exe);
}

Test(yolo, bad_yolo_loss_nodes_are_named) {
  expect_bad_model("[1, 2, 2, 13]", "{\"boxes\": 3}", "pred's last dim 13 must be 5 * boxes (3)");
  expect_bad_model("[1, 2, 3, 13]", "{}", "inputs[1] (target): dim 2 is 2, pred's is 3");
  expect_bad_model("[1, 2, 2, 13]", "{\"boxes\": 0}", "attrs.boxes");
  expect_bad_model("[1, 2, 2, 13]", "{\"lambda_noobj\": -1}",
                   "attrs.lambda_coord and attrs.lambda_noobj");
  expect_bad_model("[2, 13]", "{}", "expected pred (N, SH, SW, 5B + C)");
}

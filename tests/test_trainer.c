// The generated trainer's tools against overfitting and underfitting (docs/training.md,
// "Overfitting and underfitting"):
//  - every augmentation and normalization against the numpy reference of
//    tools/goldens_augment.py on fixed seeds, and the spec parser's errors;
//  - early stopping on scripted validation losses; the diagnosis on synthetic curves;
//  - the learning-curve PNG, read back with libpng;
//  - trainers built by `kiln build --train`: augmentation is reproducible whatever the thread
//    timing, validation columns and the plot appear, bad data (non-finite samples, labels out of
//    range in --val, wrong shapes) stops with exit status 2 naming the file and sample, and a
//    diverging run keeps the last good checkpoint and the best one (--keep-best) intact.
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/augment.h"
#include "../runtime/curves.h"
#include "../runtime/plot.h"
#include "test_util.h"

TestSuite(trainer, .fini = check_leaks);

// ---- Augmentation against tools/goldens_augment.py ----

static void check_augment_case(char *line) {
  char *name = strtok(line, "|"), *spec = strtok(NULL, "|");
  char *seed = strtok(NULL, "|"), *step = strtok(NULL, "|"), *slot = strtok(NULL, "|\n");
  cr_assert(name && spec && seed && step && slot, "bad cases.txt line");
  char dir[512], path[600], err[256];
  snprintf(dir, sizeof dir, "%s/augment/%s", KILN_TEST_GOLDENS_DIR, name);
  snprintf(path, sizeof path, "%s/input.npy", dir);
  kiln_array in = read_npy_or_fail(path);
  snprintf(path, sizeof path, "%s/output.npy", dir);
  kiln_array want = read_npy_or_fail(path);
  kiln_augment a;
  kiln_image_shape s;
  cr_assert_eq(kiln_augment_parse(spec, &a, err, sizeof err), KILN_OK, "%s: %s", name, err);
  cr_assert_eq(kiln_augment_check(&a, in.rank, in.shape, &s, err, sizeof err), KILN_OK, "%s: %s",
               name, err);
  float *scratch = malloc(in.nbytes);
  kiln_augment_sample(&a, s, in.data, scratch, strtoull(seed, NULL, 10), strtoull(step, NULL, 10),
                      strtoull(slot, NULL, 10));
  kiln_normalize_sample(&a, s, in.data);
  char why[256];
  cr_expect(arrays_close(&in, &want, 1e-6, 1e-6, why, sizeof why), "%s (%s): %s", name, spec, why);
  free(scratch);
  kiln_array_free(&in);
  kiln_array_free(&want);
}

Test(trainer, augmentations_match_the_numpy_reference) {
  FILE *f = fopen(KILN_TEST_GOLDENS_DIR "/augment/cases.txt", "r");
  cr_assert(f, "no goldens: run /usr/bin/python3 tools/goldens_augment.py");
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f)) check_augment_case(line), n++;
  fclose(f);
  cr_expect_geq(n, 40, "only %d cases", n);
}

Test(trainer, augmentation_changes_with_the_step_and_the_sample) {
  kiln_augment a;
  char err[256];
  cr_assert_eq(kiln_augment_parse("gaussian_noise std=1", &a, err, sizeof err), KILN_OK);
  kiln_image_shape s = {1, 2, 2};
  float x[3][4] = {{0}}, tmp[4];
  kiln_augment_sample(&a, s, x[0], tmp, 1, 5, 7);
  kiln_augment_sample(&a, s, x[1], tmp, 1, 6, 7);
  kiln_augment_sample(&a, s, x[2], tmp, 1, 5, 8);
  cr_expect(memcmp(x[0], x[1], sizeof x[0]) != 0, "the same noise at two steps");
  cr_expect(memcmp(x[0], x[2], sizeof x[0]) != 0, "the same noise for two samples");
}

Test(trainer, bad_augment_specs_are_refused) {
  static const char *const bad[] = {"rotate angle=3",
                                    "random_crop padding=0",
                                    "random_crop padding=1.5",
                                    "hflip p=2",
                                    "gaussian_noise std=-1",
                                    "cutout",
                                    "cutout size=3 extra=1",
                                    "normalize mean=0.5",
                                    "normalize mean=0.5,0.5 std=1",
                                    "normalize mean=0.5 std=0",
                                    "translate max_pixels=x"};
  kiln_augment a;
  char err[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    cr_expect_eq(kiln_augment_parse(bad[i], &a, err, sizeof err), KILN_ERR_FORMAT, "accepted: %s",
                 bad[i]);
    cr_expect(strstr(err, "augment spec"), "%s: message: %s", bad[i], err);
  }
  cr_assert_eq(
      kiln_augment_parse("hflip p=0.5; normalize mean=0.1,0.2 std=1,2", &a, err, sizeof err),
      KILN_OK, "%s", err);
  int64_t one_channel[3] = {1, 8, 8}, flat[1] = {64};
  kiln_image_shape s;
  cr_expect_eq(kiln_augment_check(&a, 3, one_channel, &s, err, sizeof err), KILN_ERR_SHAPE);
  cr_expect(strstr(err, "2 means") && strstr(err, "1 channels"), "%s", err);
  cr_expect_eq(kiln_augment_check(&a, 1, flat, &s, err, sizeof err), KILN_ERR_SHAPE);
  cr_expect(strstr(err, "hflip") && strstr(err, "image"), "%s", err);
}

// ---- Early stopping and the diagnosis ----

Test(trainer, early_stopping_stops_at_the_right_epoch) {
  // lowest at epoch 6 (0.69); epochs 7, 8, 9 do not improve on it: patience 3 stops after 9
  const double val[] = {1.0, 0.8, 0.7, 0.72, 0.71, 0.69, 0.75, NAN, 0.69, 0.5};
  const kiln_es_decision want[] = {KILN_ES_IMPROVED, KILN_ES_IMPROVED, KILN_ES_IMPROVED,
                                   KILN_ES_WAIT,     KILN_ES_WAIT,     KILN_ES_IMPROVED,
                                   KILN_ES_WAIT,     KILN_ES_WAIT,     KILN_ES_STOP};
  kiln_early_stop es = kiln_early_stop_init(3);
  int stopped = 0;
  for (int e = 1; e <= 10 && !stopped; e++) {
    kiln_es_decision d = kiln_early_stop_update(&es, e, val[e - 1]);
    cr_expect_eq(d, want[e - 1], "epoch %d: decision %d, expected %d", e, d, want[e - 1]);
    if (d == KILN_ES_STOP) stopped = e;
  }
  cr_expect_eq(stopped, 9);
  cr_expect_eq(es.best_epoch, 6);
  cr_expect_float_eq(es.best, 0.69, 1e-12);
  kiln_early_stop never = kiln_early_stop_init(0);  // --keep-best alone: never stops
  for (int e = 1; e <= 10; e++) cr_expect_neq(kiln_early_stop_update(&never, e, 5.0), KILN_ES_STOP);
  kiln_early_stop one = kiln_early_stop_init(1);
  cr_expect_eq(kiln_early_stop_update(&one, 1, 1.0), KILN_ES_IMPROVED);
  cr_expect_eq(kiln_early_stop_update(&one, 2, 1.0), KILN_ES_STOP, "equal is no improvement");
}

Test(trainer, diagnosis_of_synthetic_curves) {
  char why[768];
  // overfitted: val falls to 0.40 at epoch 4 then rises to 0.55 while train keeps falling
  const double tr_o[] = {1.0, 0.6, 0.45, 0.35, 0.28, 0.22, 0.18, 0.15};
  const double va_o[] = {0.9, 0.6, 0.45, 0.40, 0.42, 0.46, 0.50, 0.55};
  kiln_diagnosis d = kiln_diagnose(tr_o, va_o, 8);
  kiln_diagnosis_explain(&d, why, sizeof why);
  cr_expect_eq(d.verdict, KILN_FIT_OVERFITTED, "%s: %s", kiln_fit_name(d.verdict), why);
  cr_expect_eq(d.best_epoch, 4);
  cr_expect(strstr(why, "0.4000 (epoch 4)") && strstr(why, "0.5500 (epoch 8, +38%)"), "%s", why);
  // underfitted: both flat near the start (XOR on a perceptron)
  const double tr_u[] = {0.30, 0.26, 0.255, 0.2505, 0.2502, 0.2501, 0.2500};
  const double va_u[] = {0.31, 0.27, 0.260, 0.2560, 0.2555, 0.2552, 0.2550};
  d = kiln_diagnose(tr_u, va_u, 7);
  kiln_diagnosis_explain(&d, why, sizeof why);
  cr_expect_eq(d.verdict, KILN_FIT_UNDERFITTED, "%s: %s", kiln_fit_name(d.verdict), why);
  cr_expect(strstr(why, "83% of the first epoch's 0.3000"), "%s", why);
  // fine: both falling
  const double tr_f[] = {1.0, 0.7, 0.5, 0.4, 0.35, 0.31};
  const double va_f[] = {0.9, 0.7, 0.55, 0.45, 0.41, 0.39};
  d = kiln_diagnose(tr_f, va_f, 6);
  cr_expect_eq(d.verdict, KILN_FIT_FINE, "%s", kiln_fit_name(d.verdict));
  // flat but low (converged): fine, not underfitted
  const double tr_c[] = {1.0, 0.1, 0.1, 0.1, 0.1, 0.1};
  const double va_c[] = {0.9, 0.12, 0.12, 0.12, 0.12, 0.12};
  cr_expect_eq(kiln_diagnose(tr_c, va_c, 6).verdict, KILN_FIT_FINE);
  // a val rise of under 5% is noise
  const double va_n[] = {0.9, 0.6, 0.45, 0.40, 0.41, 0.41, 0.415, 0.418};
  cr_expect_eq(kiln_diagnose(tr_o, va_n, 8).verdict, KILN_FIT_FINE);
  cr_expect_eq(kiln_diagnose(tr_o, va_o, 2).verdict, KILN_FIT_TOO_SHORT);
}

// ---- The PNG ----

static bool read_png(const char *path, png_image *img, uint8_t **rgb) {
  memset(img, 0, sizeof *img);
  img->version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(img, path)) return false;
  img->format = PNG_FORMAT_RGB;
  *rgb = malloc(PNG_IMAGE_SIZE(*img));
  return png_image_finish_read(img, NULL, *rgb, 0, NULL) != 0;
}

static int count_color(const uint8_t *rgb, size_t pixels, const uint8_t *c) {
  int n = 0;
  for (size_t i = 0; i < pixels; i++) n += memcmp(rgb + 3 * i, c, 3) == 0;
  return n;
}

Test(trainer, plot_is_a_png_of_the_right_size) {
  char *dir = make_temp_dir(), *path = path_join(dir, "curves.png");
  const double train[] = {1.2, 0.8, 0.6, 0.5, 0.45}, val[] = {1.1, 0.85, 0.7, 0.72, NAN};
  kiln_curve curves[2] = {{"train", train, 5, {31, 119, 180}}, {"val", val, 5, {230, 110, 10}}};
  kiln_panel panel = {"loss", curves, 2};
  char err[512];
  cr_assert_eq(kiln_plot_png(path, &panel, 1, 400, 300, err, sizeof err), KILN_OK, "%s", err);
  png_image img;
  uint8_t *rgb = NULL;
  cr_assert(read_png(path, &img, &rgb), "not a PNG libpng reads: %s", img.message);
  cr_expect_eq(img.width, 400);
  cr_expect_eq(img.height, 300);
  const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
  cr_expect_eq(memcmp(rgb, white, 3), 0, "the background is white");
  cr_expect_gt(count_color(rgb, 400 * 300, curves[0].rgb), 200, "the train curve is drawn");
  cr_expect_gt(count_color(rgb, 400 * 300, curves[1].rgb), 200, "the val curve is drawn");
  cr_expect_gt(count_color(rgb, 400 * 300, black), 500, "axes and labels are drawn");
  free(rgb);
  png_image_free(&img);
  cr_expect_neq(kiln_plot_png("/nonexistent/dir/x.png", &panel, 1, 400, 300, err, sizeof err),
                KILN_OK);
  cr_expect(strstr(err, "/nonexistent/dir/x.png"), "%s", err);
  rm_rf(dir);
  free(dir), free(path);
}

// ---- Trainers built by kiln build --train ----

// A tiny image classifier: x (8, 1, 4, 4) -> Flatten -> Gemm -> 3 classes, with augmentation.
static const char *const tiny_model =
    "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"tiny_img\",\n"
    " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [8, 1, 4, 4]}],\n"
    " \"outputs\": [{\"name\": \"z\"}],\n"
    " \"params\": [\n"
    "  {\"name\": \"w\", \"dtype\": \"f32\", \"shape\": [3, 16], \"role\": \"weight\",\n"
    "   \"init\": {\"kind\": \"uniform\", \"low\": -0.3, \"high\": 0.3, \"seed\": 1}},\n"
    "  {\"name\": \"b\", \"dtype\": \"f32\", \"shape\": [3], \"role\": \"weight\",\n"
    "   \"init\": {\"kind\": \"constant\", \"value\": 0}}],\n"
    " \"nodes\": [\n"
    "  {\"op\": \"Flatten\", \"name\": \"flat\", \"inputs\": [\"x\"], \"outputs\": [\"f\"]},\n"
    "  {\"op\": \"Gemm\", \"name\": \"fc\", \"inputs\": [\"f\", \"w\", \"b\"], \"outputs\": "
    "[\"z\"], \"attrs\": {\"transB\": 1}}],\n"
    " \"training\": {\"batch_size\": 8, \"seed\": 0, \"optimizer\": {\"kind\": \"sgd\", \"lr\": "
    "%s},\n"
    "  \"loss\": {\"kind\": \"cross_entropy\", \"output\": \"z\", \"target\": {\"name\": \"t\", "
    "\"dtype\": \"i64\"}}%s}}\n";

static const char *const tiny_augment =
    ",\n  \"augment\": [{\"kind\": \"random_crop\", \"padding\": 1}, {\"kind\": \"hflip\"}, "
    "{\"kind\": \"gaussian_noise\", \"std\": 0.1}, {\"kind\": \"cutout\", \"size\": 2}],\n"
    "  \"normalize\": {\"mean\": [0.5], \"std\": [0.25]}";

static char *write_model(const char *dir, const char *name, const char *lr, const char *extra) {
  char *path = path_join(dir, name);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(f, tiny_model, lr, extra);
  fclose(f);
  return path;
}

static void build(const char *model, const char *exe) {
  char *args[] = {KILN_EXE, "build", "--train", (char *)model, "-o", (char *)exe, NULL};
  run_result r = run_cmd(args, 600);
  cr_assert_eq(r.status, 0, "kiln build --train %s: %s", model, r.err);
  run_result_free(&r);
}

// n samples (1, 4, 4) in [0, 1] and labels i % classes; `bad` (>= 0) gets a NaN pixel.
static void write_images(const char *dir, const char *stem, int64_t n, int64_t classes, int64_t bad,
                         char *src, size_t size) {
  kiln_array x = {.dtype = KILN_RT_F32, .rank = 4, .shape = {n, 1, 4, 4}, .nbytes = (size_t)n * 64};
  kiln_array y = {.dtype = KILN_RT_I64, .rank = 1, .shape = {n}, .nbytes = (size_t)n * 8};
  x.data = kiln_aligned_alloc(x.nbytes);
  y.data = kiln_aligned_alloc(y.nbytes);
  for (int64_t i = 0; i < n * 16; i++)
    ((float *)x.data)[i] = (float)(0.5 + 0.5 * sin(0.37 * (double)i + (double)(i / 16 % 3)));
  for (int64_t i = 0; i < n; i++) ((int64_t *)y.data)[i] = i % classes;
  if (bad >= 0) ((float *)x.data)[bad * 16 + 5] = NAN;
  char xn[64], yn[64], err[256];
  snprintf(xn, sizeof xn, "%s_x.npy", stem);
  snprintf(yn, sizeof yn, "%s_y.npy", stem);
  char *xp = path_join(dir, xn), *yp = path_join(dir, yn);
  cr_assert_eq(kiln_npy_write(xp, &x, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_npy_write(yp, &y, err, sizeof err), KILN_OK, "%s", err);
  snprintf(src, size, "%s,%s", xp, yp);
  free(xp), free(yp);
  kiln_array_free(&x), kiln_array_free(&y);
}

static run_result run(char *exe, const char *const *args) {
  char *argv[24] = {exe};
  int n = 1;
  for (; args[n - 1] && n < 23; n++) argv[n] = (char *)args[n - 1];
  argv[n] = NULL;
  return run_cmd(argv, 300);
}

static char *last_line(char *out) {
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == '\n') out[--n] = 0;
  char *p = strrchr(out, '\n');
  return p ? p + 1 : out;
}

Test(trainer, augmented_training_is_reproducible_and_validated, .timeout = 900) {
  char *dir = make_temp_dir(), src[1200], test_src[1200];
  char *model = write_model(dir, "m.json", "0.1", tiny_augment), *exe = path_join(dir, "t");
  char *ck1 = path_join(dir, "a.safetensors"), *ck2 = path_join(dir, "b.safetensors");
  char *ck3 = path_join(dir, "c.safetensors"), *log = path_join(dir, "run.csv");
  char *png = path_join(dir, "run.png"), *best = path_join(dir, "a.best.safetensors");
  build(model, exe);
  write_images(dir, "train", 96, 3, -1, src, sizeof src);
  write_images(dir, "test", 16, 3, -1, test_src, sizeof test_src);
  const char *a1[] = {
      "--train",        src,    "--test", test_src, "--epochs",    "4",         "--save", ck1,
      "--val-fraction", "0.25", "--log",  log,      "--keep-best", "--threads", "1",      NULL};
  run_result r = run(exe, a1);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strncmp(last_line(r.out), "test_accuracy=", 14) == 0, "last line: %s", r.out);
  cr_expect(strstr(r.err, "val_loss=") && strstr(r.err, "val_accuracy=") &&
                strstr(r.err, "train_accuracy=") && strstr(r.err, "diagnosis: "),
            "%s", r.err);
  run_result_free(&r);
  // the same run on 2 OpenMP threads (the batch worker's timing differs): the same weights
  const char *a2[] = {"--train",   src,      "--test", test_src,         "--epochs",
                      "4",         "--save", ck2,      "--val-fraction", "0.25",
                      "--threads", "2",      NULL};
  r = run(exe, a2);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  cr_expect(files_equal(ck1, ck2), "augmented training is not reproducible");
  // another seed draws other augmentations (and another split and order)
  const char *a3[] = {"--train",        src,    "--epochs", "4", "--save", ck3,
                      "--val-fraction", "0.25", "--seed",   "9", NULL};
  r = run(exe, a3);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  cr_expect(!files_equal(ck1, ck3), "--seed changes nothing");
  // the log has the validation columns on each epoch's row; the plot is beside it
  FILE *f = fopen(log, "r");
  cr_assert(f);
  char line[512];
  int epochs = 0;
  cr_assert(fgets(line, sizeof line, f));
  cr_expect(strstr(line, "train_loss,train_accuracy,val_loss,val_accuracy"), "header: %s", line);
  while (fgets(line, sizeof line, f)) {
    long long step, epoch;
    double tl, ta, vl, va;
    if (sscanf(line, "%lld,%lld,,%*[^,],%*[^,],%lf,%lf,%lf,%lf", &step, &epoch, &tl, &ta, &vl,
               &va) == 6) {
      epochs++;
      cr_expect(isfinite(vl) && va >= 0 && va <= 1, "row: %s", line);
    }
  }
  fclose(f);
  cr_expect_eq(epochs, 4);
  png_image img;
  uint8_t *rgb = NULL;
  cr_expect(read_png(png, &img, &rgb), "no plot at %s", png);
  cr_expect_eq(img.width, 960);
  free(rgb);
  png_image_free(&img);
  cr_expect_eq(access(best, R_OK), 0, "--keep-best wrote no %s", best);
  rm_rf(dir);
  free(dir), free(model), free(exe), free(ck1), free(ck2), free(ck3), free(log), free(png),
      free(best);
}

Test(trainer, bad_data_stops_naming_file_and_sample, .timeout = 900) {
  char *dir = make_temp_dir(), src[1200], nan_src[1200], val4[1200];
  char *model = write_model(dir, "m.json", "0.1", ""), *exe = path_join(dir, "t");
  build(model, exe);
  write_images(dir, "ok", 32, 3, -1, src, sizeof src);
  write_images(dir, "nan", 32, 3, 13, nan_src, sizeof nan_src);
  write_images(dir, "val4", 16, 4, -1, val4, sizeof val4);
  const char *a1[] = {"--train", nan_src, NULL};
  run_result r = run(exe, a1);
  cr_expect_eq(r.status, 2, "NaN sample: exit %d", r.status);
  cr_expect(strstr(r.err, "nan_x.npy") && strstr(r.err, "sample 13 holds nan"), "%s", r.err);
  run_result_free(&r);
  const char *a2[] = {"--train", src, "--val", val4, NULL};  // label 3 of 3 classes
  r = run(exe, a2);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "val4_x.npy") && strstr(r.err, "label of sample 3 is 3"), "%s", r.err);
  run_result_free(&r);
  char wrong[1200];  // 16 values per sample but the labels as samples: 1 value
  snprintf(wrong, sizeof wrong, "%s", strchr(src, ',') + 1);
  snprintf(wrong + strlen(wrong), sizeof wrong - strlen(wrong), "%s", strchr(src, ','));
  const char *a3[] = {"--train", src, "--val", wrong, NULL};
  r = run(exe, a3);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "each sample has 1 values") && strstr(r.err, "takes 16"), "%s", r.err);
  run_result_free(&r);
  const char *bad_flags[][4] = {{"--val-fraction", "1.5", NULL},
                                {"--patience", "2", NULL},
                                {"--val", src, "--val-fraction", "0.5"},
                                {"--val-fraction", "0.01", NULL}};
  const char *why[] = {"in (0, 1)", "validation loss", "not both", "leaves 0 for validation"};
  for (int i = 0; i < 4; i++) {
    const char *a[] = {"--train",       src, bad_flags[i][0], bad_flags[i][1], bad_flags[i][2],
                       bad_flags[i][3], NULL};
    r = run(exe, a);
    cr_expect_eq(r.status, 2, "%s: exit %d", bad_flags[i][0], r.status);
    cr_expect(strstr(r.err, why[i]), "%s: %s", bad_flags[i][0], r.err);
    run_result_free(&r);
  }
  rm_rf(dir);
  free(dir), free(model), free(exe);
}

Test(trainer, diverging_run_keeps_the_last_good_and_best_checkpoints, .timeout = 900) {
  // lr 5e37: the first steps are finite, then the loss overflows (at step 5)
  char *dir = make_temp_dir(), src[1200];
  char *model = write_model(dir, "m.json", "5e37", ""), *exe = path_join(dir, "t");
  char *ck = path_join(dir, "ck.safetensors"), *best = path_join(dir, "ck.best.safetensors");
  build(model, exe);
  write_images(dir, "d", 16, 3, -1, src, sizeof src);  // one step per epoch, 8 held out
  const char *a[] = {"--train",        src,   "--epochs",    "20", "--save", ck,
                     "--val-fraction", "0.5", "--keep-best", NULL};
  run_result r = run(exe, a);
  cr_expect_eq(r.status, 2, "exit %d: %s", r.status, r.err);
  cr_expect(strstr(r.err, "the loss became") && strstr(r.err, "last good checkpoint is kept"), "%s",
            r.err);
  kiln_safetensors st;
  char err[256];
  cr_assert_eq(kiln_safetensors_read(ck, &st, err, sizeof err), KILN_OK, "%s", err);
  const kiln_st_entry *w = kiln_safetensors_find(&st, "w");
  cr_assert(w && w->nbytes == 3 * 16 * 4);
  for (int i = 0; i < 48; i++)
    cr_expect(isfinite(((const float *)w->data)[i]), "the kept checkpoint holds %g",
              ((const float *)w->data)[i]);
  kiln_safetensors_free(&st);
  cr_assert_eq(kiln_safetensors_read(best, &st, err, sizeof err), KILN_OK, "no best: %s", err);
  w = kiln_safetensors_find(&st, "w");
  cr_assert(w && w->nbytes == 3 * 16 * 4);
  for (int i = 0; i < 48; i++) cr_expect(isfinite(((const float *)w->data)[i]));
  kiln_safetensors_free(&st);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(model), free(exe), free(ck), free(best);
}

// --bench-steps N times the training step on one batch: one `median_ms=` line (a positive
// number), nothing trained to disk; a count below 1 is refused.
Test(trainer, bench_steps_prints_the_median_step_time, .timeout = 900) {
  char *dir = make_temp_dir(), src[1200];
  char *model = write_model(dir, "m.json", "0.1", ""), *exe = path_join(dir, "t");
  char *ck = path_join(dir, "ck.safetensors");
  build(model, exe);
  write_images(dir, "d", 16, 3, -1, src, sizeof src);
  const char *a[] = {"--train", src, "--bench-steps", "5", "--save", ck, NULL};
  run_result r = run(exe, a);
  cr_assert_eq(r.status, 0, "%s", r.err);
  double ms = -1;
  cr_expect(sscanf(last_line(r.out), "median_ms=%lf", &ms) == 1 && ms > 0 && isfinite(ms),
            "expected median_ms=<positive>, got: %s", r.out);
  cr_expect(access(ck, F_OK) != 0, "--bench-steps wrote a checkpoint");
  run_result_free(&r);
  const char *zero[] = {"--train", src, "--bench-steps", "0", NULL};
  r = run(exe, zero);
  cr_expect_eq(r.status, 2, "--bench-steps 0: exit %d", r.status);
  cr_expect(strstr(r.err, "--bench-steps expects an integer >= 1"), "%s", r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(model), free(exe), free(ck);
}

// The generative training recipes (docs/training.md §8, docs/models.md "Training recipes"):
//  - step parity with PyTorch for the autoencoder, VAE, CVAE, beta-VAE and tilted VAE: the goldens
//    of tools/goldens_recipes.py (tiny variants of the samples' graphs, the same initial weights,
//    the same seeded reparameterization noise, 5 Adam steps) through the reference interpreter:
//    the 5 losses and the params after the last step;
//  - NormalNoise against the golden script's independent numpy copy of the stream, exactly,
//    through the interpreter and through the generated code of a one-node model;
//  - trainers built by `kiln build --train` from the same models: their first 5 steps match
//    PyTorch's (losses and checkpointed params; the goldens feed the batch in the trainer's
//    shuffled order), the loss falls over a short run on unlabeled data, --sample writes the
//    pictures;
//  - the image-grid writer: a PNG read back with libpng, pixel for pixel;
//  - errors of the `loss.terms` / `noise` sections, naming the JSON path.
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
#include "../runtime/plot.h"
#include "test_util.h"

TestSuite(recipes, .fini = check_leaks);

// Within f32 noise: PyTorch and Kiln sum in different orders; 5 Adam steps compound it.
static const double LOSS_RTOL = 5e-5, LOSS_ATOL = 1e-5;
static const double PARAM_RTOL = 2e-4, PARAM_ATOL = 1e-5;

static const char *const cases[] = {"autoencoder", "vae", "cvae", "beta_vae", "tilted_vae"};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static char *golden(const char *c, const char *file) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR "/recipes", c);
  char *p = path_join(dir, file);
  free(dir);
  return p;
}

static kiln_graph *training_graph(const char *model, kiln_diag *d) {
  kiln_training tr;
  kiln_load_options o = {.training = &tr};
  kiln_diag_init(d, model);
  kiln_graph *g = kiln_load_model_ex(model, &o, d);
  cr_assert(g && kiln_build_training_graph(g, &tr, d), "%s: no training graph", model);
  return g;
}

static void check_final_params(const char *c, const kiln_graph *g) {
  char *path = golden(c, "final.safetensors"), err[512];
  kiln_safetensors want;
  cr_assert_eq(kiln_safetensors_read(path, &want, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *e = &want.entries[i];
    int t = kiln_graph_find_tensor(g, e->name);
    cr_assert(t >= 0 && g->tensors[t].kind == KILN_TENSOR_STATE, "%s: %s is not trained", c,
              e->name);
    kiln_array w = {
        .dtype = e->dtype, .rank = e->rank, .nbytes = e->nbytes, .data = (void *)e->data};
    memcpy(w.shape, e->shape, sizeof(int64_t) * (size_t)e->rank);
    kiln_array got = w;
    got.data = g->tensors[t].data;
    char why[512];
    cr_expect(arrays_close(&got, &w, PARAM_ATOL, PARAM_RTOL, why, sizeof why), "%s: %s: %s", c,
              e->name, why);
  }
  kiln_safetensors_free(&want);
  free(path);
}

// 5 steps through the interpreter: inputs x (and cond for the CVAE); no label, no eps.
static void parity(const char *c) {
  char *model = golden(c, "model.json"), *xp = golden(c, "x.npy"), *cp = golden(c, "cond.npy");
  char *lp = golden(c, "losses.npy");
  kiln_diag d;
  kiln_graph *g = training_graph(model, &d);
  bool cond = access(cp, R_OK) == 0;
  cr_assert_eq(g->n_inputs, cond ? 2 : 1, "%s: eps must not be an input of the training graph", c);
  kiln_array in[2] = {read_npy_or_fail(xp)};
  if (cond) in[1] = read_npy_or_fail(cp);
  kiln_array losses = read_npy_or_fail(lp);
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  for (int s = 0; s < 5; s++) {
    cr_assert(kiln_interp_run(g, in, out, &d), "%s: step %d fails", c, s);
    double got = kiln_element_get(out[0].data, out[0].dtype, 0);
    double want = kiln_element_get(losses.data, losses.dtype, s);
    cr_expect(fabs(got - want) <= LOSS_ATOL + LOSS_RTOL * fabs(want),
              "%s: step %d: loss %.9g, PyTorch %.9g", c, s, got, want);
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  check_final_params(c, g);
  free(out);
  for (int i = 0; i < (cond ? 2 : 1); i++) kiln_array_free(&in[i]);
  kiln_array_free(&losses);
  kiln_graph_free(g);
  free(model), free(xp), free(cp), free(lp);
}

Test(recipes, parity_with_pytorch) {
  for (int i = 0; i < N_CASES; i++) parity(cases[i]);
}

// ---- NormalNoise: interpreter and generated code against numpy, exactly ----

static void check_noise_output(const char *what, const char *got_path) {
  char *want_path = golden("noise", "y.npy"), why[512];
  kiln_array got = read_npy_or_fail(got_path), want = read_npy_or_fail(want_path);
  cr_expect(arrays_close(&got, &want, 0, 0, why, sizeof why), "%s: %s", what, why);
  kiln_array_free(&got), kiln_array_free(&want);
  free(want_path);
}

Test(recipes, normal_noise_matches_numpy_exactly) {
  char *model = golden("noise", "model.json"), *seed = golden("noise", "seed.npy");
  char *step = golden("noise", "step.npy"), *dir = make_temp_dir(), in1[600], in2[600], out[600];
  char *exe = path_join(dir, "noise"), *y = path_join(dir, "y.npy");
  snprintf(in1, sizeof in1, "seed=%s", seed);
  snprintf(in2, sizeof in2, "step=%s", step);
  snprintf(out, sizeof out, "y=%s", y);
  char *interp[] = {KILN_EXE, "run", model, "--input", in1, "--input", in2, "--output", out, NULL};
  run_result r = run_cmd(interp, 120);
  cr_assert_eq(r.status, 0, "kiln run: %s", r.err);
  run_result_free(&r);
  check_noise_output("interpreter", y);
  char *build[] = {KILN_EXE, "build", model, "-o", exe, NULL};
  r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build: %s", r.err);
  run_result_free(&r);
  char *run[] = {exe, "--input", in1, "--input", in2, "--output", out, NULL};
  r = run_cmd(run, 120);
  cr_assert_eq(r.status, 0, "the binary: %s", r.err);
  run_result_free(&r);
  check_noise_output("generated code", y);
  rm_rf(dir);
  free(model), free(seed), free(step), free(dir), free(exe), free(y);
}

// ---- Trainers: the loss falls; pictures ----

// x (64, 12) uniform in [0, 1) and class labels in [0, 3), written with a fixed LCG.
static void write_data(const char *dir, char *src, size_t n) {
  float x[64 * 12];
  int64_t y[64];
  uint64_t state = 12345;
  for (int i = 0; i < 64 * 12; i++) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    x[i] = (float)((state >> 40) & 0xffff) / 65536.0f;
  }
  for (int i = 0; i < 64; i++) y[i] = i % 3;
  char *xp = path_join(dir, "x.npy"), *yp = path_join(dir, "y.npy"), err[256];
  kiln_array xa = {
      .dtype = KILN_RT_F32, .rank = 2, .shape = {64, 12}, .data = x, .nbytes = sizeof x};
  kiln_array ya = {.dtype = KILN_RT_I64, .rank = 1, .shape = {64}, .data = y, .nbytes = sizeof y};
  cr_assert_eq(kiln_npy_write(xp, &xa, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_npy_write(yp, &ya, err, sizeof err), KILN_OK, "%s", err);
  snprintf(src, n, "%s,%s", xp, yp);
  free(xp), free(yp);
}

// Checks a trainer's checkpoint against the golden's trainer_final.safetensors.
static void check_checkpoint(const char *c, const char *ck) {
  char *path = golden(c, "trainer_final.safetensors"), err[512];
  kiln_safetensors want, got;
  cr_assert_eq(kiln_safetensors_read(path, &want, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_safetensors_read(ck, &got, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *w = &want.entries[i], *g = kiln_safetensors_find(&got, w->name);
    cr_assert(g && g->nbytes == w->nbytes, "%s: no %s in the checkpoint", c, w->name);
    kiln_array wa = {
        .dtype = w->dtype, .rank = w->rank, .nbytes = w->nbytes, .data = (void *)w->data};
    memcpy(wa.shape, w->shape, sizeof(int64_t) * (size_t)w->rank);
    kiln_array ga = wa;
    ga.data = (void *)g->data;
    char why[512];
    cr_expect(arrays_close(&ga, &wa, PARAM_ATOL, PARAM_RTOL, why, sizeof why), "%s: %s: %s", c,
              w->name, why);
  }
  kiln_safetensors_free(&want), kiln_safetensors_free(&got);
  free(path);
}

// The generated trainer's first 5 steps against PyTorch's in the trainer's order (one batch an
// epoch, rows shuffled by the trainer's seeded permutation; the goldens recompute it).
static void trainer_parity(const char *c, const char *exe) {
  char *xp = golden(c, "x.npy"), *yp = golden(c, "labels.npy"),
       *lp = golden(c, "trainer_losses.npy");
  char src[1300], ck[700], log[700];
  snprintf(src, sizeof src, "%s,%s", xp, yp);
  snprintf(ck, sizeof ck, "%s.parity.safetensors", exe);
  snprintf(log, sizeof log, "%s.parity.csv", exe);
  char *run[] = {(char *)exe, "--train", src, "--epochs", "5", "--save", ck, "--log", log, NULL};
  run_result r = run_cmd(run, 300);
  cr_assert_eq(r.status, 0, "%s: the trainer fails: %s", c, r.err);
  run_result_free(&r);
  kiln_array want = read_npy_or_fail(lp);
  for (int s = 0; s < 5; s++) {
    double got = mean_logged_loss(log, s, s + 1), w = kiln_element_get(want.data, want.dtype, s);
    cr_expect(fabs(got - w) <= LOSS_ATOL + LOSS_RTOL * fabs(w),
              "%s: trainer step %d: loss %.9g, PyTorch %.9g", c, s, got, w);
  }
  check_checkpoint(c, ck);
  kiln_array_free(&want);
  free(xp), free(yp), free(lp);
}

static void train_recipe(const char *c, const char *dir, const char *src) {
  char *model = golden(c, "model.json"), *exe = path_join(dir, c), log[700], sample[700];
  snprintf(log, sizeof log, "%s.csv", exe);
  snprintf(sample, sizeof sample, "%s.pic", exe);
  char *build[] = {KILN_EXE, "build", "--train", model, "-o", exe, NULL};
  run_result r = run_cmd(build, 600);
  cr_assert_eq(r.status, 0, "%s: kiln build --train: %s", c, r.err);
  run_result_free(&r);
  trainer_parity(c, exe);
  char *run[] = {exe,  "--train", (char *)src, "--test",   (char *)src, "--epochs",
                 "40", "--log",   log,         "--sample", sample,      NULL};
  r = run_cmd(run, 300);
  cr_assert_eq(r.status, 0, "%s: the trainer fails: %s", c, r.err);
  cr_expect(strstr(r.out, "test_loss=") && !strstr(r.out, "accuracy"), "%s: %s", c, r.out);
  run_result_free(&r);
  double first = mean_logged_loss(log, 0, 10), last = mean_logged_loss(log, 30, 40);
  cr_expect(last < first - 0.01 * fabs(first),
            "%s: loss %g over the first 10 steps, %g over "
            "the last 10",
            c, first, last);
  char png[720];
  snprintf(png, sizeof png, "%s.recon.png", sample);
  cr_expect(access(png, R_OK) == 0, "%s: no %s", c, png);
  free(model), free(exe);
}

Test(recipes, trainers_match_pytorch_loss_falls_pictures_written, .timeout = 600) {
  char *dir = make_temp_dir(), src[600];
  write_data(dir, src, sizeof src);
  for (int i = 0; i < N_CASES; i++) train_recipe(cases[i], dir, src);
  rm_rf(dir);
  free(dir);
}

// ---- The image-grid writer ----

Test(recipes, image_grid_png_reads_back) {
  // Two 2x3 images, 2 to a row, 1-pixel border: a 9 x 4 picture.
  const float px[12] = {0, 0.5f, 1, -1, 2, 0.25f, 1, 1, 1, 0, 0, 0.1f};
  kiln_image_grid g = {.pixels = px, .n = 2, .h = 2, .w = 3, .cols = 2, .pad = 1, .lo = 0, .hi = 1};
  const uint8_t want[4][9] = {{0, 0, 0, 0, 0, 0, 0, 0, 0},
                              {0, 0, 128, 255, 0, 255, 255, 255, 0},
                              {0, 0, 255, 64, 0, 0, 0, 26, 0},
                              {0, 0, 0, 0, 0, 0, 0, 0, 0}};
  char *dir = make_temp_dir(), *path = path_join(dir, "grid.png"), err[256];
  cr_assert_eq(kiln_image_grid_png(path, &g, err, sizeof err), KILN_OK, "%s", err);
  png_image img = {.version = PNG_IMAGE_VERSION};
  cr_assert(png_image_begin_read_from_file(&img, path), "%s", img.message);
  cr_assert_eq(img.width, 9);
  cr_assert_eq(img.height, 4);
  img.format = PNG_FORMAT_GRAY;
  uint8_t got[36];
  cr_assert(png_image_finish_read(&img, NULL, got, 0, NULL), "%s", img.message);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 9; x++)
      cr_expect_eq(got[y * 9 + x], want[y][x], "pixel (%d, %d): %d, want %d", x, y, got[y * 9 + x],
                   want[y][x]);
  cr_expect(kiln_image_grid_png(path, &(kiln_image_grid){.n = 0}, err, sizeof err) != KILN_OK);
  rm_rf(dir);
  free(dir), free(path);
}

// ---- Errors ----

static void expect_error(const char *training, const char *message) {
  char *dir = make_temp_dir(), *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  fprintf(f,
          "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"m\",\n"
          " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, 4]},\n"
          "            {\"name\": \"eps\", \"dtype\": \"f32\", \"shape\": [1, 4]}],\n"
          " \"outputs\": [{\"name\": \"y\"}],\n"
          " \"params\": [{\"name\": \"w\", \"dtype\": \"f32\", \"shape\": [4, 4], \"init\": "
          "{\"kind\": \"uniform\", \"low\": -1, \"high\": 1, \"seed\": 1}}],\n"
          " \"nodes\": [{\"op\": \"MatMul\", \"name\": \"y\", \"inputs\": [\"x\", \"w\"], "
          "\"outputs\": [\"y\"]}],\n"
          " \"training\": %s}\n",
          training);
  fclose(f);
  char *args[] = {KILN_EXE, "build", "--train", path, "-o", dir, NULL};
  run_result r = run_cmd(args, 120);
  cr_expect_eq(r.status, 2, "%s: status %d", training, r.status);
  cr_expect(strstr(r.err, message), "expected '%s' in: %s", message, r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(path);
}

Test(recipes, bad_terms_and_noise_are_named) {
  const char *opt = "\"optimizer\": {\"kind\": \"sgd\", \"lr\": 0.1}, \"batch_size\": 2";
  char buf[600];
  snprintf(buf, sizeof buf,
           "{%s, \"loss\": {\"terms\": [{\"kind\": \"tensor\", \"output\": \"y\", \"target\": "
           "{\"input\": \"x\"}}]}}",
           opt);
  expect_error(buf, "training.loss.terms[0].target: error: a \"tensor\" term has no target");
  snprintf(buf, sizeof buf,
           "{%s, \"loss\": {\"kind\": \"mse\", \"output\": \"y\", \"target\": {\"input\": \"w\"}}}",
           opt);
  expect_error(buf, "training.loss.target.input: error: 'w' is not an input of the model");
  snprintf(buf, sizeof buf,
           "{%s, \"loss\": {\"kind\": \"mse\", \"output\": \"y\", \"target\": {\"input\": \"x\"}}, "
           "\"noise\": [\"w\"]}",
           opt);
  expect_error(buf, "training.noise[0]: error: expected the name of a float model input");
  snprintf(buf, sizeof buf, "{%s, \"loss\": {\"terms\": []}}", opt);
  expect_error(buf, "training.loss.terms: error: expected an array of 1 to 64 objects");
  snprintf(buf, sizeof buf,
           "{%s, \"loss\": {\"terms\": [{\"kind\": \"mse\", \"output\": \"y\", \"target\": "
           "{\"input\": \"x\"}, \"weight\": \"big\"}]}}",
           opt);
  expect_error(buf, "training.loss.terms[0].weight: error: expected a number >= 0");
}

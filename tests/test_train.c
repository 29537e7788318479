// Training end to end (docs/training.md):
//  - step parity with PyTorch: the goldens of tools/make_train_goldens.py (same initial weights,
//    same batch, 5 steps) against the reference interpreter and against trainers built by
//    `kiln build --train` (losses of every step and the params after the last);
//  - resuming from a checkpoint gives the same checkpoint, bit for bit, as an uninterrupted run;
//  - the trainer's error paths: sample shape, labels out of range, a loss that stops being finite
//    (the last good checkpoint is kept), bad flags;
//  - the demos: the XOR MLP learns XOR, a single-layer perceptron cannot, LeNet-5's loss drops on
//    Fashion-MNIST.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "test_util.h"

#ifndef KILN_SANITIZE
#define KILN_SANITIZE "none"
#endif

TestSuite(train, .fini = check_leaks);

// Parity within f32 noise: PyTorch and Kiln sum in different orders; 5 steps compound it.
static const double LOSS_RTOL = 2e-5, LOSS_ATOL = 1e-6;
static const double PARAM_RTOL = 1e-4, PARAM_ATOL = 2e-6;

static char *golden(const char *c, const char *file) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR "/train", c);
  char *p = path_join(dir, file);
  free(dir);
  return p;
}

static kiln_array array_of(const kiln_st_entry *e) {
  kiln_array a = {.dtype = e->dtype, .rank = e->rank, .nbytes = e->nbytes};
  memcpy(a.shape, e->shape, sizeof(int64_t) * (size_t)e->rank);
  a.data = (void *)e->data;
  return a;
}

// Every trainable param of the golden's final.safetensors against `got` (a checkpoint or the
// graph's STATE tensors, looked up by name).
typedef const void *(*lookup_fn)(void *ctx, const char *name, size_t bytes);

static void check_params(const char *c, lookup_fn lookup, void *ctx) {
  char *path = golden(c, "final.safetensors"), err[512];
  kiln_safetensors want;
  cr_assert_eq(kiln_safetensors_read(path, &want, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    kiln_array w = array_of(&want.entries[i]), g = w;
    g.data = (void *)lookup(ctx, want.entries[i].name, w.nbytes);
    cr_assert(g.data, "%s: no param %s", c, want.entries[i].name);
    char why[512];
    cr_expect(arrays_close(&g, &w, PARAM_ATOL, PARAM_RTOL, why, sizeof why), "%s: %s: %s", c,
              want.entries[i].name, why);
  }
  kiln_safetensors_free(&want);
  free(path);
}

static void check_loss(const char *c, int step, double got, double want) {
  cr_expect(fabs(got - want) <= LOSS_ATOL + LOSS_RTOL * fabs(want),
            "%s: step %d: loss %.9g, PyTorch %.9g", c, step, got, want);
}

// ---- Parity through the interpreter ----

static const void *graph_state(void *ctx, const char *name, size_t bytes) {
  const kiln_graph *g = ctx;
  int t = kiln_graph_find_tensor(g, name);
  if (t < 0 || g->tensors[t].kind != KILN_TENSOR_STATE) return NULL;
  return (size_t)kiln_shape_numel(&g->tensors[t].shape) * kiln_dtype_size(g->tensors[t].dtype) ==
                 bytes
             ? g->tensors[t].data
             : NULL;
}

static void parity_interpreter(const char *c) {
  char *model = golden(c, "model.json"), *xp = golden(c, "x.npy"), *yp = golden(c, "y.npy");
  char *lp = golden(c, "losses.npy");
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_training tr;
  kiln_load_options o = {.training = &tr};
  kiln_graph *g = kiln_load_model_ex(model, &o, &d);
  cr_assert(g && kiln_build_training_graph(g, &tr, &d), "%s: no training graph", c);
  // The model's inputs in order: x, x2 (two-input cases), then the label.
  char *x2p = golden(c, "x2.npy");
  bool two = access(x2p, R_OK) == 0;
  kiln_array in[3] = {read_npy_or_fail(xp), two ? read_npy_or_fail(x2p) : read_npy_or_fail(yp)};
  if (two) in[2] = read_npy_or_fail(yp);
  free(x2p);
  kiln_array losses = read_npy_or_fail(lp);
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  for (int s = 0; s < 5; s++) {
    cr_assert(kiln_interp_run(g, in, out, &d), "%s: step %d fails", c, s);
    check_loss(c, s, kiln_element_get(out[0].data, out[0].dtype, 0),
               kiln_element_get(losses.data, losses.dtype, s));
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  check_params(c, graph_state, g);
  free(out);
  for (int i = 0; i < (two ? 3 : 2); i++) kiln_array_free(&in[i]);
  kiln_array_free(&losses);
  kiln_graph_free(g);
  free(model), free(xp), free(yp), free(lp);
}

static char **read_cases(int *n) {
  char *path = path_join(KILN_TEST_GOLDENS_DIR "/train", "cases.txt"), line[256];
  FILE *f = fopen(path, "r");
  cr_assert(f, "cannot open %s", path);
  char **cases = calloc(64, sizeof(char *));
  *n = 0;
  while (fgets(line, sizeof line, f) && *n < 64) {
    line[strcspn(line, "\n")] = 0;
    if (line[0] && line[0] != '#') cases[(*n)++] = strdup(line);
  }
  fclose(f);
  free(path);
  return cases;
}

static void free_cases(char **cases, int n) {
  for (int i = 0; i < n; i++) free(cases[i]);
  free(cases);
}

Test(train, parity_with_pytorch_interpreter) {
  int n;
  char **cases = read_cases(&n);
  cr_assert(n >= 10, "expected the golden cases");
  for (int i = 0; i < n; i++) parity_interpreter(cases[i]);
  free_cases(cases, n);
}

// ---- Parity through generated trainers ----

// backend: "c" or "llvm" (the LLVM backend's kernels, linked with the C trainer glue).
static void build_trainer_with(const char *model, const char *exe, const char *backend) {
  char *args[] = {KILN_EXE,    "build",     "--train",       (char *)model, "-o",
                  (char *)exe, "--backend", (char *)backend, NULL};
  run_result r = run_cmd(args, 600);
  cr_assert_eq(r.status, 0, "kiln build --train --backend %s %s: %s", backend, model, r.err);
  run_result_free(&r);
}

static void build_trainer(const char *model, const char *exe) {
  build_trainer_with(model, exe, "c");
}

static const void *checkpoint_entry(void *ctx, const char *name, size_t bytes) {
  const kiln_st_entry *e = kiln_safetensors_find(ctx, name);
  return e && e->nbytes == bytes ? e->data : NULL;
}

// Reads the `loss` column of a trainer's --log (per-step rows only).
static int read_log_losses(const char *path, double *losses, int max) {
  FILE *f = fopen(path, "r");
  cr_assert(f, "no log %s", path);
  char line[256];
  int n = 0;
  while (fgets(line, sizeof line, f) && n < max) {
    long long step, epoch;
    double loss;
    if (sscanf(line, "%lld,%lld,%lf", &step, &epoch, &loss) == 3) losses[n++] = loss;
  }
  fclose(f);
  return n;
}

// The dataset is the golden batch: one step per epoch (the trainer shuffles the rows, which
// only changes the order of the sums), 5 epochs.
static void parity_binary(const char *c, const char *dir, const char *backend) {
  char *model = golden(c, "model.json"), *xp = golden(c, "x.npy"), *yp = golden(c, "y.npy");
  char *lp = golden(c, "losses.npy"), *exe = path_join(dir, c), src[1800], ck[600], log[600];
  char *x2 = golden(c, "x2.npy");  // a second model input (two_input_*): the trainer's E1
  if (access(x2, R_OK) == 0)
    snprintf(src, sizeof src, "%s,%s,%s", xp, yp, x2);
  else
    snprintf(src, sizeof src, "%s,%s", xp, yp);
  free(x2);
  snprintf(ck, sizeof ck, "%s.ck.safetensors", exe);
  snprintf(log, sizeof log, "%s.log.csv", exe);
  build_trainer_with(model, exe, backend);
  char *args[] = {exe, "--train", src, "--epochs", "5", "--save", ck, "--log", log, NULL};
  run_result r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "%s: the trainer fails: %s", c, r.err);
  run_result_free(&r);
  double got[8];
  kiln_array want = read_npy_or_fail(lp);
  cr_assert_eq(read_log_losses(log, got, 8), 5, "%s: expected 5 logged steps", c);
  for (int s = 0; s < 5; s++) check_loss(c, s, got[s], kiln_element_get(want.data, want.dtype, s));
  kiln_safetensors st;
  char err[512];
  cr_assert_eq(kiln_safetensors_read(ck, &st, err, sizeof err), KILN_OK, "%s", err);
  check_params(c, checkpoint_entry, &st);
  kiln_safetensors_free(&st);
  kiln_array_free(&want);
  free(model), free(xp), free(yp), free(lp), free(exe);
}

static void parity_binaries(const char *backend) {
  int n;
  char **cases = read_cases(&n);
  char *dir = make_temp_dir();
  for (int i = 0; i < n; i++)
    // arith: its per-row param `d` does not survive shuffling
    if (strncmp(cases[i], "arith", 5) != 0) parity_binary(cases[i], dir, backend);
  rm_rf(dir);
  free(dir);
  free_cases(cases, n);
}

Test(train, parity_with_pytorch_generated_code, .timeout = 900) { parity_binaries("c"); }

// The same goldens through the LLVM backend (issue: training-step parity of both backends). Not in
// the sanitizer build: LLVM's code is not instrumented (the op goldens still drive the sanitized
// compiler through the LLVM path there).
Test(train, parity_with_pytorch_llvm_backend, .timeout = 900) {
  if (strcmp(KILN_SANITIZE, "none") != 0)
    cr_skip_test("sanitizer build: LLVM code is not instrumented");
  parity_binaries("llvm");
}

// ---- Resume, error paths ----

// x (n, 4) f32 and y (n, 3) f32 (or i64 class labels when labels > 0) written to dir.
static void write_data(const char *dir, int64_t n, int64_t labels, double scale, char *src,
                       size_t size) {
  kiln_array x = {.dtype = KILN_RT_F32, .rank = 2, .shape = {n, 4}, .nbytes = (size_t)n * 16};
  kiln_array y =
      labels ? (kiln_array){.dtype = KILN_RT_I64, .rank = 1, .shape = {n}, .nbytes = (size_t)n * 8}
             : (kiln_array){
                   .dtype = KILN_RT_F32, .rank = 2, .shape = {n, 3}, .nbytes = (size_t)n * 12};
  x.data = kiln_aligned_alloc(x.nbytes);
  y.data = kiln_aligned_alloc(y.nbytes);
  for (int64_t i = 0; i < kiln_array_numel(&x); i++)
    ((float *)x.data)[i] = (float)(scale * sin(0.7 * (double)i + 0.3));
  for (int64_t i = 0; i < kiln_array_numel(&y); i++)
    kiln_element_set(y.data, y.dtype, i, labels ? (double)(i % labels) : cos(1.3 * (double)i));
  char *xp = path_join(dir, "x.npy"), *yp = path_join(dir, "y.npy"), err[256];
  cr_assert_eq(kiln_npy_write(xp, &x, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_npy_write(yp, &y, err, sizeof err), KILN_OK, "%s", err);
  snprintf(src, size, "%s,%s", xp, yp);
  free(xp), free(yp);
  kiln_array_free(&x), kiln_array_free(&y);
}

static run_result trainer(char *exe, const char *a1, const char *a2, const char *a3, const char *a4,
                          const char *a5, const char *a6, const char *a7, const char *a8) {
  char *args[] = {exe,        (char *)a1, (char *)a2, (char *)a3, (char *)a4,
                  (char *)a5, (char *)a6, (char *)a7, (char *)a8, NULL};
  return run_cmd(args, 300);
}

Test(train, resume_is_bit_identical, .timeout = 600) {
  char *dir = make_temp_dir(), src[1200];
  char *exe = path_join(dir, "t"), *full = path_join(dir, "full.safetensors");
  char *part = path_join(dir, "part.safetensors"), *resumed = path_join(dir, "resumed.safetensors");
  build_trainer(KILN_TEST_GOLDENS_DIR "/train/mlp_mse_sgd_nesterov_wd/model.json", exe);
  write_data(dir, 40, 0, 1.0, src, sizeof src);  // 5 batches of 8 per epoch
  run_result r = trainer(exe, "--train", src, "--epochs", "3", "--save", full, "--seed", "7");
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", src, "--epochs", "3", "--save", part, "--max-steps", "7");
  cr_assert_eq(r.status, 0, "%s", r.err);  // stops mid-epoch 2 (without --seed 7: see below)
  run_result_free(&r);
  // The partial run used the default seed: resuming must use the same one to match a run with
  // it, so compare against a fresh full run with the default seed too.
  char *full0 = path_join(dir, "full0.safetensors");
  r = trainer(exe, "--train", src, "--epochs", "3", "--save", full0, NULL, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", src, "--epochs", "3", "--save", resumed, "--resume", part);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  cr_expect(files_equal(full0, resumed), "resumed checkpoint differs from the uninterrupted run");
  cr_expect(!files_equal(full, full0), "--seed should change the shuffling (and the result)");
  rm_rf(dir);
  free(dir), free(exe), free(full), free(part), free(resumed), free(full0);
}

Test(train, bad_data_stops_with_a_clear_message, .timeout = 600) {
  char *dir = make_temp_dir(), src[1200], *exe = path_join(dir, "t");
  char *ck = path_join(dir, "ck.safetensors");
  build_trainer(KILN_TEST_GOLDENS_DIR "/train/mlp_ce_adam_l1_l2/model.json", exe);
  // labels 0..3 for a 3-class model: sample 3 has label 3
  write_data(dir, 16, 4, 1.0, src, sizeof src);
  run_result r = trainer(exe, "--train", src, NULL, NULL, NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2, "labels out of range: exit %d", r.status);
  cr_expect(strstr(r.err, "label of sample 3 is 3") && strstr(r.err, "[0, 3)"), "got: %s", r.err);
  run_result_free(&r);
  // samples of the wrong size: the golden's y (8,) of labels as samples
  char wrong[1200];
  char *yp = golden("mlp_ce_adam_l1_l2", "y.npy");
  snprintf(wrong, sizeof wrong, "%s,%s", yp, yp);
  r = trainer(exe, "--train", wrong, NULL, NULL, NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "each sample has 1 values") && strstr(r.err, "takes 4"), "got: %s",
            r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", "nosuch.npy,nosuch.npy", NULL, NULL, NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "nosuch.npy"), "got: %s", r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", src, "--batch", "5", NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "compiled for batch 8"), "got: %s", r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", src, "--resume", "nosuch.safetensors", NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2);
  run_result_free(&r);
  (void)ck;
  rm_rf(dir);
  free(dir), free(exe), free(ck), free(yp);
}

Test(train, diverging_loss_keeps_the_last_checkpoint, .timeout = 600) {
  // SGD with lr 1e19 on mse: the first step succeeds, the weights explode, the loss overflows.
  char *dir = make_temp_dir(), src[1200], *exe = path_join(dir, "t");
  char *model = path_join(dir, "m.json"), *ck = path_join(dir, "ck.safetensors");
  char *gm = golden("mlp_mse_sgd", "model.json");
  FILE *in = fopen(gm, "r"), *out = fopen(model, "w");
  char line[1 << 16];
  while (fgets(line, sizeof line, in)) {
    char *lr = strstr(line, "\"lr\": 0.1");
    if (lr) {
      *lr = 0;
      fprintf(out, "%s\"lr\": 1e19%s", line, lr + strlen("\"lr\": 0.1"));
    } else {
      fputs(line, out);
    }
  }
  fclose(in), fclose(out);
  build_trainer(model, exe);
  write_data(dir, 8, 0, 1.0, src, sizeof src);
  run_result r = trainer(exe, "--train", src, "--epochs", "5", "--save", ck, NULL, NULL);
  cr_expect_eq(r.status, 2, "exit %d: %s", r.status, r.err);
  cr_expect(strstr(r.err, "the loss became") && strstr(r.err, "last good checkpoint is kept"),
            "got: %s", r.err);
  kiln_safetensors st;
  char err[256];
  cr_assert_eq(kiln_safetensors_read(ck, &st, err, sizeof err), KILN_OK, "no checkpoint: %s", err);
  const kiln_st_entry *step = kiln_safetensors_find(&st, KILN_STEP_TENSOR);
  cr_assert(step);
  int64_t steps;
  memcpy(&steps, step->data, 8);
  cr_expect(steps >= 1 && steps < 5, "the checkpoint holds step %lld", (long long)steps);
  kiln_safetensors_free(&st);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(exe), free(model), free(ck), free(gm);
}

// ---- Demos ----

static double final_value(const char *out, const char *key) {
  const char *p = strstr(out, key);
  cr_assert(p, "no %s in: %s", key, out);
  return atof(p + strlen(key));
}

static double train_xor(const char *model, const char *dir, const char *epochs) {
  char *exe = path_join(dir, "xor"), src[1200];
  build_trainer(model, exe);
  // the 4 XOR rows
  kiln_array x = {.dtype = KILN_RT_F32, .rank = 2, .shape = {4, 2}, .nbytes = 32};
  kiln_array y = {.dtype = KILN_RT_F32, .rank = 2, .shape = {4, 1}, .nbytes = 16};
  float xs[8] = {0, 0, 0, 1, 1, 0, 1, 1}, ys[4] = {0, 1, 1, 0};
  x.data = xs, y.data = ys;
  char *xp = path_join(dir, "x.npy"), *yp = path_join(dir, "y.npy"), err[256];
  cr_assert_eq(kiln_npy_write(xp, &x, err, sizeof err), KILN_OK);
  cr_assert_eq(kiln_npy_write(yp, &y, err, sizeof err), KILN_OK);
  snprintf(src, sizeof src, "%s,%s", xp, yp);
  run_result r = trainer(exe, "--train", src, "--epochs", epochs, NULL, NULL, NULL, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  double loss = final_value(r.out, "train_loss=");
  run_result_free(&r);
  free(exe), free(xp), free(yp);
  return loss;
}

Test(train, xor_mlp_learns_and_perceptron_cannot, .timeout = 600) {
  char *dir = make_temp_dir();
  double mlp = train_xor(KILN_SOURCE_DIR "/samples/xor_mlp.json", dir, "2000");
  double perceptron = train_xor(KILN_SOURCE_DIR "/samples/xor_perceptron.json", dir, "2000");
  cr_expect(mlp < 0.01, "the MLP's loss is %g after 2000 steps", mlp);
  // A single sigmoid unit w.x + b: no line separates XOR, so some row stays on the wrong side of
  // 0.5 and the mean squared error cannot fall below 1/16 (that row alone costs >= 1/4).
  cr_expect(perceptron > 1.0 / 16, "the perceptron's loss is %g", perceptron);
  rm_rf(dir);
  free(dir);
}

Test(train, lenet5_loss_drops_on_fashion_mnist, .timeout = 900) {
  if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
    cr_skip_test("Debian's dataset-fashion-mnist is not installed");
  // Under the sanitizers (0.4 s a step there) 10 steps, checked for clean memory and finite losses;
  // whether LeNet-5 learns is the normal build's question.
  bool sanitized = strcmp(KILN_SANITIZE, "none") != 0;
  char *dir = make_temp_dir(), *exe = path_join(dir, "lenet"), *log = path_join(dir, "log.csv");
  // -O3 also in the sanitizer build (which compiles generated C at -O0: tests/meson.build): these
  // steps take longer than clang's optimizing them.
  char *build[] = {KILN_EXE, "build", "--train",  KILN_SOURCE_DIR "/samples/lenet5.json",
                   "-o",     exe,     "--cflags", "-O3",
                   NULL};
  run_result b = run_cmd(build, 600);
  cr_assert_eq(b.status, 0, "kiln build --train lenet5: %s", b.err);
  run_result_free(&b);
  run_result r = trainer(exe, "--train", "fashion-mnist:train", "--max-steps",
                         sanitized ? "10" : "80", "--log", log, NULL, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  double losses[90];
  int n = read_log_losses(log, losses, 90);
  cr_assert_eq(n, sanitized ? 10 : 80);
  for (int i = 0; i < n; i++) cr_expect(isfinite(losses[i]), "step %d: loss %g", i + 1, losses[i]);
  if (sanitized) {
    rm_rf(dir);
    free(dir), free(exe), free(log);
    return;
  }
  // From ln(10) ~ 2.3 (random init over 10 classes) to well below.
  double first = 0, last = 0;
  for (int i = 0; i < 5; i++) first += losses[i] / 5;
  for (int i = n - 20; i < n; i++) last += losses[i] / 20;
  cr_expect(first > 2.0 && last < 0.6 * first, "mean loss of the first 5 steps %g, last 20 %g",
            first, last);
  rm_rf(dir);
  free(dir), free(exe), free(log);
}

// ---- The samples with recurrent and attention layers train (through the interpreter) ----

// samples/<name>.json with `training` added, written to dir beside a link to its weights.
static char *sample_with_training(const char *dir, const char *name, const char *training) {
  char src[512], weights[512], link_path[512];
  snprintf(src, sizeof src, KILN_SOURCE_DIR "/samples/%s.json", name);
  snprintf(weights, sizeof weights, KILN_SOURCE_DIR "/samples/%s.safetensors", name);
  snprintf(link_path, sizeof link_path, "%s/%s.safetensors", dir, name);
  cr_assert_eq(symlink(weights, link_path), 0);
  FILE *f = fopen(src, "rb");
  cr_assert(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = calloc((size_t)n + 1, 1);
  cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  char *end = strrchr(text, '}');
  cr_assert(end);
  *end = 0;
  char *path = malloc(strlen(dir) + strlen(name) + 16);
  sprintf(path, "%s/%s.json", dir, name);
  FILE *out = fopen(path, "w");
  fprintf(out, "%s, \"training\": %s}\n", text, training);
  fclose(out);
  free(text);
  return path;
}

// Trains `steps` steps on one fixed batch (inputs random: floats in [-1, 1), integers in
// [0, max_int)); returns the first and last losses.
static void train_fixed_batch(const char *model, int steps, int64_t max_int, double *first,
                              double *last) {
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_graph *g = training_graph_or_fail(model);
  kiln_array *in = calloc((size_t)g->n_inputs, sizeof(kiln_array));
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_tensor *t = &g->tensors[g->inputs[i]];
    in[i] = (kiln_array){.dtype = (int)t->dtype, .rank = t->shape.rank};
    memcpy(in[i].shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
    in[i].nbytes = (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
    in[i].data = kiln_aligned_alloc(in[i].nbytes + 64);
    for (int64_t k = 0; k < kiln_shape_numel(&t->shape); k++)
      kiln_element_set(in[i].data, in[i].dtype, k,
                       kiln_dtype_is_float(t->dtype) ? sin(0.37 * (double)k + i)
                                                     : (double)((k * 7 + i) % max_int));
  }
  for (int s = 0; s < steps; s++) {
    cr_assert(kiln_interp_run(g, in, out, &d), "%s: step %d fails", model, s);
    double loss = kiln_element_get(out[0].data, out[0].dtype, 0);
    if (s == 0) *first = loss;
    *last = loss;
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  for (int i = 0; i < g->n_inputs; i++) kiln_array_free(&in[i]);
  free(in), free(out);
  kiln_graph_free(g);
}

// The LSTM classifier's training section: cross-entropy on one sequence a batch, Adam.
static const char lstm_training[] =
    "{\"batch_size\": 1, \"loss\": {\"kind\": \"cross_entropy\", \"output\": \"logits\", "
    "\"target\": {\"name\": \"label\", \"dtype\": \"i64\"}}, \"optimizer\": {\"kind\": "
    "\"adam\", \"lr\": 0.01}}";

Test(train, lstm_classifier_sample_trains, .timeout = 600) {
  char *dir = make_temp_dir();
  char *model = sample_with_training(dir, "lstm_classifier", lstm_training);
  double first, last;
  train_fixed_batch(model, 8, 5, &first, &last);
  cr_expect(last < 0.5 * first, "loss %g -> %g over 8 steps on one batch", first, last);
  rm_rf(dir);
  free(dir), free(model);
}

// The trainer's C compiles with any C17 compiler at -Werror, clang too (the sanitizer build's
// tests compile generated code with the compiler that built Kiln): an embedding's gradient,
// GatherGrad, holds the generated code's `if` on an equality, which the C backend printed as
// `if ((at == v))` — clang's -Wparentheses-equality error.
Test(train, embedding_gradient_source_is_clang_clean, .timeout = 600) {
  char *dir = make_temp_dir();
  char *model = sample_with_training(dir, "lstm_classifier", lstm_training);
  char *exe = path_join(dir, "t"), *src = path_join(dir, "t.c");
  char *build[] = {KILN_EXE, "build", "--train", model, "-o", exe, "--keep-sources", NULL};
  run_result r = run_cmd(build, 600);
  cr_assert_eq(r.status, 0, "kiln build --train: %s", r.err);
  run_result_free(&r);
  FILE *f = fopen(src, "rb");
  cr_assert(f, "no %s", src);
  static char text[4 << 20];
  text[fread(text, 1, sizeof text - 1, f)] = '\0';
  fclose(f);
  cr_expect(strstr(text, "GatherGrad"), "no embedding gradient in the trainer");
  cr_expect(strstr(text, "if (at == v) {"), "GatherGrad's test is not `if (at == v) {`");
  cr_expect(!strstr(text, "if (("), "a doubly parenthesized if condition");
  rm_rf(dir);
  free(dir), free(model), free(exe), free(src);
}

Test(train, transformer_sample_trains_two_inputs, .timeout = 600) {
  // Two token inputs (src, tgt) and an f32 target for the logits (1, 8, 40).
  char *dir = make_temp_dir();
  char *model = sample_with_training(
      dir, "transformer",
      "{\"batch_size\": 1, \"loss\": {\"kind\": \"mse\", \"output\": \"logits\", \"target\": "
      "{\"name\": \"target\", \"dtype\": \"f32\"}}, \"optimizer\": {\"kind\": \"adam\", "
      "\"lr\": 0.003}}");
  double first, last;
  train_fixed_batch(model, 6, 40, &first, &last);
  cr_expect(last < 0.8 * first, "loss %g -> %g over 6 steps on one batch", first, last);
  rm_rf(dir);
  free(dir), free(model);
}

// A model with a second input: the trainer takes it as a third array and names it when missing.
Test(train, extra_inputs_are_fed_and_named, .timeout = 300) {
  char *dir = make_temp_dir(), *exe = path_join(dir, "two");
  char *model = golden("two_input_mse_sgd", "model.json"),
       *x = golden("two_input_mse_sgd", "x.npy");
  char *y = golden("two_input_mse_sgd", "y.npy"), *x2 = golden("two_input_mse_sgd", "x2.npy");
  build_trainer(model, exe);
  char pair[1200], wrong[1800];
  snprintf(pair, sizeof pair, "%s,%s", x, y);
  snprintf(wrong, sizeof wrong, "%s,%s,%s", x, y, y);
  run_result r = trainer(exe, "--train", pair, NULL, NULL, NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2, "missing x2: exit %d", r.status);
  cr_expect(strstr(r.err, "the model takes 1") && strstr(r.err, "its inputs: x2"), "%s", r.err);
  run_result_free(&r);
  r = trainer(exe, "--train", wrong, NULL, NULL, NULL, NULL, NULL, NULL);
  cr_expect_eq(r.status, 2, "y as x2: exit %d", r.status);
  cr_expect(strstr(r.err, "extra array 1 has 2 values per sample, the model's x2 takes 3"), "%s",
            r.err);
  run_result_free(&r);
  free(model), free(x), free(y), free(x2), free(exe);
  rm_rf(dir);
  free(dir);
}

// ---- Evaluation runs in inference mode (docs/training.md §3, §7) ----

// mlp_mse_sgd with `nodes` (JSON, ending in a node writing "a") in place of its Relu, reading
// "h", and `params` (JSON lines, may be "") added: written to dir/name.json (malloc'd path).
static char *mlp_variant(const char *dir, const char *name, const char *nodes, const char *params) {
  static const char relu[] =
      "{\"op\": \"Relu\", \"name\": \"act\", \"inputs\": [\"h\"], "
      "\"outputs\": [\"a\"]},";
  static const char b2[] = "    {\"name\": \"b2\"";
  char *gm = golden("mlp_mse_sgd", "model.json"), file[64];
  FILE *in = fopen(gm, "r");
  cr_assert(in, "cannot open %s", gm);
  static char text[1 << 17];
  size_t n = fread(text, 1, sizeof text - 1, in);
  text[n] = 0;
  fclose(in);
  char *at_relu = strstr(text, relu), *at_b2 = strstr(text, b2);
  cr_assert(at_relu && at_b2 && at_b2 < at_relu, "%s changed shape", gm);
  snprintf(file, sizeof file, "%s.json", name);
  char *path = path_join(dir, file);
  FILE *out = fopen(path, "w");
  cr_assert(out);
  fprintf(out, "%.*s%s\n%.*s%s\n", (int)(at_b2 - text), text, params, (int)(at_relu - at_b2), at_b2,
          nodes);
  fputs(at_relu + strlen(relu), out);
  fclose(out);
  free(gm);
  return path;
}

static const char dropout_nodes[] =
    "{\"op\": \"Relu\", \"name\": \"act\", \"inputs\": [\"h\"], \"outputs\": [\"r\"]},\n"
    "    {\"op\": \"Dropout\", \"name\": \"drop\", \"inputs\": [\"r\"], \"outputs\": [\"a\"]},";
static const char bn_nodes[] =
    "{\"op\": \"BatchNormalization\", \"name\": \"bn\", \"inputs\": [\"h\", \"bn_s\", \"bn_b\", "
    "\"bn_m\", \"bn_v\"], \"outputs\": [\"hb\"], \"attrs\": {\"momentum\": 0.5}},\n"
    "    {\"op\": \"Relu\", \"name\": \"act\", \"inputs\": [\"hb\"], \"outputs\": [\"a\"]},";
static const char bn_dropout_nodes[] =
    "{\"op\": \"BatchNormalization\", \"name\": \"bn\", \"inputs\": [\"h\", \"bn_s\", \"bn_b\", "
    "\"bn_m\", \"bn_v\"], \"outputs\": [\"hb\"], \"attrs\": {\"momentum\": 0.5}},\n"
    "    {\"op\": \"Relu\", \"name\": \"act\", \"inputs\": [\"hb\"], \"outputs\": [\"r\"]},\n"
    "    {\"op\": \"Dropout\", \"name\": \"drop\", \"inputs\": [\"r\"], \"outputs\": [\"a\"]},";
static const char bn_params[] =
    "    {\"name\": \"bn_s\", \"dtype\": \"f32\", \"shape\": [6], \"init\": {\"kind\": \"values\", "
    "\"values\": [1.2, 0.8, 1.1, 0.9, 1.0, 1.3]}},\n"
    "    {\"name\": \"bn_b\", \"dtype\": \"f32\", \"shape\": [6], \"init\": {\"kind\": \"values\", "
    "\"values\": [0.1, -0.1, 0.2, 0.0, -0.2, 0.05]}},\n"
    "    {\"name\": \"bn_m\", \"dtype\": \"f32\", \"shape\": [6], \"role\": \"buffer\", \"init\": "
    "{\"kind\": \"values\", \"values\": [0, 0, 0, 0, 0, 0]}},\n"
    "    {\"name\": \"bn_v\", \"dtype\": \"f32\", \"shape\": [6], \"role\": \"buffer\", \"init\": "
    "{\"kind\": \"values\", \"values\": [1, 1, 1, 1, 1, 1]}},";

// The mean squared error of the inference build of `model` with the weights `ck` on dir's
// x.npy, y.npy (write_data): an evaluation independent of the training graph.
static double inference_mse(const char *dir, const char *model, const char *ck) {
  char *exe = path_join(dir, "infer"), *xp = path_join(dir, "x.npy"), *yp = path_join(dir, "y.npy");
  char *zp = path_join(dir, "z.npy");
  char *build[] = {KILN_EXE, "build", (char *)model, "--weights", (char *)ck, "-o", exe, NULL};
  run_result r = run_cmd(build, 600);
  cr_assert_eq(r.status, 0, "kiln build %s --weights %s: %s", model, ck, r.err);
  run_result_free(&r);
  char *run[] = {exe, "--input", xp, "--output", zp, NULL};
  r = run_cmd(run, 120);
  cr_assert_eq(r.status, 0, "%s: %s", exe, r.err);
  run_result_free(&r);
  kiln_array z = read_npy_or_fail(zp), y = read_npy_or_fail(yp);
  cr_assert_eq(kiln_array_numel(&z), kiln_array_numel(&y));
  double sum = 0, n = (double)kiln_array_numel(&y);
  for (int64_t i = 0; i < kiln_array_numel(&z); i++) {
    double e = kiln_element_get(z.data, z.dtype, i) - kiln_element_get(y.data, y.dtype, i);
    sum += e * e;
  }
  kiln_array_free(&z), kiln_array_free(&y);
  free(exe), free(xp), free(yp), free(zp);
  return sum / n;
}

static void expect_close(double got, double want, const char *what) {
  cr_expect(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)), "%s: %.9g, expected %.9g", what, got,
            want);
}

// Trains `name` 3 epochs on 16 samples (2 batches) testing on the same samples; the trainer's
// test loss (its evaluation) must equal the inference build's loss of the saved weights, and a
// second evaluation of those weights (--weights, no step: step counter 0) must equal it too.
static void evaluation_is_inference(const char *name, const char *nodes, const char *params) {
  char *dir = make_temp_dir(), src[1200], *exe = path_join(dir, "t");
  char *ck = path_join(dir, "ck.safetensors"), *model = mlp_variant(dir, name, nodes, params);
  build_trainer(model, exe);
  write_data(dir, 16, 0, 2.0, src, sizeof src);
  run_result r = trainer(exe, "--train", src, "--test", src, "--epochs", "3", "--save", ck);
  cr_assert_eq(r.status, 0, "%s", r.err);
  double evaluated = final_value(r.out, "test_loss=");
  run_result_free(&r);
  expect_close(evaluated, inference_mse(dir, model, ck), name);
  char *again[] = {exe, "--train", src, "--test", src, "--weights", ck, "--max-steps", "0", NULL};
  r = run_cmd(again, 300);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect_eq(final_value(r.out, "test_loss="), evaluated, "%s: evaluation is not repeatable",
               name);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(exe), free(ck), free(model);
}

Test(train, evaluation_turns_dropout_off, .timeout = 600) {
  evaluation_is_inference("dropout", dropout_nodes, "");
}

Test(train, evaluation_uses_batchnorm_running_statistics, .timeout = 600) {
  evaluation_is_inference("bn", bn_nodes, bn_params);
}

// Evaluation after each epoch flips the mode flag; neither the checkpoints nor a resumed run may
// see it: resuming mid-run gives the uninterrupted run's checkpoint bit for bit.
Test(train, resume_with_evaluation_mode_is_bit_identical, .timeout = 600) {
  char *dir = make_temp_dir(), src[1200], *exe = path_join(dir, "t");
  char *full = path_join(dir, "full.safetensors"), *part = path_join(dir, "part.safetensors");
  char *resumed = path_join(dir, "resumed.safetensors");
  char *model = mlp_variant(dir, "bn_dropout", bn_dropout_nodes, bn_params);
  build_trainer(model, exe);
  write_data(dir, 16, 0, 2.0, src, sizeof src);
  run_result r = trainer(exe, "--train", src, "--test", src, "--epochs", "3", "--save", full);
  cr_assert_eq(r.status, 0, "%s", r.err);
  double full_loss = final_value(r.out, "test_loss=");
  run_result_free(&r);
  // 3 steps: epoch 1 (then its evaluation and checkpoint) and half of epoch 2
  r = trainer(exe, "--train", src, "--test", src, "--max-steps", "3", "--save", part);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  char *args[] = {exe, "--train", src,     "--test",   src,  "--epochs",
                  "3", "--save",  resumed, "--resume", part, NULL};
  r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect_eq(final_value(r.out, "test_loss="), full_loss);
  run_result_free(&r);
  cr_expect(files_equal(full, resumed), "resumed checkpoint differs from the uninterrupted run");
  rm_rf(dir);
  free(dir), free(exe), free(full), free(part), free(resumed), free(model);
}

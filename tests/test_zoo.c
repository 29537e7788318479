// The model zoo (tools/make_zoo.py): for every sample listed in tests/goldens/zoo.txt, `kiln build`
// compiles it, the binary runs on the golden inputs and its outputs match PyTorch's, and
// `kiln inspect --json` reports PyTorch's parameter count (`params`: sum of numel over
// module.parameters()), its buffer count (`buffers`: BatchNorm running statistics) and the graph's
// own constants (`constants`).
//   tolerance: float outputs |got - want| <= 1e-4 * max(1, |want|) elementwise; integer outputs
//   (NMS selections) identical. Goldens: tests/goldens/<name>/io.txt names the files, params.txt
//   holds the counts. Suite `zoo` runs the models that build and run quickly; `zoo_slow` the
//   giants (AlexNet, VGG, ResNet-34/50) and GoogLeNet and ResNet-18 (their generated C takes clang
//   a minute to compile with the sanitizers; CI runs suite `slow` in the normal build only),
//   registered as the Meson suite `slow`.
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

TestSuite(zoo, .fini = check_leaks, .timeout = 1200);
TestSuite(zoo_slow, .fini = check_leaks, .timeout = 2400);

static const double RTOL = 1e-4;
enum { MAX_IO = 8, MAX_ARGS = 2 * MAX_IO + 8, PATH_LEN = 768 };

// One line of io.txt: `input NAME FILE` or `output NAME FILE close|exact`.
typedef struct io_entry {
  char tensor[128], file[PATH_LEN];
  bool exact;
} io_entry;

typedef struct zoo_io {
  io_entry in[MAX_IO], out[MAX_IO];
  int n_in, n_out;
} zoo_io;

static void golden_path(const char *model, const char *file, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s/%s", KILN_TEST_GOLDENS_DIR, model, file);
}

static zoo_io read_io(const char *model) {
  char path[PATH_LEN], kind[16], tensor[128], file[256], how[16];
  golden_path(model, "io.txt", path, sizeof(path));
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s: cannot open %s", model, path);
  zoo_io io = {0};
  int got;
  while ((got = fscanf(f, "%15s %127s %255s", kind, tensor, file)) == 3) {
    bool is_in = strcmp(kind, "input") == 0;
    cr_assert(is_in || strcmp(kind, "output") == 0, "%s: bad io.txt line kind '%s'", model, kind);
    io_entry *e = is_in ? &io.in[io.n_in++] : &io.out[io.n_out++];
    cr_assert(io.n_in <= MAX_IO && io.n_out <= MAX_IO, "%s: too many tensors", model);
    snprintf(e->tensor, sizeof(e->tensor), "%s", tensor);
    golden_path(model, file, e->file, sizeof(e->file));
    if (!is_in) {
      cr_assert(fscanf(f, "%15s", how) == 1, "%s: output %s lacks close|exact", model, tensor);
      e->exact = strcmp(how, "exact") == 0;
    }
  }
  fclose(f);
  cr_assert(got == EOF && io.n_in > 0 && io.n_out > 0, "%s: malformed %s", model, path);
  return io;
}

// params.txt: pytorch_parameters, pytorch_buffers, graph_constants, their total (in that order).
// want[i] is the count `kiln inspect --json` must report under count_keys[i].
enum { N_COUNTS = 3 };
static const char *const count_keys[N_COUNTS] = {"params", "buffers", "constants"};

static void expected_counts(const char *model, int64_t want[N_COUNTS]) {
  static const char *const file_keys[N_COUNTS + 1] = {"pytorch_parameters", "pytorch_buffers",
                                                      "graph_constants", "kiln_params"};
  char path[PATH_LEN], key[64];
  golden_path(model, "params.txt", path, sizeof(path));
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s: cannot open %s", model, path);
  int64_t v[N_COUNTS + 1], sum = 0;
  for (int i = 0; i <= N_COUNTS; i++) {
    cr_assert(fscanf(f, "%63s %" SCNd64, key, &v[i]) == 2 && strcmp(key, file_keys[i]) == 0,
              "%s: malformed %s (expected %s)", model, path, file_keys[i]);
    if (i < N_COUNTS) sum += want[i] = v[i];
  }
  fclose(f);
  cr_assert_eq(sum, v[N_COUNTS],
               "%s: params.txt: %" PRId64 " + %" PRId64 " + %" PRId64 " != %" PRId64, model, v[0],
               v[1], v[2], v[N_COUNTS]);
}

static void model_path(const char *model, char *buf, size_t n) {
  snprintf(buf, n, "%s/samples/%s.json", KILN_SOURCE_DIR, model);
}

static void check_param_count(const char *model) {
  char path[PATH_LEN];
  model_path(model, path, sizeof(path));
  char *args[] = {KILN_EXE, "inspect", "--json", path, NULL};
  run_result r = run_cmd(args, 600);
  cr_assert_eq(r.status, 0, "%s: kiln inspect failed (%d): %s", model, r.status, r.err);
  json_object *o = json_tokener_parse(r.out), *v;
  cr_assert(o, "%s: kiln inspect --json printed no JSON", model);
  int64_t want[N_COUNTS];
  expected_counts(model, want);
  for (int i = 0; i < N_COUNTS; i++) {
    cr_assert(json_object_object_get_ex(o, count_keys[i], &v), "%s: no %s in inspect --json", model,
              count_keys[i]);
    int64_t got = json_object_get_int64(v);
    cr_expect_eq(got, want[i], "%s: kiln inspect counts %" PRId64 " %s, PyTorch %" PRId64, model,
                 got, count_keys[i], want[i]);
  }
  json_object_put(o);
  run_result_free(&r);
}

#ifndef KILN_SANITIZE
#define KILN_SANITIZE "none"
#endif

// The sanitizer build compiles generated C at -O0 (tests/meson.build: $KILN_CFLAGS), except
// these models', whose sanitized binaries run longer at -O0 than clang takes to optimize them
// (YOLOv1: 14 s to build and 13 s to run at -O3, 3 s and 55 s at -O0).
static bool sanitized_at_o3(const char *model) {
  return strcmp(KILN_SANITIZE, "none") != 0 &&
         (strcmp(model, "yolov1") == 0 || strcmp(model, "fast_rcnn") == 0);
}

static char *build_model(const char *model, const char *dir) {
  char path[PATH_LEN];
  model_path(model, path, sizeof(path));
  char *exe = path_join(dir, model);
  char *args[] = {KILN_EXE, "build", path, "-o", exe, sanitized_at_o3(model) ? "--cflags" : NULL,
                  "-O3",    NULL};
  run_result r = run_cmd(args, 1800);
  cr_assert_eq(r.status, 0, "%s: kiln build failed (%d): %s", model, r.status, r.err);
  run_result_free(&r);
  return exe;
}

// Runs the binary on the golden inputs; output k goes to DIR/out<k>.npy.
static void run_binary(const char *model, const char *exe, const zoo_io *io, const char *dir) {
  static char flags[2 * MAX_IO][PATH_LEN + 160];
  char *args[MAX_ARGS];
  int n = 0;
  args[n++] = (char *)exe;
  for (int i = 0; i < io->n_in; i++) {
    snprintf(flags[i], sizeof(flags[i]), "%s=%s", io->in[i].tensor, io->in[i].file);
    args[n++] = "--input";
    args[n++] = flags[i];
  }
  for (int i = 0; i < io->n_out; i++) {
    char *f = flags[MAX_IO + i];
    snprintf(f, sizeof(flags[0]), "%s=%s/out%d.npy", io->out[i].tensor, dir, i);
    args[n++] = "--output";
    args[n++] = f;
  }
  args[n] = NULL;
  run_result r = run_cmd(args, 1800);
  cr_assert_eq(r.status, 0, "%s: the binary failed (%d): %s", model, r.status, r.err);
  run_result_free(&r);
}

static bool same_shape(const kiln_array *a, const kiln_array *b) {
  if (a->dtype != b->dtype || a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

// Compares one output with its golden; reports the worst element.
static void expect_output(const char *model, const io_entry *e, const kiln_array *got,
                          const kiln_array *want) {
  cr_assert(same_shape(got, want), "%s: output %s: dtype or shape differs from the golden", model,
            e->tensor);
  int64_t n = kiln_array_numel(want), worst = -1, bad = 0;
  double worst_excess = 0;
  for (int64_t i = 0; i < n; i++) {
    double g = kiln_element_get(got->data, got->dtype, i);
    double w = kiln_element_get(want->data, want->dtype, i);
    double excess = e->exact ? (g != w) : fabs(g - w) - RTOL * fmax(1.0, fabs(w));
    if (!(excess <= 0)) {  // also catches NaN
      bad++;
      if (worst < 0 || !(excess <= worst_excess)) worst = i, worst_excess = excess;
    }
  }
  if (bad) {
    double g = kiln_element_get(got->data, got->dtype, worst);
    double w = kiln_element_get(want->data, want->dtype, worst);
    cr_expect(false,
              "%s: output %s: %" PRId64 " of %" PRId64 " elements off (%s); worst [%" PRId64
              "]: got %.9g, want %.9g",
              model, e->tensor, bad, n, e->exact ? "exact" : "|d| > 1e-4 * max(1, |want|)", worst,
              g, w);
  }
}

static void check_model(const char *model) {
  check_param_count(model);
  zoo_io io = read_io(model);
  char *dir = make_temp_dir();
  char *exe = build_model(model, dir);
  run_binary(model, exe, &io, dir);
  for (int i = 0; i < io.n_out; i++) {
    char out[PATH_LEN];
    snprintf(out, sizeof(out), "%s/out%d.npy", dir, i);
    kiln_array got = read_npy_or_fail(out), want = read_npy_or_fail(io.out[i].file);
    expect_output(model, &io.out[i], &got, &want);
    kiln_array_free(&got);
    kiln_array_free(&want);
  }
  rm_rf(dir);
  free(exe);
  free(dir);
}

// The models this file tests, with their suite; zoo.txt (written by make_zoo.py) must agree.
// clang-format off
#define ZOO_MODELS(X) \
  X(zoo, mobilenet) \
  X(zoo, dilated) \
  X(zoo, yolov1) \
  X(zoo, fast_rcnn) \
  X(zoo, lstm_classifier) \
  X(zoo, transformer) \
  X(zoo, autoencoder) \
  X(zoo, vae) \
  X(zoo, vae_sampling) \
  X(zoo, cvae) \
  X(zoo, dcgan) \
  X(zoo_slow, googlenet) \
  X(zoo_slow, resnet18) \
  X(zoo_slow, alexnet) \
  X(zoo_slow, vgg11) \
  X(zoo_slow, vgg16) \
  X(zoo_slow, resnet34) \
  X(zoo_slow, resnet50)
// clang-format on

#define ZOO_TEST(suite, model) \
  Test(suite, model) { check_model(#model); }
ZOO_MODELS(ZOO_TEST)

#define ZOO_ENTRY(suite, model) {#model, #suite},
static const char *const zoo_table[][2] = {ZOO_MODELS(ZOO_ENTRY)};

Test(zoo, list_matches_goldens) {
  char path[PATH_LEN], name[128], suite[32];
  snprintf(path, sizeof(path), "%s/zoo.txt", KILN_TEST_GOLDENS_DIR);
  FILE *f = fopen(path, "r");
  cr_assert(f, "cannot open %s", path);
  size_t n_table = sizeof(zoo_table) / sizeof(zoo_table[0]), n_listed = 0;
  while (fscanf(f, "%127s %31s", name, suite) == 2) {
    n_listed++;
    bool found = false;
    for (size_t i = 0; i < n_table; i++) {
      if (strcmp(zoo_table[i][0], name) != 0) continue;
      found = true;
      bool slow = strcmp(zoo_table[i][1], "zoo_slow") == 0;
      cr_expect_eq(slow, strcmp(suite, "slow") == 0, "%s: suite %s in zoo.txt, %s here", name,
                   suite, zoo_table[i][1]);
    }
    cr_expect(found, "%s is in zoo.txt but has no test in test_zoo.c", name);
  }
  fclose(f);
  cr_expect_eq(n_listed, n_table, "zoo.txt lists %zu models, test_zoo.c %zu", n_listed, n_table);
}

// The slow suite's giants at a small input (`--shape`), so that the sanitizer build, which skips
// suite `slow`, still runs their generated code: every layer kind and residual/branch structure of
// ResNet-18/34 and GoogLeNet, checked against the interpreter at the same shape. (VGG and
// AlexNet cannot take another input size: their classifiers are sized for 224x224. ResNet-50 is
// left out for CI time: its bottleneck's 1x1 convolutions run sanitized in the op goldens.)
static const struct {
  const char *model, *shape;
} downscaled[] = {
    {"resnet18", "x=1x3x32x32"},
    {"googlenet", "x=1x3x48x48"},
};

ParameterizedTestParameters(zoo, giant_downscaled_matches_interpreter) {
  static int index[sizeof(downscaled) / sizeof(downscaled[0])];
  for (size_t i = 0; i < sizeof(index) / sizeof(index[0]); i++) index[i] = (int)i;
  return cr_make_param_array(int, index, sizeof(index) / sizeof(index[0]));
}

static char *seeded_image(const char *dir, int side) {
  int64_t shape[4] = {1, 3, side, side}, n = 3 * side * side;
  float *x = malloc(sizeof(float) * (size_t)n);
  uint32_t state = 12345;
  for (int64_t i = 0; i < n; i++) {
    state = state * 1664525u + 1013904223u;  // a fixed LCG: values in [-1, 1)
    x[i] = (float)(state >> 8) / (float)(1u << 23) - 1.0f;
  }
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 4, .data = x, .nbytes = sizeof(float) * (size_t)n};
  memcpy(a.shape, shape, sizeof shape);
  char *path = path_join(dir, "x.npy"), err[256];
  cr_assert_eq(kiln_npy_write(path, &a, err, sizeof err), KILN_OK, "%s", err);
  free(x);
  return path;
}

static kiln_array run_downscaled(char **args, const char *out) {
  run_result r = run_cmd(args, 1200);
  cr_assert_eq(r.status, 0, "%s %s failed (%d): %s", args[0], args[1], r.status, r.err);
  run_result_free(&r);
  return read_npy_or_fail(out);
}

ParameterizedTest(int *i, zoo, giant_downscaled_matches_interpreter, .timeout = 1200) {
  if (strcmp(KILN_SANITIZE, "none") == 0)
    cr_skip_test("normal build: suite slow runs these models at full size against PyTorch");
  const char *model = downscaled[*i].model, *shape = downscaled[*i].shape;
  char path[PATH_LEN], in_flag[PATH_LEN], out_flag[PATH_LEN];
  model_path(model, path, sizeof path);
  char *dir = make_temp_dir(), *exe = path_join(dir, model), *out = path_join(dir, "y.npy");
  char *x = seeded_image(dir, atoi(strrchr(shape, 'x') + 1));
  snprintf(in_flag, sizeof in_flag, "x=%s", x);
  snprintf(out_flag, sizeof out_flag, "logits=%s", out);
  // -O0: clang takes minutes over these models' generated C with the sanitizers at -O1 and up.
  char *build[] = {KILN_EXE,   "build", path, "--shape", (char *)shape,
                   "--cflags", "-O0",   "-o", exe,       NULL};
  run_result r = run_cmd(build, 1200);
  cr_assert_eq(r.status, 0, "%s: kiln build --shape failed (%d): %s", model, r.status, r.err);
  run_result_free(&r);
  char *bin[] = {exe, "--input", in_flag, "--output", out_flag, NULL};
  kiln_array got = run_downscaled(bin, out);
  char *interp[] = {KILN_EXE,  "run",   path,       "--shape", (char *)shape,
                    "--input", in_flag, "--output", out_flag,  NULL};
  kiln_array want = run_downscaled(interp, out);
  io_entry e = {.exact = false};
  snprintf(e.tensor, sizeof e.tensor, "logits (%s)", shape);
  expect_output(model, &e, &got, &want);
  kiln_array_free(&got), kiln_array_free(&want);
  rm_rf(dir);
  free(dir), free(exe), free(out), free(x);
}

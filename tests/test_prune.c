// `kiln prune` (compiler/prune, docs/pruning.md) on the small CNN of tools/goldens_prune.py:
// unstructured layer-wise and global magnitude pruning against PyTorch's torch.nn.utils.prune
// masks (exact zeros, the other weights bit for bit); structured filter pruning against the
// filters PyTorch's script keeps, the shrunk shapes (BatchNormalization, Flatten -> Gemm) and the
// output of the original model with those filters zeroed (PyTorch's, and the interpreter's on
// weights this test zeroes itself); fine-tuning through the interpreter keeps the zeros (and
// without the masks does not); the report; bad input.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "test_util.h"

#define NET KILN_TEST_GOLDENS_DIR "/prune/net"
#define NET_MODEL NET "/model.json"
#define RES_MODEL KILN_TEST_GOLDENS_DIR "/prune/res/model.json"

static const char *const weights[] = {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"};
enum { N_WEIGHTS = 4 };

static char *dir;

static void setup(void) { dir = make_temp_dir(); }

static void teardown(void) {
  rm_rf(dir);
  free(dir);
  check_leaks();
}

TestSuite(prune, .init = setup, .fini = teardown, .timeout = 120);

// Runs `kiln prune MODEL ARGS... -o dir/OUT.json`; returns the result (caller frees).
static run_result prune_cmd(const char *model, const char *out, const char *const *args) {
  char *argv[24] = {KILN_EXE, "prune", (char *)model};
  int n = 3;
  for (int i = 0; args[i]; i++) argv[n++] = (char *)args[i];
  char *path = path_join(dir, out);
  argv[n++] = "-o";
  argv[n++] = path;
  run_result r = run_cmd(argv, 120);
  free(path);
  return r;
}

static void prune_ok(const char *model, const char *out, const char *const *args) {
  run_result r = prune_cmd(model, out, args);
  cr_assert_eq(r.status, 0, "kiln prune failed (%d): %s", r.status, r.err);
  run_result_free(&r);
}

static kiln_safetensors read_st(const char *path) {
  kiln_safetensors st;
  char err[600];
  cr_assert_eq(kiln_safetensors_read(path, &st, err, sizeof err), KILN_OK, "%s", err);
  return st;
}

static const kiln_st_entry *entry(const kiln_safetensors *st, const char *name) {
  const kiln_st_entry *e = kiln_safetensors_find(st, name);
  cr_assert(e, "no tensor '%s'", name);
  return e;
}

static int64_t numel(const kiln_st_entry *e) {
  int64_t n = 1;
  for (int k = 0; k < e->rank; k++) n *= e->shape[k];
  return n;
}

static float at(const kiln_st_entry *e, int64_t i) {
  float v;
  memcpy(&v, (const char *)e->data + i * (int64_t)sizeof v, sizeof v);
  return v;
}

// The pruned weights are 0 where PyTorch's mask is, and the original weights bit for bit
// elsewhere; returns the number of zeros.
static int64_t check_against_masks(const kiln_safetensors *orig, const kiln_safetensors *pruned,
                                   const kiln_safetensors *masks, const char *mask_case) {
  int64_t zeros = 0;
  for (int w = 0; w < N_WEIGHTS; w++) {
    char name[96];
    snprintf(name, sizeof name, "%s/%s", mask_case, weights[w]);
    const kiln_st_entry *m = entry(masks, name), *o = entry(orig, weights[w]),
                        *p = entry(pruned, weights[w]);
    cr_assert_eq(numel(p), numel(o), "%s: the shape changed", weights[w]);
    for (int64_t i = 0; i < numel(o); i++) {
      float want = at(m, i) == 0 ? 0.0f : at(o, i);
      cr_assert(memcmp(&(float){at(p, i)}, &want, sizeof want) == 0,
                "%s %s[%ld]: %g, want %g (original %g)", mask_case, weights[w], (long)i, at(p, i),
                want, at(o, i));
      zeros += at(p, i) == 0;
    }
  }
  return zeros;
}

static void unstructured_case(const char *scope, const char *sparsity, const char *mask_case,
                              int64_t want_zeros) {
  const char *args[] = {"--sparsity", sparsity, scope, NULL};
  prune_ok(NET_MODEL, "u.json", args);
  char *out = path_join(dir, "u.safetensors");
  kiln_safetensors orig = read_st(NET "/weights.safetensors"), pruned = read_st(out),
                   masks = read_st(NET "/masks.safetensors");
  int64_t zeros = check_against_masks(&orig, &pruned, &masks, mask_case);
  cr_expect_eq(zeros, want_zeros, "%s %s: %ld zeros, want %ld", scope, sparsity, (long)zeros,
               (long)want_zeros);
  for (int w = 0; w < N_WEIGHTS; w++) {  // the masks kiln wrote are PyTorch's
    char mname[96], kname[96];
    snprintf(mname, sizeof mname, "%s/%s", mask_case, weights[w]);
    snprintf(kname, sizeof kname, "%s.prune_mask", weights[w]);
    const kiln_st_entry *m = entry(&masks, mname), *k = entry(&pruned, kname);
    for (int64_t i = 0; i < numel(m); i++)
      cr_assert_eq(at(k, i), at(m, i), "%s[%ld]", kname, (long)i);
  }
  kiln_safetensors_free(&orig), kiln_safetensors_free(&pruned), kiln_safetensors_free(&masks);
  free(out);
}

// Layer-wise: round(0.5 n) per weight: 54 + 216 + 160 + 20.
Test(prune, layerwise_matches_pytorch) {
  unstructured_case("--layerwise", "0.5", "layerwise_0.5", 54 + 216 + 160 + 20);
}

// Global: round(s * 900) over the four weights together.
Test(prune, global_matches_pytorch) {
  unstructured_case("--global", "0.5", "global_0.5", 450);
  unstructured_case("--global", "0.8", "global_0.8", 720);
}

// ---- Structured ----

static kiln_array run_model(const kiln_graph *g, const kiln_array *x) {
  kiln_diag d;
  kiln_diag_init(&d, g->source_file);
  kiln_array y;
  cr_assert(kiln_interp_run(g, x, &y, &d), "%s does not run", g->source_file);
  return y;
}

static void expect_shape(const kiln_safetensors *st, const char *name, int rank,
                         const int64_t *dims) {
  const kiln_st_entry *e = entry(st, name);
  cr_assert_eq(e->rank, rank, "%s: rank %d, want %d", name, e->rank, rank);
  for (int k = 0; k < rank; k++)
    cr_expect_eq(e->shape[k], dims[k], "%s: dim %d is %ld, want %ld", name, k, (long)e->shape[k],
                 (long)dims[k]);
}

static void check_shapes(const kiln_safetensors *st) {
  expect_shape(st, "conv1.weight", 4, (int64_t[]){3, 2, 3, 3});
  expect_shape(st, "conv1.bias", 1, (int64_t[]){3});
  const char *bn[] = {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"};
  for (int i = 0; i < 4; i++) expect_shape(st, bn[i], 1, (int64_t[]){3});
  expect_shape(st, "conv2.weight", 4, (int64_t[]){4, 3, 3, 3});
  expect_shape(st, "conv2.bias", 1, (int64_t[]){4});
  expect_shape(st, "fc1.weight", 2, (int64_t[]){5, 16});  // 4 channels x 2 x 2 columns
  expect_shape(st, "fc1.bias", 1, (int64_t[]){5});
  expect_shape(st, "fc2.weight", 2, (int64_t[]){4, 5});  // the output layer keeps its 4 rows
  expect_shape(st, "fc2.bias", 1, (int64_t[]){4});
}

// conv1's kept filters are the original's rows PyTorch's script chose.
static void check_kept_conv1(const kiln_safetensors *orig, const kiln_safetensors *pruned) {
  kiln_safetensors kept = read_st(NET "/kept.safetensors");
  const kiln_st_entry *k = entry(&kept, "conv1"), *o = entry(orig, "conv1.weight"),
                      *p = entry(pruned, "conv1.weight");
  for (int64_t f = 0; f < numel(k); f++) {
    int64_t src;
    memcpy(&src, (const char *)k->data + f * 8, 8);
    for (int64_t i = 0; i < 18; i++)
      cr_assert_eq(at(p, f * 18 + i), at(o, src * 18 + i), "conv1 filter %ld", (long)f);
  }
  kiln_safetensors_free(&kept);
}

static bool kept(const kiln_safetensors *k, const char *layer, int64_t f) {
  const kiln_st_entry *e = entry(k, layer);
  for (int64_t i = 0; i < numel(e); i++) {
    int64_t v;
    memcpy(&v, (const char *)e->data + i * 8, 8);
    if (v == f) return true;
  }
  return false;
}

static void zero_rows(kiln_graph *g, const char *param, int64_t row, int64_t row_len) {
  kiln_tensor *t = &g->tensors[kiln_graph_find_tensor(g, param)];
  for (int64_t i = 0; i < row_len; i++)
    kiln_element_set(t->data, (int)t->dtype, row * row_len + i, 0);
}

// The original model with the removed filters zeroed by this test (their weights and biases, and
// bn1's beta and running mean for conv1's channels).
static kiln_graph *zeroed_original(void) {
  kiln_graph *g = model_or_fail(NET_MODEL);
  kiln_safetensors k = read_st(NET "/kept.safetensors");
  for (int64_t f = 0; f < 6; f++) {
    if (kept(&k, "conv1", f)) continue;
    zero_rows(g, "conv1.weight", f, 18), zero_rows(g, "conv1.bias", f, 1);
    zero_rows(g, "bn1.bias", f, 1), zero_rows(g, "bn1.running_mean", f, 1);
  }
  for (int64_t f = 0; f < 8; f++)
    if (!kept(&k, "conv2", f))
      zero_rows(g, "conv2.weight", f, 54), zero_rows(g, "conv2.bias", f, 1);
  for (int64_t f = 0; f < 10; f++)
    if (!kept(&k, "fc1", f)) zero_rows(g, "fc1.weight", f, 32), zero_rows(g, "fc1.bias", f, 1);
  kiln_safetensors_free(&k);
  return g;
}

Test(prune, structured_filters_shrink_the_network) {
  const char *args[] = {"--sparsity", "0.5", "--structured", "filters", NULL};
  prune_ok(NET_MODEL, "s.json", args);
  char *out = path_join(dir, "s.safetensors"), *model = path_join(dir, "s.json");
  kiln_safetensors orig = read_st(NET "/weights.safetensors"), pruned = read_st(out);
  check_shapes(&pruned);
  check_kept_conv1(&orig, &pruned);

  kiln_array x = read_npy_or_fail(NET "/x.npy"), want = read_npy_or_fail(NET "/y_zeroed.npy");
  kiln_graph *small = model_or_fail(model), *zeroed = zeroed_original();
  kiln_array y = run_model(small, &x), y_ref = run_model(zeroed, &x);
  char why[256];
  cr_expect(arrays_close(&y, &want, 1e-5, 1e-5, why, sizeof why), "vs PyTorch: %s", why);
  cr_expect(arrays_close(&y, &y_ref, 1e-5, 1e-5, why, sizeof why), "vs zeroed original: %s", why);
  kiln_array_free(&x), kiln_array_free(&want), kiln_array_free(&y), kiln_array_free(&y_ref);
  kiln_graph_free(small), kiln_graph_free(zeroed);
  kiln_safetensors_free(&orig), kiln_safetensors_free(&pruned);
  free(out), free(model);
}

// ---- Fine-tuning ----

// 5 Adam steps through the interpreter on the pruned model's training graph; returns how many
// of the pruned (masked) weights are no longer zero and how many kept ones moved.
static void finetune(const char *model, const kiln_safetensors *masks, int64_t *revived,
                     int64_t *moved) {
  kiln_graph *g = training_graph_or_fail(model);
  kiln_safetensors before = read_st(NET "/weights.safetensors");
  kiln_array in[2] = {read_npy_or_fail(NET "/x.npy"), read_npy_or_fail(NET "/labels.npy")};
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  kiln_diag d;
  kiln_diag_init(&d, model);
  for (int s = 0; s < 5; s++) {
    cr_assert(kiln_interp_run(g, in, out, &d), "step %d fails", s);
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  *revived = *moved = 0;
  for (int w = 0; w < N_WEIGHTS; w++) {
    char name[96];
    snprintf(name, sizeof name, "global_0.5/%s", weights[w]);
    const kiln_st_entry *m = entry(masks, name), *o = entry(&before, weights[w]);
    const kiln_tensor *t = &g->tensors[kiln_graph_find_tensor(g, weights[w])];
    cr_assert_eq(t->kind, KILN_TENSOR_STATE, "%s is not trained", weights[w]);
    for (int64_t i = 0; i < numel(m); i++) {
      double v = kiln_tensor_get(t, i);
      if (at(m, i) == 0)
        *revived += v != 0;
      else
        *moved += v != at(o, i);
    }
  }
  kiln_array_free(&in[0]), kiln_array_free(&in[1]);
  free(out);
  kiln_safetensors_free(&before);
  kiln_graph_free(g);
}

Test(prune, finetuning_keeps_the_zeros) {
  kiln_safetensors masks = read_st(NET "/masks.safetensors");
  int64_t revived, moved;
  const char *masked[] = {"--sparsity", "0.5", "--global", NULL};
  prune_ok(NET_MODEL, "m.json", masked);
  char *model = path_join(dir, "m.json");
  finetune(model, &masks, &revived, &moved);
  cr_expect_eq(revived, 0, "%ld pruned weights became non-zero", (long)revived);
  cr_expect_gt(moved, 300, "only %ld of 450 kept weights were trained", (long)moved);
  free(model);
  // Without the masks the same steps revive pruned weights: the masks are what keeps them zero.
  const char *unmasked[] = {"--sparsity", "0.5", "--global", "--no-mask", NULL};
  prune_ok(NET_MODEL, "n.json", unmasked);
  model = path_join(dir, "n.json");
  finetune(model, &masks, &revived, &moved);
  cr_expect_gt(revived, 400, "without masks only %ld pruned weights moved", (long)revived);
  free(model);
  kiln_safetensors_free(&masks);
}

// ---- Report and errors ----

Test(prune, report_lists_layers_and_totals) {
  char *report = path_join(dir, "r.md");
  const char *args[] = {"--sparsity", "0.5", "--structured", "filters", "--report", report, NULL};
  run_result r = prune_cmd(NET_MODEL, "s.json", args);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strstr(r.out, "filters 6 -> 3"), "stdout: %s", r.out);
  FILE *f = fopen(report, "r");
  cr_assert(f, "no report");
  char text[8192] = {0};
  cr_assert(fread(text, 1, sizeof text - 1, f) > 0);
  fclose(f);
  // conv1: 108 -> 54 weights, 27648 -> 13824 FLOPs; fc2 keeps its rows but loses 5 columns.
  cr_expect(
      strstr(text, "| conv1 | Conv | 108 | 54 | 54 | 50.0 % | 27648 | 13824 | filters 6 -> 3 |"),
      "%s", text);
  cr_expect(strstr(text, "| fc2 | Gemm | 40 | 20 | 20 | 50.0 % |"), "%s", text);
  cr_expect(strstr(text, "skipped: its output reaches the graph output y"), "%s", text);
  cr_expect(strstr(text, "params 940 -> 284"), "%s", text);
  run_result_free(&r);
  free(report);
}

static void expect_error(const char *model, const char *const *args, const char *message) {
  run_result r = prune_cmd(model, "e.json", args);
  cr_expect_eq(r.status, 2, "status %d for '%s': %s", r.status, message, r.err);
  cr_expect(strstr(r.err, message), "want '%s' in: %s", message, r.err);
  run_result_free(&r);
}

Test(prune, bad_input_exits_2) {
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "1", NULL},
               "--sparsity 1: expected a number in [0, 1)");
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "-0.1", NULL},
               "--sparsity -0.1: expected");
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "half", NULL},
               "--sparsity half: expected");
  expect_error(NET_MODEL, (const char *[]){NULL}, "--sparsity: expected a number");
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "0.5", "--structured", "channels", NULL},
               "--structured channels: expected 'filters'");
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "0.5", "--bogus", NULL},
               "--bogus: expected");
  expect_error(NET_MODEL,
               (const char *[]){"--sparsity", "0.5", "--structured", "filters", "--global", NULL},
               "--global: expected --layerwise");
  expect_error(NET_MODEL, (const char *[]){"--sparsity", "0.5", "--weights", "w.npy", NULL},
               "--weights w.npy: expected a .safetensors file");
  expect_error(KILN_TEST_GOLDENS_DIR "/prune/missing.json",
               (const char *[]){"--sparsity", "0.5", NULL}, "missing.json");
  // Every layer of the residual block is skipped, each with its reason.
  expect_error(RES_MODEL, (const char *[]){"--sparsity", "0.5", "--structured", "filters", NULL},
               "model.json: error: nothing to prune by filters");
  expect_error(RES_MODEL, (const char *[]){"--sparsity", "0.5", "--structured", "filters", NULL},
               "c1 (Conv): its output feeds Add residual");
}

Test(prune, a_model_without_layers_is_refused) {
  char *model = path_join(dir, "relu.json");
  FILE *f = fopen(model, "w");
  cr_assert(f);
  fputs(
      "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"relu\",\n"
      " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [2]}],\n"
      " \"outputs\": [{\"name\": \"y\"}],\n"
      " \"nodes\": [{\"op\": \"Relu\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]}]}\n",
      f);
  fclose(f);
  expect_error(model, (const char *[]){"--sparsity", "0.5", NULL},
               "relu.json: error: nothing to prune");
  free(model);
}

// An ONNX model is pruned from its imported document (Conv -> Relu -> MaxPool -> Flatten ->
// Gemm: 4 filters -> 2, the Gemm's 64 columns -> 32), and the result loads.
Test(prune, onnx_models_prune_too) {
  const char *args[] = {"--sparsity", "0.5", "--structured", "filters", NULL};
  prune_ok(KILN_SOURCE_DIR "/tests/onnx/fixtures/tiny_conv.onnx", "o.json", args);
  char *out = path_join(dir, "o.json");
  kiln_graph *g = model_or_fail(out);
  int64_t params = 0;
  for (int t = 0; t < g->n_tensors; t++)
    if (g->tensors[t].kind == KILN_TENSOR_PARAM) params += kiln_shape_numel(&g->tensors[t].shape);
  cr_expect_eq(params, 54 + 2 + 160 + 5, "%ld params", (long)params);
  kiln_graph_free(g);
  free(out);
}

// select-layout (compiler/passes/select_layout.c): which convolutions run in the blocked NCHWc
// layout (and the MaxPools between them) and where the Reorders go, on small models; and that the
// blocked build computes the same bits as the planar one (the kernels' own numerics are the op
// goldens' job: tests/goldens/ops/layout_*, tools/goldens_layout.py). Then select-conv-algo
// (compiler/passes/select_conv_algo.c): which blocked convolutions run Winograd, and the build
// with it on and off against the interpreter (goldens: tests/goldens/ops/winograd_*).
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "../compiler/passes/pipeline.h"
#include "test_util.h"

TestSuite(layout, .fini = check_leaks);

// x (1, C, 8, 8) -> conv a (C -> M, 3x3, pad 1) -> Relu -> conv b (M -> M) + x -> Relu
// -> MaxPool 2x2 -> y. Weights: seeded uniform inits. With C = M = 16 both convs chain (conv b's
// residual is x, blocked once for both); the MaxPool runs on conv b's NCHWc output, y is its
// planar form.
static char *chain_model_of(int C, int M) {
  static char json[4096];
  snprintf(json, sizeof(json),
           "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"chain\",\n"
           " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, %d, 8, 8]}],\n"
           " \"outputs\": [{\"name\": \"y\", \"dtype\": \"f32\", \"shape\": [1, %d, 4, 4]}],\n"
           " \"params\": [\n"
           "  {\"name\": \"wa\", \"dtype\": \"f32\", \"shape\": [%d, %d, 3, 3], \"init\": "
           "{\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 1}},\n"
           "  {\"name\": \"ba\", \"dtype\": \"f32\", \"shape\": [%d], \"init\": {\"kind\": "
           "\"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 2}},\n"
           "  {\"name\": \"wb\", \"dtype\": \"f32\", \"shape\": [%d, %d, 3, 3], \"init\": "
           "{\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 3}}],\n"
           " \"nodes\": [\n"
           "  {\"op\": \"Conv\", \"name\": \"a\", \"inputs\": [\"x\", \"wa\", \"ba\"], "
           "\"outputs\": [\"ya\"], \"attrs\": {\"pads\": [1, 1, 1, 1]}},\n"
           "  {\"op\": \"Relu\", \"name\": \"ra\", \"inputs\": [\"ya\"], \"outputs\": [\"za\"]},\n"
           "  {\"op\": \"Conv\", \"name\": \"b\", \"inputs\": [\"za\", \"wb\"], \"outputs\": "
           "[\"yb\"], \"attrs\": {\"pads\": [1, 1, 1, 1]}},\n"
           "  {\"op\": \"Add\", \"name\": \"add\", \"inputs\": [\"yb\", \"%s\"], \"outputs\": "
           "[\"s\"]},\n"
           "  {\"op\": \"Relu\", \"name\": \"rb\", \"inputs\": [\"s\"], \"outputs\": [\"zb\"]},\n"
           "  {\"op\": \"MaxPool\", \"name\": \"pool\", \"inputs\": [\"zb\"], \"outputs\": "
           "[\"y\"], \"attrs\": {\"kernel_shape\": [2, 2], \"strides\": [2, 2]}}]}\n",
           C, M, M, C, M, M, M, C == M ? "x" : "za");
  return json;
}

static char *chain_model(int C) { return chain_model_of(C, 16); }

static char *write_model(const char *dir, const char *json) {
  char *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  cr_assert(f && fputs(json, f) >= 0 && fclose(f) == 0);
  return path;
}

// The graph after the graph passes, compiled for 16 lanes whatever this machine has, with pass
// `off` turned off (NULL: none).
static kiln_compilation compile_graph_without(const char *path, const char *off) {
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_graph *g = kiln_load_model(path, &d);
  cr_assert(g, "the model does not load");
  kiln_compilation c;
  kiln_compilation_init(&c, g);
  c.f32_lanes = 16;
  c.stop_after = "dce";
  if (off) c.disabled[c.n_disabled++] = off;
  cr_assert(kiln_compile_pipeline(&c, &d));
  return c;
}

static kiln_compilation compile_graph(const char *path) {
  return compile_graph_without(path, NULL);
}

static int count(const kiln_graph *g, int op, const char *layout) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += g->nodes[i].op == op &&
         (!layout || strcmp(kiln_attr_string(&g->nodes[i], "layout", ""), layout) == 0);
  return n;
}

Test(layout, a_chain_runs_blocked_with_one_reorder_per_border) {
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model(16));
  kiln_compilation c = compile_graph(path);
  cr_expect_eq(count(c.g, KILN_OP_FusedConv, "NCHWc"), 2, "both convolutions should be blocked");
  // x is blocked once (conv a's input and conv b's residual); the MaxPool reads and writes
  // NCHWc, and its output is unblocked for y.
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHWc"), 1);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHW"), 1);
  cr_expect_eq(count(c.g, KILN_OP_MaxPool, "NCHWc"), 1, "the MaxPool should run blocked");
  for (int i = 0; i < c.g->n_nodes; i++)
    if (c.g->nodes[i].op == KILN_OP_MaxPool)
      cr_expect_eq(kiln_in(c.g, &c.g->nodes[i], 0)->shape.rank, 5, "MaxPool must read NCHWc");
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(dir), free(path);
}

Test(layout, a_stem_reads_planar_and_writes_the_chain_blocked) {
  // 3 input channels: conv a cannot read NCHWc, but its 16 output channels can be written so for
  // conv b (input_layout "NCHW"): no Reorder into the chain, one out of it (for the MaxPool).
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model(3));
  kiln_compilation c = compile_graph(path);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHWc"), 0);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHW"), 1);
  cr_expect_eq(count(c.g, KILN_OP_FusedConv, "NCHWc"), 2);
  for (int i = 0; i < c.g->n_nodes; i++)
    if (strcmp(c.g->nodes[i].name, "a") == 0)
      cr_expect_str_eq(kiln_attr_string(&c.g->nodes[i], "input_layout", ""), "NCHW");
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(dir), free(path);
}

// Builds (for `target`) and runs the model on x (exe.npy beside it), with pass `off` turned off
// (NULL: none).
static void run_built(const char *dir, const char *model, const char *exe, const char *x,
                      const char *target, const char *off) {
  char *bin = path_join(dir, exe), y[600];
  char *build[] = {KILN_EXE,    "build",    (char *)model,  "-o",
                   bin,         "--target", (char *)target, off ? "--disable-pass" : NULL,
                   (char *)off, NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build failed: %s", r.err);
  run_result_free(&r);
  snprintf(y, sizeof(y), "%s.npy", bin);
  char *run[] = {bin, "--input", (char *)x, "--output", y, NULL};
  r = run_cmd(run, 60);
  cr_assert_eq(r.status, 0, "%s failed: %s", bin, r.err);
  run_result_free(&r);
  free(bin);
}

// x (1, C, 8, 8) = sin(0.61 i), written to dir/x.npy (returned; xa keeps the values).
static char *write_input(const char *dir, int C, kiln_array *xa) {
  char *x = path_join(dir, "x.npy");
  *xa = (kiln_array){.dtype = KILN_F32, .rank = 4, .shape = {1, C, 8, 8}};
  xa->nbytes = (size_t)C * 64 * sizeof(float);
  xa->data = kiln_aligned_alloc(xa->nbytes);
  for (int i = 0; i < C * 64; i++) kiln_element_set(xa->data, xa->dtype, i, sin(0.61 * i));
  char err[256];
  cr_assert_eq(kiln_npy_write(x, xa, err, sizeof err), 0, "%s", err);
  return x;
}

// The output in `out` against the reference interpreter on the model as written (1e-5 abs + rel).
static void expect_interpreter_close(const char *model, const kiln_array *xa, const char *out) {
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_graph *g = kiln_load_model(model, &d);
  kiln_array want, got = read_npy_or_fail(out);
  cr_assert(kiln_interp_run(g, xa, &want, &d));
  char why[512];
  cr_expect(arrays_close(&got, &want, 1e-5, 1e-5, why, sizeof why), "%s: %s", out, why);
  kiln_array_free(&want), kiln_array_free(&got);
  kiln_graph_free(g);
}

Test(layout, blocked_build_equals_planar_build_bit_for_bit) {
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model(16));
  kiln_array xa;
  char *x = write_input(dir, 16, &xa);
  run_built(dir, path, "blocked", x, "native", NULL);
  run_built(dir, path, "planar", x, "native", "select-layout");
  char *a = path_join(dir, "blocked.npy"), *b = path_join(dir, "planar.npy");
  cr_expect(files_equal(a, b), "the NCHWc build changed the output bits");
  expect_interpreter_close(path, &xa, a);  // and both against the reference interpreter
  kiln_aligned_free(xa.data);
  rm_rf(dir);
  free(dir), free(path), free(x), free(a), free(b);
}

// ResNet's stem: x (1, 3, 8, 8) -> conv s (3 -> 16, 3x3, pad 1) -> Relu -> MaxPool 3x3/2 pad 1
// -> conv t (16 -> 16, 3x3, pad 1) -> y (1, 16, 4, 4).
static const char stem_model[] =
    "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"stem\",\n"
    " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, 3, 8, 8]}],\n"
    " \"outputs\": [{\"name\": \"y\", \"dtype\": \"f32\", \"shape\": [1, 16, 4, 4]}],\n"
    " \"params\": [\n"
    "  {\"name\": \"ws\", \"dtype\": \"f32\", \"shape\": [16, 3, 3, 3], \"init\": "
    "{\"kind\": \"uniform\", \"low\": -0.3, \"high\": 0.3, \"seed\": 1}},\n"
    "  {\"name\": \"wt\", \"dtype\": \"f32\", \"shape\": [16, 16, 3, 3], \"init\": "
    "{\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 2}}],\n"
    " \"nodes\": [\n"
    "  {\"op\": \"Conv\", \"name\": \"s\", \"inputs\": [\"x\", \"ws\"], \"outputs\": [\"ys\"], "
    "\"attrs\": {\"pads\": [1, 1, 1, 1]}},\n"
    "  {\"op\": \"Relu\", \"name\": \"r\", \"inputs\": [\"ys\"], \"outputs\": [\"zs\"]},\n"
    "  {\"op\": \"MaxPool\", \"name\": \"pool\", \"inputs\": [\"zs\"], \"outputs\": [\"p\"], "
    "\"attrs\": {\"kernel_shape\": [3, 3], \"strides\": [2, 2], \"pads\": [1, 1, 1, 1]}},\n"
    "  {\"op\": \"Conv\", \"name\": \"t\", \"inputs\": [\"p\", \"wt\"], \"outputs\": [\"y\"], "
    "\"attrs\": {\"pads\": [1, 1, 1, 1]}}]}\n";

Test(layout, a_stems_maxpool_runs_blocked_between_the_stem_and_the_chain) {
  // The stem writes NCHWc because a blocked conv reads its output through the MaxPool, which
  // runs on NCHWc: no Reorder before conv t, one after it (y); the build against the interpreter.
  char *dir = make_temp_dir(), *path = write_model(dir, stem_model);
  kiln_compilation c = compile_graph(path);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHWc"), 0);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHW"), 1);
  cr_expect_eq(count(c.g, KILN_OP_MaxPool, "NCHWc"), 1, "the MaxPool should run blocked");
  cr_expect_eq(count(c.g, KILN_OP_FusedConv, "NCHWc"), 2);
  kiln_compilation_free(&c);
  kiln_array xa;
  char *x = write_input(dir, 3, &xa), *out = path_join(dir, "stem.npy");
  run_built(dir, path, "stem", x, "native", NULL);
  expect_interpreter_close(path, &xa, out);
  kiln_aligned_free(xa.data);
  rm_rf(dir);
  free(dir), free(path), free(x), free(out);
}

// ---- select-conv-algo (compiler/passes/select_conv_algo.c): Winograd F(2x2, 3x3) ----

static int count_winograd(const kiln_graph *g) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    n += strcmp(kiln_attr_string(&g->nodes[i], "algo", ""), "winograd") == 0;
  return n;
}

// The graph of chain_model_of(C, M) with pass `off` turned off: how many convs run Winograd.
static int winograd_convs(int C, int M, const char *off) {
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model_of(C, M));
  kiln_compilation c = compile_graph_without(path, off);
  int n = count_winograd(c.g);
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(dir), free(path);
  return n;
}

Test(layout, winograd_for_blocked_3x3_convs_with_32_channels_or_more) {
  cr_expect_eq(winograd_convs(32, 32, NULL), 2, "both 3x3 convs of a 32-channel chain");
  cr_expect_eq(winograd_convs(32, 32, "select-conv-algo"), 0, "the pass is off");
  cr_expect_eq(winograd_convs(32, 32, "select-layout"), 0, "planar convs run direct");
  cr_expect_eq(winograd_convs(16, 16, NULL), 0, "16 channels: the transforms cost too much");
  // 16 tiles (8x8) and U of 16 * 192 * 192 floats (2.4 MB): streamed every run, direct is faster
  cr_expect_eq(winograd_convs(192, 192, NULL), 0, "few tiles, large weights: direct");
}

// The Winograd build and the direct one both within the tolerance of the interpreter (not bit
// for bit: Winograd sums in another order). The generic target (4 lanes): the same on every
// machine, and one the pass picks Winograd for (on AVX2 it does not).
Test(layout, winograd_build_matches_the_interpreter_as_the_direct_one_does) {
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model_of(32, 32));
  kiln_array xa;
  char *x = write_input(dir, 32, &xa);
  run_built(dir, path, "winograd", x, "generic", NULL);
  run_built(dir, path, "direct", x, "generic", "select-conv-algo");
  char *a = path_join(dir, "winograd.npy"), *b = path_join(dir, "direct.npy");
  expect_interpreter_close(path, &xa, a);
  expect_interpreter_close(path, &xa, b);
  cr_expect(!files_equal(a, b), "the same bits: did the Winograd build run Winograd?");
  kiln_aligned_free(xa.data);
  rm_rf(dir);
  free(dir), free(path), free(x), free(a), free(b);
}

// select-layout (compiler/passes/select_layout.c): which convolutions run in the blocked NCHWc
// layout and where the Reorders go, on small models; and that the blocked build computes the same
// bits as the planar one (the kernels' own numerics are the op goldens' job:
// tests/goldens/ops/layout_*, tools/goldens_layout.py).
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

// x (1, C, 8, 8) -> conv a (C -> 16, 3x3, pad 1) -> Relu -> conv b (16 -> 16) + x -> Relu
// -> MaxPool 2x2 -> y. Weights: seeded uniform inits. With C = 16 both convs chain (conv b's
// residual is x, blocked once for both); the MaxPool reads the planar form.
static char *chain_model(int C) {
  static char json[4096];
  snprintf(json, sizeof(json),
           "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"chain\",\n"
           " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, %d, 8, 8]}],\n"
           " \"outputs\": [{\"name\": \"y\", \"dtype\": \"f32\", \"shape\": [1, 16, 4, 4]}],\n"
           " \"params\": [\n"
           "  {\"name\": \"wa\", \"dtype\": \"f32\", \"shape\": [16, %d, 3, 3], \"init\": "
           "{\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 1}},\n"
           "  {\"name\": \"ba\", \"dtype\": \"f32\", \"shape\": [16], \"init\": {\"kind\": "
           "\"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 2}},\n"
           "  {\"name\": \"wb\", \"dtype\": \"f32\", \"shape\": [16, 16, 3, 3], \"init\": "
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
           C, C, C == 16 ? "x" : "za");
  return json;
}

static char *write_model(const char *dir, const char *json) {
  char *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  cr_assert(f && fputs(json, f) >= 0 && fclose(f) == 0);
  return path;
}

// The graph after the graph passes, compiled for 16 lanes whatever this machine has.
static kiln_compilation compile_graph(const char *path) {
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_graph *g = kiln_load_model(path, &d);
  cr_assert(g, "the model does not load");
  kiln_compilation c;
  kiln_compilation_init(&c, g);
  c.f32_lanes = 16;
  c.stop_after = "dce";
  cr_assert(kiln_compile_pipeline(&c, &d));
  return c;
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
  // x is blocked once (conv a's input and conv b's residual); zb is unblocked for the MaxPool.
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHWc"), 1);
  cr_expect_eq(count(c.g, KILN_OP_Reorder, "NCHW"), 1);
  for (int i = 0; i < c.g->n_nodes; i++)
    if (c.g->nodes[i].op == KILN_OP_MaxPool)
      cr_expect_eq(kiln_in(c.g, &c.g->nodes[i], 0)->shape.rank, 4, "MaxPool must read NCHW");
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

static void run_built(const char *dir, const char *model, const char *exe, const char *x,
                      const char *extra) {
  char *bin = path_join(dir, exe), y[600];
  char *build[] = {
      KILN_EXE, "build", (char *)model, "-o", bin, (char *)extra, extra ? "select-layout" : NULL,
      NULL};
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

Test(layout, blocked_build_equals_planar_build_bit_for_bit) {
  char *dir = make_temp_dir(), *path = write_model(dir, chain_model(16));
  char *x = path_join(dir, "x.npy");
  kiln_array xa = {.dtype = KILN_F32, .rank = 4, .shape = {1, 16, 8, 8}};
  xa.nbytes = 1024 * sizeof(float);
  xa.data = kiln_aligned_alloc(xa.nbytes);
  for (int i = 0; i < 1024; i++) kiln_element_set(xa.data, xa.dtype, i, sin(0.61 * i));
  char err[256];
  cr_assert_eq(kiln_npy_write(x, &xa, err, sizeof err), 0, "%s", err);
  run_built(dir, path, "blocked", x, NULL);
  run_built(dir, path, "planar", x, "--disable-pass");
  char *a = path_join(dir, "blocked.npy"), *b = path_join(dir, "planar.npy");
  cr_expect(files_equal(a, b), "the NCHWc build changed the output bits");
  // And both against the reference interpreter on the model as written.
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_graph *g = kiln_load_model(path, &d);
  kiln_array want, got = read_npy_or_fail(a);
  cr_assert(kiln_interp_run(g, &xa, &want, &d));
  char why[512];
  cr_expect(arrays_close(&got, &want, 1e-5, 1e-5, why, sizeof why), "%s", why);
  kiln_array_free(&want), kiln_array_free(&got), kiln_aligned_free(xa.data);
  kiln_graph_free(g);
  rm_rf(dir);
  free(dir), free(path), free(x), free(a), free(b);
}

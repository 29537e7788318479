// Fast kernels: the fuse-epilogue pass (before/expected graphs), the register-blocked Conv
// lowering (loop IR shape, generated C) and the agreement of every target and of fusion on/off
// with the reference interpreter, on a small ResNet-style block whose shapes reach the lowering's
// edge cases (24 channels: a partly padded vector; 9 columns: one narrow tile; padding; 1x1).
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "../compiler/passes/pipeline.h"
#include "../runtime/kiln_runtime.h"
#include "sample_util.h"

TestSuite(kernels, .fini = check_leaks);

// A JSON list of count values of a smooth, sign-varying sequence, scaled by `scale`.
static void put_values(char *buf, size_t size, int count, int seed, double scale) {
  size_t len = strlen(buf);
  len += (size_t)snprintf(buf + len, size - len, "[");
  for (int i = 0; i < count && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%.6f", i ? "," : "",
                            scale * sin(0.61 * (i + 1) + 1.3 * seed));
  snprintf(buf + len, size - len, "]");
}

static void put_param(char *buf, size_t size, const char *name, const char *shape, int count,
                      int seed, double scale) {
  size_t len = strlen(buf);
  snprintf(buf + len, size - len,
           "%s{\"name\":\"%s\",\"dtype\":\"f32\",\"shape\":%s,\"init\":{\"kind\":\"values\","
           "\"values\":",
           seed == 1 ? "" : ",", name, shape);
  put_values(buf, size, count, seed, scale);
  strncat(buf, "}}", size - strlen(buf) - 1);
}

// x (1, 8, 9, 9) -> conv1 (24, 8, 3, 3) pad 1 + b1 -> c1 -> Relu -> r1
//   r1 -> conv2 (24, 24, 3, 3) pad 1 -> c2;  Add(c2, r1) -> s -> Relu -> y
//   r1 -> conv3 (16, 24, 1, 1) -> t (a graph output: nothing to fuse)
// With `c2_output`, c2 is a graph output as well.
// hw: the input plane's height and width (9 in most tests).
static char *block_model(bool c2_output, int hw) {
  size_t size = 1 << 17;
  char *m = calloc(size, 1);
  snprintf(m, size,
           "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"block\","
           "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[1,8,%d,%d]}],"
           "\"outputs\":[{\"name\":\"y\"},{\"name\":\"t\"}%s],\"params\":[",
           hw, hw, c2_output ? ",{\"name\":\"c2\"}" : "");
  put_param(m, size, "w1", "[24,8,3,3]", 24 * 8 * 9, 1, 0.2);
  put_param(m, size, "b1", "[24]", 24, 2, 0.5);
  put_param(m, size, "w2", "[24,24,3,3]", 24 * 24 * 9, 3, 0.1);
  put_param(m, size, "w3", "[16,24,1,1]", 16 * 24, 4, 0.3);
  strncat(
      m,
      "],\"nodes\":["
      "{\"op\":\"Conv\",\"name\":\"conv1\",\"inputs\":[\"x\",\"w1\",\"b1\"],\"outputs\":[\"c1\"],"
      "\"attrs\":{\"pads\":[1,1,1,1]}},"
      "{\"op\":\"Relu\",\"name\":\"relu1\",\"inputs\":[\"c1\"],\"outputs\":[\"r1\"]},"
      "{\"op\":\"Conv\",\"name\":\"conv2\",\"inputs\":[\"r1\",\"w2\"],\"outputs\":[\"c2\"],"
      "\"attrs\":{\"pads\":[1,1,1,1]}},"
      "{\"op\":\"Add\",\"name\":\"add\",\"inputs\":[\"c2\",\"r1\"],\"outputs\":[\"s\"]},"
      "{\"op\":\"Relu\",\"name\":\"relu2\",\"inputs\":[\"s\"],\"outputs\":[\"y\"]},"
      "{\"op\":\"Conv\",\"name\":\"conv3\",\"inputs\":[\"r1\",\"w3\"],\"outputs\":[\"t\"]}]}",
      size - strlen(m) - 1);
  return m;
}

static char *write_text(const char *dir, const char *name, const char *text) {
  char *path = path_join(dir, name);
  FILE *f = fopen(path, "w");
  cr_assert(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
  return path;
}

// Runs the pipeline up to and including `stop` (NULL: all of it).
// Blocked for AVX-512's 16 f32 lanes unless lanes says otherwise (not this machine's width).
static int lanes = 16;
static void compile_until(kiln_compilation *c, kiln_graph *g, const char *stop) {
  kiln_compilation_init(c, g);
  c->f32_lanes = lanes;
  c->stop_after = stop;
  kiln_diag d;
  kiln_diag_init(&d, "test");
  cr_assert(kiln_compile_pipeline(c, &d));
}

static const kiln_node *node_named(const kiln_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead && strcmp(g->nodes[i].name, name) == 0) return &g->nodes[i];
  return NULL;
}

static const char *input_name(const kiln_graph *g, const kiln_node *n, int i) {
  return i < n->n_inputs && n->inputs[i] >= 0 ? g->tensors[n->inputs[i]].name : "";
}

Test(kernels, fuse_epilogue_folds_relu_and_residual) {
  char *dir = make_temp_dir(), *json = block_model(false, 9);
  char *model = write_text(dir, "block.json", json);
  kiln_compilation c;
  compile_until(&c, model_or_fail(model), "fuse-epilogue");
  const kiln_graph *g = c.g;
  // Expected: conv1 = FusedConv(x, w1, b1, activation Relu) -> r1;
  //           conv2 = FusedConv(r1, w2, -, r1, activation Relu) -> y;  conv3 = Conv -> t.
  cr_expect_eq(g->n_nodes, 3, "3 nodes expected, got %d", g->n_nodes);
  const kiln_node *c1 = node_named(g, "conv1"), *c2 = node_named(g, "conv2");
  const kiln_node *c3 = node_named(g, "conv3");
  cr_assert(c1 && c2 && c3, "a convolution disappeared");
  cr_expect_eq(c1->op, KILN_OP_FusedConv);
  cr_expect_str_eq(kiln_attr_string(c1, "activation", ""), "Relu");
  cr_expect_str_eq(g->tensors[c1->outputs[0]].name, "r1");
  cr_expect_eq(c1->n_inputs, 3);
  cr_expect_eq(c2->op, KILN_OP_FusedConv);
  cr_expect_eq(c2->n_inputs, 4);
  cr_expect_str_eq(input_name(g, c2, 0), "r1");
  cr_expect_str_eq(input_name(g, c2, 2), "");
  cr_expect_str_eq(input_name(g, c2, 3), "r1", "the residual is the Add's other operand");
  cr_expect_str_eq(kiln_attr_string(c2, "activation", ""), "Relu");
  cr_expect_str_eq(g->tensors[c2->outputs[0]].name, "y");
  cr_expect_eq(c3->op, KILN_OP_Conv, "conv3 writes a graph output and has no epilogue");
  for (int i = 0; i < g->n_nodes; i++)
    cr_expect(g->nodes[i].op != KILN_OP_Add && g->nodes[i].op != KILN_OP_Relu, "%s stayed",
              g->nodes[i].name);
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(model), free(json), free(dir);
}

Test(kernels, fuse_epilogue_keeps_a_conv_output_read_twice) {
  // c2 is a graph output too: the Add must stay, and the Relu after it (s is no conv's output).
  char *dir = make_temp_dir(), *json = block_model(true, 9);
  char *model = write_text(dir, "block.json", json);
  kiln_compilation c;
  kiln_graph *g = model_or_fail(model);
  compile_until(&c, g, "fuse-epilogue");
  cr_expect_eq(node_named(c.g, "conv2")->op, KILN_OP_Conv);
  cr_expect(node_named(c.g, "add"), "the Add was fused although c2 is an output");
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(model), free(json), free(dir);
}

// x (2, 4) -> fc1 (Gemm) -> Tanh -> t; t -> fc2 (Gemm, transB) -> Relu -> r (r is also read by
// fc4); r -> fc3 -> LeakyRelu -> y1; fc4's output g4 is read by Sigmoid and by an Add.
static const char *gemm_model =
    "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"gemms\","
    "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[2,4]}],"
    "\"outputs\":[{\"name\":\"y1\",\"dtype\":\"f32\",\"shape\":[2,4]},"
    "{\"name\":\"y2\",\"dtype\":\"f32\",\"shape\":[2,4]}],"
    "\"params\":[{\"name\":\"w\",\"dtype\":\"f32\",\"shape\":[4,4],"
    "\"init\":{\"kind\":\"normal\",\"std\":0.5,\"seed\":1}},"
    "{\"name\":\"b\",\"dtype\":\"f32\",\"shape\":[4],"
    "\"init\":{\"kind\":\"normal\",\"std\":0.5,\"seed\":2}}],"
    "\"nodes\":[{\"op\":\"Gemm\",\"name\":\"fc1\",\"inputs\":[\"x\",\"w\",\"b\"],"
    "\"outputs\":[\"g1\"]},"
    "{\"op\":\"Tanh\",\"name\":\"tanh\",\"inputs\":[\"g1\"],\"outputs\":[\"t\"]},"
    "{\"op\":\"Gemm\",\"name\":\"fc2\",\"inputs\":[\"t\",\"w\"],\"outputs\":[\"g2\"],"
    "\"attrs\":{\"transB\":1}},"
    "{\"op\":\"Relu\",\"name\":\"relu\",\"inputs\":[\"g2\"],\"outputs\":[\"r\"]},"
    "{\"op\":\"Gemm\",\"name\":\"fc3\",\"inputs\":[\"r\",\"w\"],\"outputs\":[\"g3\"]},"
    "{\"op\":\"LeakyRelu\",\"name\":\"leaky\",\"inputs\":[\"g3\"],\"outputs\":[\"y1\"]},"
    "{\"op\":\"Gemm\",\"name\":\"fc4\",\"inputs\":[\"r\",\"w\"],\"outputs\":[\"g4\"],"
    "\"attrs\":{\"alpha\":2.0}},"
    "{\"op\":\"Sigmoid\",\"name\":\"sig\",\"inputs\":[\"g4\"],\"outputs\":[\"s\"]},"
    "{\"op\":\"Add\",\"name\":\"add\",\"inputs\":[\"s\",\"g4\"],\"outputs\":[\"y2\"]}]}";

Test(kernels, fuse_epilogue_folds_gemm_activations) {
  char *dir = make_temp_dir(), *model = write_text(dir, "gemms.json", gemm_model);
  kiln_compilation c;
  compile_until(&c, model_or_fail(model), "fuse-epilogue");
  const kiln_graph *g = c.g;
  // Expected: fc1 = FusedGemm(Tanh) -> t; fc2 = FusedGemm(Relu) -> r; fc3 and LeakyRelu (an
  // activation with an attribute) unchanged; fc4 read twice, so Sigmoid stays.
  const kiln_node *fc[4] = {node_named(g, "fc1"), node_named(g, "fc2"), node_named(g, "fc3"),
                            node_named(g, "fc4")};
  for (int i = 0; i < 4; i++) cr_assert(fc[i], "fc%d disappeared", i + 1);
  cr_expect_eq(fc[0]->op, KILN_OP_FusedGemm);
  cr_expect_str_eq(kiln_attr_string(fc[0], "activation", ""), "Tanh");
  cr_expect_str_eq(g->tensors[fc[0]->outputs[0]].name, "t");
  cr_expect_eq(fc[1]->op, KILN_OP_FusedGemm);
  cr_expect_str_eq(kiln_attr_string(fc[1], "activation", ""), "Relu");
  cr_expect_eq(kiln_attr_int(fc[1], "transB", 0), 1, "the Gemm's attributes are kept");
  cr_expect_str_eq(g->tensors[fc[1]->outputs[0]].name, "r");
  cr_expect_eq(fc[2]->op, KILN_OP_Gemm);
  cr_expect(node_named(g, "leaky"), "LeakyRelu has an attribute and must stay");
  cr_expect_eq(fc[3]->op, KILN_OP_Gemm);
  cr_expect(node_named(g, "sig"), "g4 has two readers: Sigmoid must stay");
  cr_expect(!node_named(g, "tanh") && !node_named(g, "relu"), "a fused activation stayed");
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(model), free(dir);
}

// conv1 -> Clip(lo, hi params) -> y1 (ReLU6); conv2 -> Clip(x, hi: an input) -> y2.
static const char *clip_model =
    "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"clips\","
    "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[1,2,4,4]},"
    "{\"name\":\"top\",\"dtype\":\"f32\",\"shape\":[1]}],"
    "\"outputs\":[{\"name\":\"y1\",\"dtype\":\"f32\",\"shape\":[1,2,4,4]},"
    "{\"name\":\"y2\",\"dtype\":\"f32\",\"shape\":[1,2,4,4]}],"
    "\"params\":[{\"name\":\"w\",\"dtype\":\"f32\",\"shape\":[2,2,1,1],"
    "\"init\":{\"kind\":\"normal\",\"seed\":1}},"
    "{\"name\":\"lo\",\"dtype\":\"f32\",\"shape\":[1],\"init\":{\"kind\":\"zeros\"}},"
    "{\"name\":\"hi\",\"dtype\":\"f32\",\"shape\":[1],"
    "\"init\":{\"kind\":\"constant\",\"value\":6}}],"
    "\"nodes\":[{\"op\":\"Conv\",\"name\":\"conv1\",\"inputs\":[\"x\",\"w\"],"
    "\"outputs\":[\"c1\"]},"
    "{\"op\":\"Clip\",\"name\":\"relu6\",\"inputs\":[\"c1\",\"lo\",\"hi\"],"
    "\"outputs\":[\"y1\"]},"
    "{\"op\":\"Conv\",\"name\":\"conv2\",\"inputs\":[\"y1\",\"w\"],\"outputs\":[\"c2\"]},"
    "{\"op\":\"Clip\",\"name\":\"clip_top\",\"inputs\":[\"c2\",\"lo\",\"top\"],"
    "\"outputs\":[\"y2\"]}]}";

Test(kernels, fuse_epilogue_folds_constant_clip) {
  char *dir = make_temp_dir(), *model = write_text(dir, "clips.json", clip_model);
  kiln_compilation c;
  compile_until(&c, model_or_fail(model), "fuse-epilogue");
  const kiln_graph *g = c.g;
  // Expected: conv1 = FusedConv(activation Clip, activation_params [0, 6]) -> y1; conv2 and
  // clip_top unchanged (a bound computed at run time).
  const kiln_node *c1 = node_named(g, "conv1"), *c2 = node_named(g, "conv2");
  cr_assert(c1 && c2, "a convolution disappeared");
  cr_expect_eq(c1->op, KILN_OP_FusedConv);
  cr_expect_str_eq(kiln_attr_string(c1, "activation", ""), "Clip");
  const kiln_attr *params = kiln_node_attr(c1, "activation_params");
  cr_assert(params && params->count == 2, "activation_params [min, max] expected");
  cr_expect(params->floats[0] == 0 && params->floats[1] == 6, "bounds %g, %g", params->floats[0],
            params->floats[1]);
  cr_expect_str_eq(g->tensors[c1->outputs[0]].name, "y1");
  cr_expect(!node_named(g, "relu6"), "the constant Clip stayed");
  cr_expect_eq(c2->op, KILN_OP_Conv);
  cr_expect(node_named(g, "clip_top"), "a Clip with a run-time bound was fused");
  kiln_compilation_free(&c);
  rm_rf(dir);
  free(model), free(dir);
}

// The loop IR of the model at `path` after the whole pipeline, as text (caller frees).
static char *compiled_loop_ir(const char *path) {
  kiln_compilation c;
  compile_until(&c, model_or_fail(path), NULL);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  kiln_lprog_print(c.prog, f);
  fclose(f);
  kiln_compilation_free(&c);
  return text;
}

// Every one of the n strings of want appears in the loop IR text.
static void expect_in_ir(const char *text, const char *const *want, size_t n) {
  for (size_t i = 0; i < n; i++)
    cr_expect(strstr(text, want[i]), "the loop IR lacks \"%s\":\n%s", want[i], text);
}

// The blocked lowering as the loop IR shows it: packed weights, a local accumulator array,
// unrolled register-block loops, vectorized lane loops, muladd, one parallel loop per conv — at
// 81 x 81 (9 columns per tile still divide the rows): at 9 x 9 the convs are too small for a
// thread team (the schedule pass keeps them serial).
Test(kernels, blocked_conv_loop_ir) {
  char *dir = make_temp_dir(), *json = block_model(false, 81);
  char *model = write_text(dir, "block.json", json);
  char *text = compiled_loop_ir(model);
  const char *want[] = {"buf conv1_wpacked: weight f32[2304]",  // 2 vectors x 8 x 3 x 3 x 16
                        "f32 acc[288]",                         // 9 columns x 2 vectors x 16
                        "unroll(9)",
                        "vectorize",
                        "muladd(xv",
                        "parallel",
                        "max("};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
  rm_rf(dir);
  free(model), free(json), free(dir);
}

// --target avx2: the same conv blocked by AVX2's 8 lanes: conv1's 24 channels are 3 vectors
// (no padding, where 16 lanes pad to 32), one vector per tile (odd count), 9 columns (<= 12
// accumulator vectors: 16 ymm registers).
Test(kernels, blocked_conv_follows_the_target_width) {
  char *dir = make_temp_dir(), *json = block_model(false, 9);
  char *model = write_text(dir, "block.json", json);
  lanes = 8;
  char *text = compiled_loop_ir(model);
  lanes = 16;
  const char *want[] = {"buf conv1_wpacked: weight f32[1728]",  // 3 vectors x 8 x 3 x 3 x 8
                        "f32 acc[72]",                          // 9 columns x 1 vector x 8
                        "blocked: 1 x 8 channels by 9 columns"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
  rm_rf(dir);
  free(model), free(json), free(dir);
}

// The loop IR of golden case `case_name` (tests/goldens/ops/<case_name>/model.json).
static char *golden_loop_ir(const char *case_name) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR, "ops"), *case_dir = path_join(dir, case_name);
  char *model = path_join(case_dir, "model.json");
  char *text = compiled_loop_ir(model);
  free(model), free(case_dir), free(dir);
  return text;
}

// A depthwise conv: the column loop is the vectorized one, its taps fully unrolled inside it, and
// the epilogue applied in the same loop.
Test(kernels, depthwise_conv_loop_ir) {
  char *text = golden_loop_ir("kernels_fused_dw_residual_relu");
  const char *want[] = {"depthwise: one output per lane, padded input",
                        "for ow in [0, 7) vectorize {", "for kh in [0, 3) unroll(3) {",
                        "acc = muladd(w[", "max((acc + z["};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
}

// The producer of input i of node n (NULL for a graph input).
static const kiln_node *producer_of(const kiln_graph *g, const kiln_node *n, int i) {
  int p = kiln_in(g, n, i)->producer;
  return p >= 0 ? &g->nodes[p] : NULL;
}

// select-layout on MobileNet-V2's pattern (golden case dw_chain_mobilenet: stem 3 -> 16, 1x1
// 16 -> 32, depthwise 32, 1x1 32 -> 24, depthwise 24, 1x1 24 -> 16): the pointwise -> depthwise
// -> pointwise chain runs in NCHWc with no Reorder at all — the stem reads planar x and writes
// NCHWc, the 1x1 32 -> 24 reads NCHWc and writes planar — and the depthwise conv takes the NCHWc
// kernel; with 24 channels (no multiple of 16) the other one falls back to the planar kernel.
Test(kernels, depthwise_conv_stays_in_a_blocked_chain) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR, "ops/dw_chain_mobilenet");
  char *model = path_join(dir, "model.json");
  kiln_compilation c;
  compile_until(&c, model_or_fail(model), "dce");
  const kiln_graph *g = c.g;
  const kiln_node *dw = node_named(g, "dw32"), *pw = node_named(g, "pw24");
  cr_assert(dw && pw, "a convolution disappeared");
  cr_expect_str_eq(kiln_attr_string(dw, "layout", ""), "NCHWc");
  cr_expect_str_eq(kiln_attr_string(dw, "activation", ""), "Clip", "ReLU6 fused");
  const kiln_node *into_dw = producer_of(g, dw, 0), *into_pw = producer_of(g, pw, 0);
  cr_expect(into_dw && strcmp(into_dw->name, "pw32") == 0, "dw32 reads %s",
            into_dw ? into_dw->name : "a graph input");
  cr_expect(into_pw == dw, "pw24 reads %s", into_pw ? into_pw->name : "a graph input");
  cr_expect_str_eq(kiln_attr_string(pw, "input_layout", ""), "NCHWc");
  cr_expect_str_eq(kiln_attr_string(pw, "layout", ""), "NCHW");
  cr_expect_str_eq(kiln_attr_string(node_named(g, "stem"), "input_layout", ""), "NCHW");
  for (int i = 0; i < g->n_nodes; i++)
    cr_expect(g->nodes[i].dead || g->nodes[i].op != KILN_OP_Reorder, "a Reorder: %s",
              g->nodes[i].name);
  kiln_compilation_free(&c);
  char *text = compiled_loop_ir(model);
  const char *want[] = {
      "depthwise NCHWc: 16 channels by 7 columns per tile, padding checked at the border",
      "if ((1 <= oh) && (oh < 6))", "depthwise: one output per lane, padded input", "NCHW to NCHWc",
      "NCHWc to NCHW"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text), free(model), free(dir);
}

// A 1x1 conv takes 3 or 4 channel vectors per tile where they divide its vectors (AVX-512: 40
// channels = 3 vectors, 3 x 9 = 27 accumulators over the 49 flattened columns) — a 3x3 conv with
// an odd vector count keeps 1 (blocked_conv_follows_the_target_width); on AVX2's 12 accumulators
// 3 vectors would leave 4 columns, so it keeps 1 there too.
// The loop IR of golden case `case_name` at `at_lanes` f32 lanes (AVX2: 8) holds every want[i].
static void expect_in_golden_ir_at(const char *case_name, int at_lanes, const char *const *want,
                                   size_t n) {
  lanes = at_lanes;
  char *text = golden_loop_ir(case_name);
  lanes = 16;
  expect_in_ir(text, want, n);
  free(text);
}

Test(kernels, pointwise_conv_tiles_more_channel_vectors) {
  char *text = golden_loop_ir("kernels_conv_1x1_gemm");
  const char *want[] = {"blocked: 3 x 16 channels by 9 columns per tile", "f32 acc[432]"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
  const char *want8[] = {"blocked: 1 x 8 channels by"};
  expect_in_golden_ir_at("kernels_conv_1x1_gemm", 8, want8, sizeof want8 / sizeof *want8);
}

// A strided 1x1 conv reads x at the stride in place (no subsampled copy), over its own output
// rows; 4 channel vectors take 6 columns (4 x 7 = 28 accumulators, 4 weight vectors and the
// broadcast would need 33 of AVX-512's 32 registers), a tail tile the rest of the 26. Each tap's
// first column is x0, the others a constant offset from it; an NCHWc x is read by channel block
// and lane (no division per broadcast).
Test(kernels, strided_pointwise_conv_reads_x_in_place) {
  char *text = golden_loop_ir("kernels_conv_1x1_s3_wide");  // planar, stride 3, 7x77 -> 3x26
  const char *want[] = {"blocked: 4 x 16 channels by 6 columns per tile\n", "for tile in [0, 12) {",
                        "for tile_1 in [0, 3) {",
                        "i64 x0_1 = ((((((n * 16) + ic_1) * 7) + ((oh * 3) + kh_1)) * 77)",
                        "f32 xv_1 = x[((j_1 * 3) + x0_1)]"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  cr_expect(!strstr(text, "subsampled"), "a subsampled copy:\n%s", text);
  free(text);
  text = golden_loop_ir("layout_conv1x1_stride2_wide");  // NCHWc, stride 2, 5x51 -> 3x26
  const char *want_blocked[] = {"blocked: 4 x 16 channels by 6 columns per tile, NCHWc",
                                "for icb in [0, 2) {", "for ici in [(1 - min(icb, 1)), 16) {",
                                "i64 ic_1 = ((icb * 16) + ici)",
                                "f32 xv_1 = x.b[((j_1 * 32) + x0_1)]"};
  expect_in_ir(text, want_blocked, sizeof want_blocked / sizeof *want_blocked);
  cr_expect(!strstr(text, "subsampled"), "a subsampled copy:\n%s", text);
  free(text);
  // AVX2: 2 vectors of 6 columns (12 accumulators), in place too
  const char *want8[] = {"blocked: 2 x 8 channels by 6 columns per tile\n"};
  expect_in_golden_ir_at("kernels_conv_1x1_s3_wide", 8, want8, sizeof want8 / sizeof *want8);
}

// A tile's sums start from the bias at its first tap (no separate copy of the bias into the
// accumulators), then run over the rest of channel 0's first kernel row, its other rows and the
// other channels: the same terms in the same order.
Test(kernels, blocked_conv_tiles_start_from_the_bias) {
  char *text = golden_loop_ir("kernels_conv_m32_s2");  // 3x3, stride 2, padded
  static const char first_tap[] =
      "acc[((((j * 2) + r) * 16) + l)] = muladd(xv, conv_wpacked[((((((ob * 2) + r) * 72) + "
      "((((ic * 3) + kh) * 3) + kw)) * 16) + l)], conv_bpacked[((((ob * 2) + r) * 16) + l)])";
  const char *want[] = {"for ic in [0, 1) {\n      for kh in [0, 1) {\n        for kw in [0, 1) {",
                        first_tap, "for kw_1 in [1, 3) {", "for kh_2 in [1, 3) {",
                        "for ic_3 in [1, 8) {"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  cr_expect(!strstr(text, "= conv_bpacked["), "the bias copied into the accumulators:\n%s", text);
  free(text);
}

// A grouped conv whose groups fill whole vectors takes the blocked kernel (each tile within one
// group); one whose groups hold 3 output channels keeps the row lowering.
Test(kernels, grouped_conv_blocked_when_groups_fill_vectors) {
  char *text = golden_loop_ir("kernels_group2_m64_pad1");
  const char *want[] = {"blocked: 2 x 16 channels by 10 columns per tile, padded input",
                        "for ic_3 in [1, 4)"};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
  text = golden_loop_ir("kernels_fused_group2");
  cr_expect(!strstr(text, "blocked:"), "3 channels per group took the blocked kernel:\n%s", text);
  free(text);
}

// A pruned Gemm (B a param, 80% zeros, M = 1) reads only its non-zero weights; a dense param B
// keeps the dense kernel. (The values: the gemm_sparse_* golden cases in tests/test_ops.c.)
Test(kernels, sparse_gemm_only_for_mostly_zero_weights) {
  char *text = golden_loop_ir("gemm_sparse_dot");
  const char *want[] = {"B' is 80% zeros: its 365 non-zero weights compressed by column",
                        "n_start[", "n_nz_k[", "n_nz_w["};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
  char *dir = make_temp_dir(), *model = write_text(dir, "gemms.json", gemm_model);
  text = compiled_loop_ir(model);
  cr_expect(!strstr(text, "compressed by column"), "a dense B took the sparse kernel:\n%s", text);
  free(text);
  rm_rf(dir);
  free(model), free(dir);
}

// A 2-D MaxPool: the row form, output rows combined in place over clamped column ranges.
Test(kernels, maxpool_row_form_loop_ir) {
  char *text = golden_loop_ir("kernels_maxpool_3x3_s2_p1");
  const char *want[] = {"MaxPool maxpool (rows)", "i64 ow_lo = max(0, (((1 - kw) + 1) / 2))",
                        "y[((((nc * 7) + oh) * 7) + ow_1)] = max(y["};
  expect_in_ir(text, want, sizeof want / sizeof *want);
  free(text);
}

static kiln_array block_input(void) {
  kiln_array x = {.dtype = KILN_F32, .rank = 4, .shape = {1, 8, 9, 9}};
  x.nbytes = 8 * 81 * sizeof(float);
  x.data = kiln_aligned_alloc(x.nbytes);
  for (int i = 0; i < 8 * 81; i++) kiln_element_set(x.data, x.dtype, i, sin(0.23 * i) * 1.5);
  return x;
}

static bool cpu_can(const char *target) {
  __builtin_cpu_init();
  if (strcmp(target, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (strcmp(target, "avx2") == 0) return __builtin_cpu_supports("avx2");
  return true;
}

// Builds the block with `flags` and checks both outputs against the interpreter's.
static void build_and_compare(const char *dir, const char *model, const char *xpath,
                              const kiln_array *want, char *const flags[2]) {
  char *exe = path_join(dir, "block"), *y = path_join(dir, "y.npy"), *t = path_join(dir, "t.npy");
  char *build[] = {KILN_EXE, "build", (char *)model, "-o", exe, flags[0], flags[1], NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build %s %s failed: %s", flags[0], flags[1], r.err);
  run_result_free(&r);
  char ya[512], ta[512];
  snprintf(ya, sizeof ya, "y=%s", y);
  snprintf(ta, sizeof ta, "t=%s", t);
  char *run[] = {exe, "--input", (char *)xpath, "--output", ya, "--output", ta, NULL};
  r = run_cmd(run, 60);
  cr_assert_eq(r.status, 0, "the block built with %s %s failed: %s", flags[0], flags[1], r.err);
  run_result_free(&r);
  const char *paths[2] = {y, t};
  for (int i = 0; i < 2; i++) {
    kiln_array got = read_npy_or_fail(paths[i]);
    char why[512];
    cr_expect(arrays_close(&got, &want[i], 1e-5, 1e-5, why, sizeof why),
              "output %d, build flags %s %s: %s", i, flags[0], flags[1], why);
    kiln_array_free(&got);
  }
  free(exe), free(y), free(t);
}

Test(kernels, targets_and_fusion_agree_with_interpreter, .timeout = 600) {
  char *dir = make_temp_dir(), *json = block_model(false, 9);
  char *model = write_text(dir, "block.json", json), *xpath = path_join(dir, "x.npy");
  kiln_array x = block_input(), want[2] = {{0}};
  char err[256];
  cr_assert_eq(kiln_npy_write(xpath, &x, err, sizeof err), 0, "%s", err);
  kiln_graph *g = model_or_fail(model);
  kiln_diag d;
  kiln_diag_init(&d, model);
  cr_assert(kiln_interp_run(g, &x, want, &d));
  static const char *targets[] = {"native", "avx512", "avx2", "generic"};
  for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
    if (!cpu_can(targets[i])) continue;
    char *flags[2] = {"--target", (char *)targets[i]};
    build_and_compare(dir, model, xpath, want, flags);
  }
  char *unfused[2] = {"--disable-pass", "fuse-epilogue"};
  build_and_compare(dir, model, xpath, want, unfused);
  kiln_array_free(&want[0]);
  kiln_array_free(&want[1]);
  kiln_array_free(&x);
  kiln_graph_free(g);
  rm_rf(dir);
  free(model), free(json), free(xpath), free(dir);
}

// Tanh's generated code (emit_c.c's kiln_gen_tanhf, llvm_emit.c's tanh_f32) is correctly rounded:
// equal to libm's double tanh rounded to float. The inputs step through the bit patterns of
// [0, 11] (every binade, 2^18 values, alternating signs) after the special values; an exhaustive
// run over every float agreed too (docs/performance.md, "Session 11: Tanh").
static kiln_array tanh_inputs(void) {
  enum { N = 1 << 18 };
  static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-40f, 10.0f};
  kiln_array x = {.dtype = KILN_F32, .rank = 1, .shape = {N}, .nbytes = N * sizeof(float)};
  float *v = kiln_aligned_alloc(x.nbytes);
  memcpy(v, special, sizeof special);
  int n_special = (int)(sizeof special / sizeof *special);
  for (int i = n_special; i < N; i++) {
    uint32_t bits = (uint32_t)((uint64_t)(i - n_special) * 0x41300000u / (N - n_special));
    memcpy(&v[i], &bits, sizeof bits);
    if (i % 2) v[i] = -v[i];
  }
  x.data = v;
  return x;
}

static void expect_correctly_rounded_tanh(const kiln_array *x, const kiln_array *y,
                                          const char *how) {
  const float *xv = x->data, *yv = y->data;
  int64_t wrong = 0, first = -1;
  for (int64_t i = 0; i < x->shape[0]; i++) {
    float want = (float)tanh((double)xv[i]);
    bool same = isnan(want) ? isnan(yv[i]) : memcmp(&want, &yv[i], sizeof want) == 0;
    if (!same && wrong++ == 0) first = i;
  }
  cr_expect_eq(wrong, 0, "%s: %lld of %lld tanh values not correctly rounded, first x=%a: %a", how,
               (long long)wrong, (long long)x->shape[0], first >= 0 ? xv[first] : 0.0f,
               first >= 0 ? yv[first] : 0.0f);
}

Test(kernels, tanh_is_correctly_rounded, .timeout = 300) {
  char *dir = make_temp_dir();
  char *model = write_text(dir, "tanh.json",
                           "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"tanh\","
                           "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[262144]}],"
                           "\"outputs\":[{\"name\":\"y\"}],\"params\":[],\"nodes\":["
                           "{\"op\":\"Tanh\",\"inputs\":[\"x\"],\"outputs\":[\"y\"]}]}");
  char *xpath = path_join(dir, "x.npy"), *ypath = path_join(dir, "y.npy");
  char *exe = path_join(dir, "tanh");
  kiln_array x = tanh_inputs();
  char err[256];
  cr_assert_eq(kiln_npy_write(xpath, &x, err, sizeof err), 0, "%s", err);
  // native: FMA (the Horner steps fused); generic: x86-64 without FMA; llvm: llvm.fmuladd.
  char *variants[][2] = {{"--target", "native"}, {"--target", "generic"}, {"--backend", "llvm"}};
  for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
    char *build[] = {KILN_EXE, "build", model, "-o", exe, variants[v][0], variants[v][1], NULL};
    run_result r = run_cmd(build, 300);
    cr_assert_eq(r.status, 0, "kiln build %s %s failed: %s", variants[v][0], variants[v][1], r.err);
    run_result_free(&r);
    char *run[] = {exe, "--input", xpath, "--output", ypath, NULL};
    r = run_cmd(run, 60);
    cr_assert_eq(r.status, 0, "the Tanh binary (%s) failed: %s", variants[v][1], r.err);
    run_result_free(&r);
    kiln_array y = read_npy_or_fail(ypath);
    expect_correctly_rounded_tanh(&x, &y, variants[v][1]);
    kiln_array_free(&y);
  }
  kiln_array_free(&x);
  rm_rf(dir);
  free(model), free(xpath), free(ypath), free(exe), free(dir);
}

// The graph passes fuse-elementwise, simplify-layout and fuse-expand-depthwise: before/expected IR
// on small models, the rules that must not fire, and the reference: the interpreter on the graph
// as loaded (no pass has run) and the generated code. Then the on/off check: every
// optional graph pass turned off in turn on the small samples, each variant evaluated by the
// interpreter on the sample's golden input, all within the output's tolerance of the full pipeline.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/inspect.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "../compiler/passes/pipeline.h"
#include "../runtime/kiln_runtime.h"
#include "sample_util.h"

TestSuite(fuse_elementwise, .fini = check_leaks);
TestSuite(simplify_layout, .fini = check_leaks);
TestSuite(pass_equivalence, .fini = check_leaks, .timeout = 300);
TestSuite(compact_weights, .fini = check_leaks);

enum { MAX_IO = 8 };

// ---- Helpers ----

// A model from JSON written with single quotes (test readability) instead of double quotes.
static kiln_graph *graph_of(const char *json) {
  char *dir = make_temp_dir(), *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  cr_assert(f, "cannot write %s", path);
  for (const char *p = json; *p; p++) fputc(*p == '\'' ? '"' : *p, f);
  fclose(f);
  kiln_graph *g = model_or_fail(path);
  rm_rf(dir);
  free(path);
  free(dir);
  return g;
}

#define MODEL(inputs, outputs, params, nodes)                                               \
  "{'format':'kiln-model','version':1,'name':'m','inputs':[" inputs "],'outputs':[" outputs \
  "],'params':[" params "],'nodes':[" nodes "]}"
#define F32_INPUT(name, shape) "{'name':'" name "','dtype':'f32','shape':" shape "}"
#define I64_PARAM(name, count, values)                                                            \
  "{'name':'" name "','dtype':'i64','shape':[" count "],'init':{'kind':'values','values':" values \
  "}}"

// Runs the pipeline (to the end, or through pass `stop`), with pass `off` turned off.
static void run_passes(kiln_compilation *c, kiln_graph *g, const char *stop, const char *off) {
  kiln_compilation_init(c, g);
  c->stop_after = stop;
  if (off) c->disabled[c->n_disabled++] = off;
  kiln_diag d;
  kiln_diag_init(&d, "test");
  cr_assert(kiln_compile_pipeline(c, &d), "the pipeline failed (%s off)", off ? off : "nothing");
}

static int count_op(const kiln_graph *g, int op) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++) count += g->nodes[i].op == op;
  return count;
}

static const kiln_node *first_op(const kiln_graph *g, int op) {
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == op) return &g->nodes[i];
  cr_assert_fail("no %s node", kiln_op_get(op)->name);
  return NULL;
}

// Input i of g filled with a smooth sign-varying sequence.
static kiln_array make_input(const kiln_graph *g, int i) {
  const kiln_tensor *t = &g->tensors[g->inputs[i]];
  kiln_array a = {.dtype = (int)t->dtype, .rank = t->shape.rank};
  memcpy(a.shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
  int64_t n = kiln_shape_numel(&t->shape);
  a.nbytes = (size_t)n * kiln_dtype_size(t->dtype);
  a.data = kiln_aligned_alloc(a.nbytes ? a.nbytes : 1);
  for (int64_t k = 0; k < n; k++) kiln_element_set(a.data, a.dtype, k, 1.7 * sin(0.9 * k + i));
  return a;
}

static void interpret(const kiln_graph *g, const kiln_array *in, kiln_array *out) {
  kiln_diag d;
  kiln_diag_init(&d, "test");
  cr_assert(kiln_interp_run(g, in, out, &d), "the interpreter failed on %s", g->name);
}

// The passes through `stop` must leave g's outputs bit for bit what the loaded graph computes.
static void expect_same_results(const char *json, const char *stop) {
  kiln_graph *plain = graph_of(json);
  kiln_array in[MAX_IO], want[MAX_IO], got[MAX_IO];
  for (int i = 0; i < plain->n_inputs; i++) in[i] = make_input(plain, i);
  interpret(plain, in, want);
  kiln_compilation c;
  run_passes(&c, graph_of(json), stop, NULL);
  interpret(c.g, in, got);
  char why[512];
  for (int i = 0; i < plain->n_outputs; i++) {
    cr_expect(arrays_close(&got[i], &want[i], 0, 0, why, sizeof why), "output %d: %s", i, why);
    kiln_array_free(&got[i]);
    kiln_array_free(&want[i]);
  }
  for (int i = 0; i < plain->n_inputs; i++) kiln_array_free(&in[i]);
  kiln_compilation_free(&c);
  kiln_graph_free(plain);
}

// ---- fuse-elementwise ----

// After fuse-elementwise: `nodes` nodes, one of them FusedElementwise with program `ops` (none
// when NULL); the results are bit for bit the loaded graph's.
static void expect_fused(const char *json, int nodes, const char *ops) {
  kiln_compilation c;
  run_passes(&c, graph_of(json), "fuse-elementwise", NULL);
  cr_expect_eq(c.g->n_nodes, nodes, "%d nodes after fuse-elementwise, expected %d", c.g->n_nodes,
               nodes);
  cr_expect_eq(count_op(c.g, KILN_OP_FusedElementwise), ops != NULL);
  if (ops)
    cr_expect_str_eq(kiln_attr_string(first_op(c.g, KILN_OP_FusedElementwise), "ops", ""), ops);
  kiln_compilation_free(&c);
  expect_same_results(json, "fuse-elementwise");
}

// y = sigmoid(x * a + b) * x, a and b broadcast along x's rows: Swish-like, an LSTM gate's shape.
static const char gate_model[] =
    MODEL(F32_INPUT("x", "[2, 8]") "," F32_INPUT("a", "[8]") "," F32_INPUT("b", "[8]"),
          "{'name':'y'}", "",
          "{'op':'Mul','name':'scale','inputs':['x','a'],'outputs':['t1']},"
          "{'op':'Add','name':'shift','inputs':['t1','b'],'outputs':['t2']},"
          "{'op':'Sigmoid','name':'gate','inputs':['t2'],'outputs':['t3']},"
          "{'op':'Mul','name':'out','inputs':['t3','x'],'outputs':['y']}");

Test(fuse_elementwise, fuses_a_chain_into_one_kernel) {
  kiln_compilation c;
  run_passes(&c, graph_of(gate_model), "fuse-elementwise", NULL);
  cr_assert_eq(c.g->n_nodes, 1, "expected one node, got %d", c.g->n_nodes);
  const kiln_node *n = &c.g->nodes[0];
  cr_expect_eq(n->op, KILN_OP_FusedElementwise);
  cr_expect_str_eq(n->name, "out", "the fused node keeps the name of the chain's last node");
  cr_expect_str_eq(kiln_attr_string(n, "ops", ""), "Mul Add Sigmoid Mul");
  int64_t operands[8], want[] = {0, 1, -1, 2, -2, -3, 0};  // x a | t1 b | t2 | t3 x
  cr_assert_eq(kiln_attr_ints(n, "operands", operands, 8), 7);
  for (int i = 0; i < 7; i++) cr_expect_eq(operands[i], want[i], "operands[%d]", i);
  cr_expect_eq(n->n_inputs, 3);  // x, a, b
  for (int i = 0; i < 3; i++) {
    char t[3] = {'t', (char)('1' + i), 0};
    cr_expect_eq(kiln_graph_find_tensor(c.g, t), -1, "intermediate %s is still there", t);
  }
  kiln_compilation_free(&c);
  // The whole pipeline: one kernel instead of four.
  run_passes(&c, graph_of(gate_model), NULL, NULL);
  cr_expect_eq(c.prog->n_kernels, 1);
  kiln_compilation_free(&c);
  run_passes(&c, graph_of(gate_model), NULL, "fuse-elementwise");
  cr_expect_eq(c.prog->n_kernels, 4);
  kiln_compilation_free(&c);
  expect_same_results(gate_model, NULL);
}

// (x - m) / s with per-channel m, s broadcast over (2, 3, 4): normalization.
static const char norm_model[] =
    MODEL(F32_INPUT("x", "[2, 3, 4]") "," F32_INPUT("m", "[3, 1]") "," F32_INPUT("s", "[3, 1]"),
          "{'name':'y'}", "",
          "{'op':'Sub','inputs':['x','m'],'outputs':['c']},"
          "{'op':'Div','inputs':['c','s'],'outputs':['y']}");

Test(fuse_elementwise, fuses_broadcast_normalization) { expect_fused(norm_model, 1, "Sub Div"); }

// e = exp(x) is read twice inside the chain: (e * x) + (e + x) is one expression.
static const char reused_model[] = MODEL(F32_INPUT("x", "[16]"), "{'name':'y'}", "",
                                         "{'op':'Exp','inputs':['x'],'outputs':['e']},"
                                         "{'op':'Mul','inputs':['e','x'],'outputs':['p']},"
                                         "{'op':'Add','inputs':['e','x'],'outputs':['q']},"
                                         "{'op':'Add','inputs':['p','q'],'outputs':['y']}");

// e is also read by a Softmax outside the chain: Exp stays a node; Mul -> Add fuse.
static const char shared_model[] = MODEL(F32_INPUT("x", "[16]"), "{'name':'y'},{'name':'z'}", "",
                                         "{'op':'Exp','inputs':['x'],'outputs':['e']},"
                                         "{'op':'Mul','inputs':['e','x'],'outputs':['p']},"
                                         "{'op':'Add','inputs':['p','x'],'outputs':['y']},"
                                         "{'op':'Softmax','inputs':['e'],'outputs':['z']}");

// t is a model output: Tanh and Sigmoid stay apart.
static const char output_model[] = MODEL(F32_INPUT("x", "[16]"), "{'name':'t'},{'name':'y'}", "",
                                         "{'op':'Tanh','inputs':['x'],'outputs':['t']},"
                                         "{'op':'Sigmoid','inputs':['t'],'outputs':['y']}");

// e (4) is smaller than the output (3, 4): fusing would compute exp 3 times per element of e.
static const char broadcast_model[] =
    MODEL(F32_INPUT("x", "[3, 4]") "," F32_INPUT("a", "[4]"), "{'name':'y'}", "",
          "{'op':'Exp','inputs':['a'],'outputs':['e']},"
          "{'op':'Add','inputs':['x','e'],'outputs':['y']}");

Test(fuse_elementwise, takes_reused_but_not_shared_output_or_broadcast_intermediates) {
  expect_fused(reused_model, 1, "Exp Mul Add Add");
  expect_fused(shared_model, 3, "Mul Add");  // and the Exp, the Softmax
  expect_fused(output_model, 2, NULL);
  expect_fused(broadcast_model, 2, NULL);
}

// A FusedElementwise node written by hand with a bad program: exit 2, the node and field named.
Test(fuse_elementwise, rejects_bad_programs) {
  static const char *const cases[][2] = {
      {"'ops':'Mul Softmax','operands':[0,0,-1]", "'Softmax' is not an elementwise op"},
      {"'ops':'Mul','operands':[0]", "expected 2 operand references"},
      {"'ops':'Mul Exp','operands':[0,0,-2]", "-2 refers to the result of op 1"},
  };
  char *dir = make_temp_dir(), *path = path_join(dir, "bad.json");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"bad\",\"inputs\":[{\"name\":\"x\","
            "\"dtype\":\"f32\",\"shape\":[4]}],\"outputs\":[{\"name\":\"y\"}],\"nodes\":[{\"op\":"
            "\"FusedElementwise\",\"name\":\"f\",\"inputs\":[\"x\"],\"outputs\":[\"y\"],"
            "\"attrs\":{");
    for (const char *p = cases[i][0]; *p; p++) fputc(*p == '\'' ? '"' : *p, f);
    fputs("}}]}", f);
    fclose(f);
    char *args[] = {KILN_EXE, "inspect", path, NULL};
    run_result r = run_cmd(args, 60);
    cr_expect_eq(r.status, 2, "case %zu: exit %d", i, r.status);
    cr_expect(strstr(r.err, "bad.json") && strstr(r.err, "(f)") && strstr(r.err, cases[i][1]),
              "case %zu: message lacks the file, node or '%s':\n%s", i, cases[i][1], r.err);
    run_result_free(&r);
  }
  rm_rf(dir);
  free(path);
  free(dir);
}

// The generated code of a sample with chains (the VAE's reparameterization z = mu + exp(lv / 2)
// eps and its KL term) against the interpreter on the graph as loaded, unfused.
Test(fuse_elementwise, generated_code_matches_unfused_interpreter) {
  static const char *const inputs[] = {"x", "eps"};
  char model[512], golden[512], flag[2][600], *dir = make_temp_dir();
  snprintf(model, sizeof model, "%s/samples/vae.json", KILN_SOURCE_DIR);
  kiln_graph *g = model_or_fail(model);
  kiln_compilation c;
  run_passes(&c, model_or_fail(model), "fuse-elementwise", NULL);
  cr_expect_geq(count_op(c.g, KILN_OP_FusedElementwise), 1, "nothing fused in the VAE");
  kiln_compilation_free(&c);
  kiln_array in[2], want[MAX_IO];
  for (int i = 0; i < 2; i++) {
    snprintf(golden, sizeof golden, "%s/vae/%s.npy", KILN_TEST_GOLDENS_DIR, inputs[i]);
    in[i] = read_npy_or_fail(golden);
    snprintf(flag[i], sizeof flag[i], "%s=%s", inputs[i], golden);
  }
  interpret(g, in, want);
  char *exe = path_join(dir, "vae"), *out = path_join(dir, "recon.npy"), out_flag[600];
  snprintf(out_flag, sizeof out_flag, "recon=%s", out);
  char *build[] = {KILN_EXE, "build", model, "-o", exe, NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build failed: %s", r.err);
  run_result_free(&r);
  char *run[] = {exe, "--input", flag[0], "--input", flag[1], "--output", out_flag, NULL};
  r = run_cmd(run, 60);
  cr_assert_eq(r.status, 0, "the VAE binary failed: %s", r.err);
  run_result_free(&r);
  kiln_array got = read_npy_or_fail(out);
  char why[512];
  cr_expect(arrays_close(&got, &want[0], 1e-5, 1e-5, why, sizeof why), "recon: %s", why);
  kiln_array_free(&got);
  for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&want[i]);
  for (int i = 0; i < 2; i++) kiln_array_free(&in[i]);
  kiln_graph_free(g);
  rm_rf(dir);
  free(exe), free(out), free(dir);
}

// ---- simplify-layout ----

static void expect_ops(const kiln_graph *g, const char *want) {
  char got[512] = "";
  for (int i = 0; i < g->n_nodes; i++) {
    strncat(got, i ? " " : "", sizeof got - strlen(got) - 1);
    strncat(got, kiln_op_get(g->nodes[i].op)->name, sizeof got - strlen(got) - 1);
  }
  cr_expect_str_eq(got, want, "nodes after simplify-layout: %s, expected %s", got, want);
}

static void expect_layout(const char *json, const char *ops) {
  kiln_compilation c;
  run_passes(&c, graph_of(json), "simplify-layout", NULL);
  expect_ops(c.g, ops);
  kiln_compilation_free(&c);
  expect_same_results(json, "simplify-layout");
}

#define TRANSPOSE(in, out, perm) \
  "{'op':'Transpose','inputs':['" in "'],'outputs':['" out "'],'attrs':{'perm':" perm "}}"
#define RESHAPE(in, shape, out) \
  "{'op':'Reshape','inputs':['" in "','" shape "'],'outputs':['" out "']}"
#define RELU(in, out) "{'op':'Relu','inputs':['" in "'],'outputs':['" out "']}"

Test(simplify_layout, transpose_pairs) {
  // Back to the identity: both go.
  expect_layout(MODEL(F32_INPUT("x", "[2, 3, 4]"), "{'name':'y'}", "",
                      TRANSPOSE("x", "t", "[1, 0, 2]") "," TRANSPOSE(
                          "t", "u", "[1, 0, 2]") "," RELU("u", "y")),
                "Relu");
  // Another permutation: one Transpose, perm p1[p2[i]].
  const char *json = MODEL(F32_INPUT("x", "[2, 3, 4]"), "{'name':'y'}", "",
                           TRANSPOSE("x", "t", "[1, 2, 0]") "," TRANSPOSE("t", "y", "[0, 2, 1]"));
  expect_layout(json, "Transpose");
  kiln_compilation c;
  run_passes(&c, graph_of(json), "simplify-layout", NULL);
  int64_t perm[3];
  cr_assert_eq(kiln_attr_ints(&c.g->nodes[0], "perm", perm, 3), 3);
  cr_expect(perm[0] == 1 && perm[1] == 0 && perm[2] == 2, "perm [%lld, %lld, %lld]",
            (long long)perm[0], (long long)perm[1], (long long)perm[2]);
  kiln_compilation_free(&c);
}

Test(simplify_layout, views_merge_and_vanish) {
  // Reshape . Flatten -> one Reshape of x.
  expect_layout(MODEL(F32_INPUT("x", "[2, 3, 4]"), "{'name':'y'}", I64_PARAM("s", "2", "[4, 6]"),
                      "{'op':'Flatten','inputs':['x'],'outputs':['f']}," RESHAPE(
                          "f", "s", "r") "," RELU("r", "y")),
                "Reshape Relu");
  // A Reshape to the shape it already has.
  expect_layout(MODEL(F32_INPUT("x", "[2, 3]"), "{'name':'y'}", I64_PARAM("s", "2", "[2, 3]"),
                      RESHAPE("x", "s", "r") "," RELU("r", "y")),
                "Relu");
  // Transposes that move only size-1 axes: a Reshape; to the same shape: nothing.
  expect_layout(MODEL(F32_INPUT("x", "[3, 1, 4]"), "{'name':'y'}", "",
                      TRANSPOSE("x", "t", "[1, 0, 2]") "," RELU("t", "y")),
                "Reshape Relu");
  expect_layout(MODEL(F32_INPUT("x", "[1, 3, 1, 4]"), "{'name':'y'}", "",
                      TRANSPOSE("x", "t", "[2, 1, 0, 3]") "," RELU("t", "y")),
                "Relu");
}

Test(simplify_layout, leaves_shared_intermediates_and_model_outputs) {
  // t read twice: neither Transpose may absorb it.
  expect_layout(
      MODEL(F32_INPUT("x", "[2, 3]"), "{'name':'y'},{'name':'z'}", "",
            TRANSPOSE("x", "t", "[1, 0]") "," TRANSPOSE("t", "y", "[1, 0]") "," RELU("t", "z")),
      "Transpose Transpose Relu");
  // r is a model output: both Reshapes stay.
  expect_layout(MODEL(F32_INPUT("x", "[2, 3]"), "{'name':'r'},{'name':'y'}",
                      I64_PARAM("s", "1", "[6]") "," I64_PARAM("s2", "2", "[3, 2]"),
                      RESHAPE("x", "s", "r") "," RESHAPE("r", "s2", "y")),
                "Reshape Reshape");
  // A same-shape Reshape producing a model output stays (the output must be produced).
  expect_layout(MODEL(F32_INPUT("x", "[2, 3]"), "{'name':'y'}", I64_PARAM("s", "2", "[2, 3]"),
                      RESHAPE("x", "s", "y")),
                "Reshape");
}

// ---- Every optional graph pass on and off, on the small samples ----

// A sample and its golden tensors: tests/goldens/<name>/io.txt (the zoo's list) or, for the
// samples of test_samples.c, sample_util.h's input and output.
typedef struct golden_io {
  int n_in;
  char in_name[MAX_IO][128], in_file[MAX_IO][512];
  bool exact[MAX_IO];  // by graph output name order of io.txt
  char out_name[MAX_IO][128];
  int n_out;
} golden_io;

static golden_io read_golden_io(const char *sample) {
  golden_io io = {0};
  char path[512], kind[16], name[128], file[256], how[16];
  snprintf(path, sizeof path, "%s/%s/io.txt", KILN_TEST_GOLDENS_DIR, sample);
  FILE *f = fopen(path, "r");
  if (!f) {  // tests/goldens/<sample>/<input>.npy
    for (int s = 0; s < N_SAMPLES; s++)
      if (strcmp(samples[s].name, sample) == 0) {
        io.n_in = 1;
        snprintf(io.in_name[0], sizeof io.in_name[0], "%s", samples[s].input);
        sample_golden(&samples[s], samples[s].input, io.in_file[0], sizeof io.in_file[0]);
      }
    cr_assert_eq(io.n_in, 1, "%s: no golden input", sample);
    return io;
  }
  while (fscanf(f, "%15s %127s %255s", kind, name, file) == 3 && io.n_in < MAX_IO) {
    if (strcmp(kind, "input") == 0) {
      snprintf(io.in_name[io.n_in], sizeof io.in_name[0], "%s", name);
      snprintf(io.in_file[io.n_in++], sizeof io.in_file[0], "%s/%s/%s", KILN_TEST_GOLDENS_DIR,
               sample, file);
    } else if (fscanf(f, "%15s", how) == 1 && io.n_out < MAX_IO) {
      snprintf(io.out_name[io.n_out], sizeof io.out_name[0], "%s", name);
      io.exact[io.n_out++] = strcmp(how, "exact") == 0;
    }
  }
  fclose(f);
  return io;
}

static bool exact_output(const golden_io *io, const char *name) {
  for (int i = 0; i < io->n_out; i++)
    if (strcmp(io->out_name[i], name) == 0) return io->exact[i];
  return false;
}

// The graph after the graph passes (through in-place, the last one before plan-memory), with
// `off` turned off; its IR as text in *text (malloc'd).
static kiln_graph *graph_passes(const char *model, const char *off, char **text) {
  kiln_compilation c;
  run_passes(&c, model_or_fail(model), "in-place", off);
  size_t size;
  FILE *f = open_memstream(text, &size);
  kiln_graph_print(c.g, f);
  fclose(f);
  kiln_graph *g = c.g;
  c.g = NULL;
  kiln_compilation_free(&c);
  return g;
}

// A golden input may hold several of the model's batches (the binaries run them in turn): the
// first one.
static kiln_array first_batch(kiln_array a, const kiln_tensor *t) {
  if (a.rank == t->shape.rank && a.rank > 0 && a.shape[0] > t->shape.dim[0]) {
    a.nbytes = a.nbytes / (size_t)a.shape[0] * (size_t)t->shape.dim[0];
    a.shape[0] = t->shape.dim[0];
  }
  return a;
}

// The graph's outputs on the golden inputs (ordered like g->inputs).
static void run_on_goldens(const kiln_graph *g, const golden_io *io, kiln_array *out) {
  kiln_array in[MAX_IO];
  cr_assert_eq(g->n_inputs, io->n_in, "%s: io.txt lists %d inputs", g->name, io->n_in);
  for (int i = 0; i < g->n_inputs; i++) {
    int k = 0;
    while (k < io->n_in && strcmp(io->in_name[k], g->tensors[g->inputs[i]].name) != 0) k++;
    cr_assert_lt(k, io->n_in, "%s: no golden for input %s", g->name, g->tensors[g->inputs[i]].name);
    in[i] = first_batch(read_npy_or_fail(io->in_file[k]), &g->tensors[g->inputs[i]]);
  }
  interpret(g, in, out);
  for (int i = 0; i < g->n_inputs; i++) kiln_array_free(&in[i]);
}

// Variant `off` of sample `name` against the full pipeline's results `want`.
static void check_variant(const char *name, const char *model, const golden_io *io, const char *off,
                          const char *full_text, const kiln_array *want) {
  char *text;
  kiln_graph *g = graph_passes(model, off, &text);
  if (strcmp(text, full_text) != 0) {  // the pass changed something: evaluate both
    kiln_array got[MAX_IO];
    run_on_goldens(g, io, got);
    char why[512];
    for (int i = 0; i < g->n_outputs; i++) {
      bool exact = exact_output(io, g->tensors[g->outputs[i]].name);
      double atol = exact ? 0 : 1e-5, rtol = exact ? 0 : 1e-4;
      cr_expect(arrays_close(&want[i], &got[i], atol, rtol, why, sizeof why),
                "%s: output %s with %s off differs from all passes on: %s", name,
                g->tensors[g->outputs[i]].name, off, why);
      kiln_array_free(&got[i]);
    }
  }
  free(text);
  kiln_graph_free(g);
}

// Samples whose interpreter run takes well under a second. Left out (seconds to a minute each in
// the naive interpreter, ten runs per sample): the 224 x 224 models (AlexNet, VGG, GoogLeNet,
// ResNets, MobileNet, Fast R-CNN), YOLOv1, DCGAN and the dilated network.
static const char *const small_samples[] = {
    "xor_mlp",      "mlp",  "lenet5",          "autoencoder", "vae",
    "vae_sampling", "cvae", "lstm_classifier", "transformer"};

// The "every pass: on/off numerical equivalence on every sample within tolerance", for the
// graph passes: the interpreter evaluates each variant. in-place only annotates (the interpreter
// ignores it) and schedule is a loop-IR pass: the generated-code tests cover those.
Test(pass_equivalence, every_optional_pass_off_matches_all_on) {
  for (size_t s = 0; s < sizeof small_samples / sizeof small_samples[0]; s++) {
    const char *name = small_samples[s];
    char model[512];
    snprintf(model, sizeof model, "%s/samples/%s.json", KILN_SOURCE_DIR, name);
    golden_io io = read_golden_io(name);
    char *full_text;
    kiln_graph *full = graph_passes(model, NULL, &full_text);
    kiln_array want[MAX_IO];
    run_on_goldens(full, &io, want);
    for (const kiln_pass *p = kiln_pipeline; strcmp(p->name, "plan-memory") != 0; p++)
      if (!p->required) check_variant(name, model, &io, p->name, full_text, want);
    for (int i = 0; i < full->n_outputs; i++) kiln_array_free(&want[i]);
    free(full_text);
    kiln_graph_free(full);
  }
}

// ---- compact-weights ----

// A convolution whose constant weights the blocked kernel packs at compile time (its original
// (32, 16, 3, 3) weights then unread) and a Gemm that reads its weights in place.
static const char packed_model[] =
    MODEL(F32_INPUT("x", "[1,16,8,8]") "," F32_INPUT("v", "[2,24]"), "{'name':'y'},{'name':'z'}",
          "{'name':'w','dtype':'f32','shape':[32,16,3,3],'init':{'kind':'uniform','seed':1}},"
          "{'name':'b','dtype':'f32','shape':[32],'init':{'kind':'uniform','seed':2}},"
          "{'name':'g','dtype':'f32','shape':[24,5],'init':{'kind':'uniform','seed':3}}",
          "{'name':'c','op':'Conv','inputs':['x','w','b'],'outputs':['y'],"
          "'attrs':{'kernel_shape':[3,3],'pads':[1,1,1,1]}},"
          "{'name':'m','op':'Gemm','inputs':['v','g'],'outputs':['z']}");

// The payload without the unread bytes: every weight buffer still read holds the same bytes as
// without the pass, at the same offset modulo 64; an unread one is empty.
Test(compact_weights, drops_unread_weights_and_keeps_the_rest_byte_for_byte) {
  kiln_compilation on, off;
  run_passes(&on, graph_of(packed_model), NULL, NULL);
  run_passes(&off, graph_of(packed_model), NULL, "compact-weights");
  const kiln_lprog *a = on.prog, *b = off.prog;
  cr_assert_eq(a->n_bufs, b->n_bufs);
  cr_assert_lt(on.weights_bytes, off.weights_bytes - 32 * 16 * 9 * 4 + 64,
               "the conv's original weights are still there (%lld of %lld bytes)",
               (long long)on.weights_bytes, (long long)off.weights_bytes);
  cr_assert_eq(a->weights_bytes, on.weights_bytes);
  int dropped = 0, kept = 0;
  for (int i = 0; i < a->n_bufs; i++) {
    const kiln_lbuf *x = &a->bufs[i], *y = &b->bufs[i];
    if (x->kind != KILN_BUF_WEIGHT) continue;
    if (x->numel == 0) {
      dropped++;
      continue;
    }
    kept++;
    size_t bytes = (size_t)x->numel * kiln_dtype_size(x->dtype);
    cr_assert_eq(x->numel, y->numel, "%s", x->name);
    cr_assert_eq(x->offset % 64, y->offset % 64, "%s moved off its alignment", x->name);
    cr_assert_leq(x->offset + (int64_t)bytes, on.weights_bytes, "%s", x->name);
    cr_assert(memcmp((const char *)on.weights + x->offset, (const char *)off.weights + y->offset,
                     bytes) == 0,
              "%s: other bytes after compaction", x->name);
  }
  cr_assert_geq(dropped, 1, "nothing dropped");
  cr_assert_geq(kept, 3, "the bias, the packed weights and the Gemm's weights are read");
  kiln_compilation_free(&on);
  kiln_compilation_free(&off);
}

// ---- fuse-expand-depthwise ----

TestSuite(fuse_expand_depthwise, .fini = check_leaks, .timeout = 300);

#define NORMAL(name, shape, seed)                   \
  "{'name':'" name "','dtype':'f32','shape':" shape \
  ",'init':{'kind':'normal','std':0.3,'seed':" seed "}}"
#define CONSTANT(name, v) \
  "{'name':'" name "','dtype':'f32','shape':[1],'init':{'kind':'constant','value':" v "}}"
#define CONV(in, w, b, out, attrs)                                                  \
  "{'op':'Conv','name':'" out "','inputs':['" in "','" w "'" b "],'outputs':['" out \
  "'],'attrs':{" attrs "}}"
#define CLIP(in, out) "{'op':'Clip','inputs':['" in "','lo','hi'],'outputs':['" out "']}"
#define DW_ATTRS(stride) "'group':16,'pads':[1,1,1,1],'strides':[" stride "," stride "]"
// Two MobileNet-V2 blocks on an HW x HW map, raw ONNX ops: 8 -> 16 (ReLU6) -> depthwise 3x3
// (ReLU6) -> 8 + x, then 8 -> 16 -> depthwise stride 2 -> 8. Their 16 x HW x HW expanded tensors
// are 1 MB at 128 x 128 (fused) and 256 KB at 64 x 64 (not). EXTRA_OUT: more graph outputs.
#define BLOCKS_MODEL(HW, EXTRA_OUT) \
  MODEL(F32_INPUT("x", "[1,8," HW "," HW "]"), "{'name':'y'}" EXTRA_OUT,                          \
        NORMAL("w1", "[16,8,1,1]", "1") "," NORMAL("b1", "[16]", "2") "," NORMAL(                  \
            "wd1", "[16,1,3,3]", "3") "," NORMAL("bd1", "[16]", "4") "," NORMAL("w2", "[8,16,1,1]", \
                                                                                  "5") ","         \
            NORMAL("w3", "[16,8,1,1]", "6") "," NORMAL("b3", "[16]", "7") "," NORMAL(              \
                "wd2", "[16,1,3,3]", "8") "," NORMAL("bd2", "[16]", "9") "," NORMAL(               \
                "w4", "[8,16,1,1]", "10") "," CONSTANT("lo", "0") "," CONSTANT("hi", "6"),         \
        CONV("x", "w1", ",'b1'", "e1", "") "," CLIP("e1", "r1") "," CONV(                          \
            "r1", "wd1", ",'bd1'", "d1", DW_ATTRS("1")) "," CLIP("d1", "s1") "," CONV(             \
            "s1", "w2", "", "p1", "") ",{'op':'Add','inputs':['p1','x'],'outputs':['y1']}," CONV(  \
            "y1", "w3", ",'b3'", "e2", "") "," CLIP("e2", "r2") "," CONV(                          \
            "r2", "wd2", ",'bd2'", "d2", DW_ATTRS("2")) "," CLIP("d2", "s2") "," CONV(             \
            "s2", "w4", "", "y", ""))

// The second block alone (stride 2), for the builds.
#define BLOCK_MODEL(HW)                                                                            \
  MODEL(F32_INPUT("x", "[1,8," HW "," HW "]"), "{'name':'y'}",                                     \
        NORMAL("w3", "[16,8,1,1]", "6") "," NORMAL("b3", "[16]", "7") "," NORMAL(                  \
            "wd2", "[16,1,3,3]",                                                                   \
            "8") "," NORMAL("bd2", "[16]",                                                         \
                            "9") "," NORMAL("w4", "[8,16,1,1]",                                    \
                                            "10") "," CONSTANT("lo", "0") "," CONSTANT("hi", "6"), \
        CONV("x", "w3", ",'b3'", "e2", "") "," CLIP("e2", "r2") "," CONV(                          \
            "r2", "wd2", ",'bd2'", "d2",                                                           \
            DW_ATTRS("2")) "," CLIP("d2", "s2") "," CONV("s2", "w4", "", "y", ""))

// The passes through fuse-expand-depthwise with 16 lanes (AVX-512's blocking).
static kiln_graph *expand_depthwise_graph(const char *json) {
  kiln_compilation c;
  kiln_compilation_init(&c, graph_of(json));
  c.f32_lanes = 16;
  c.stop_after = "fuse-expand-depthwise";
  kiln_diag d;
  kiln_diag_init(&d, "test");
  cr_assert(kiln_compile_pipeline(&c, &d));
  kiln_graph *g = c.g;
  c.g = NULL;
  kiln_compilation_free(&c);
  return g;
}

static const char *input_name(const kiln_graph *g, const kiln_node *n, int i) {
  return i < n->n_inputs && n->inputs[i] >= 0 ? g->tensors[n->inputs[i]].name : "";
}

Test(fuse_expand_depthwise, fuses_large_expansions_read_once) {
  kiln_graph *g = expand_depthwise_graph(BLOCKS_MODEL("128", ""));
  cr_expect_eq(count_op(g, KILN_OP_FusedExpandDepthwise), 2, "both blocks fused");
  cr_expect_eq(g->n_nodes, 4, "2 fused blocks and 2 projections, got %d nodes", g->n_nodes);
  const kiln_node *f = first_op(g, KILN_OP_FusedExpandDepthwise);
  cr_expect_str_eq(f->name, "d1", "the fused node keeps the depthwise conv's name");
  const char *want[] = {"x", "w1", "b1", "wd1", "bd1"};
  for (int i = 0; i < 5; i++) cr_expect_str_eq(input_name(g, f, i), want[i], "input %d", i);
  cr_expect_str_eq(kiln_attr_string(f, "input_layout", ""), "NCHW", "x is planar (8 channels)");
  cr_expect_str_eq(kiln_attr_string(f, "expand_activation", ""), "Clip");
  cr_expect_str_eq(kiln_attr_string(f, "activation", ""), "Clip");
  cr_expect_eq(kiln_attr_int(f, "lanes", 0), 16);
  const kiln_node *second = &g->nodes[2];
  cr_expect(second->op == KILN_OP_FusedExpandDepthwise && strcmp(second->name, "d2") == 0 &&
                strcmp(input_name(g, second, 0), "y1") == 0,
            "the second block reads y1, got %s reading %s", second->name, input_name(g, second, 0));
  int64_t strides[2] = {0};
  kiln_attr_ints(second, "strides", strides, 2);
  cr_expect(strides[0] == 2 && strides[1] == 2, "the second block keeps stride 2");
  kiln_graph_free(g);
  // Small maps keep the two kernels; an expansion that is also a model output stays.
  g = expand_depthwise_graph(BLOCKS_MODEL("64", ""));
  cr_expect_eq(count_op(g, KILN_OP_FusedExpandDepthwise), 0, "fused at 64 x 64");
  kiln_graph_free(g);
  g = expand_depthwise_graph(BLOCKS_MODEL("128", ",{'name':'r1'}"));
  cr_expect_eq(count_op(g, KILN_OP_FusedExpandDepthwise), 1, "r1 is a model output");
  cr_expect_str_eq(first_op(g, KILN_OP_FusedExpandDepthwise)->name, "d2");
  kiln_graph_free(g);
}

// Builds the model (`kiln build` with flags) and runs it on x; returns y's path (malloc'd).
static char *build_and_run(const char *dir, const char *model, const char *x, const char *tag,
                           char *const flags[2]) {
  char *exe = path_join(dir, tag), *y = NULL, out[600], in[600];
  cr_assert(asprintf(&y, "%s/%s.y.npy", dir, tag) > 0);
  char *build[] = {KILN_EXE, "build", (char *)model, "-o", exe, flags[0], flags[1], NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build %s failed: %s", tag, r.err);
  run_result_free(&r);
  snprintf(in, sizeof in, "x=%s", x);
  snprintf(out, sizeof out, "y=%s", y);
  char *run[] = {exe, "--input", in, "--output", out, NULL};
  r = run_cmd(run, 60);
  cr_assert_eq(r.status, 0, "%s failed: %s", tag, r.err);
  run_result_free(&r);
  free(exe);
  return y;
}

// The generated code with the blocks fused gives the unfused kernels' bits (native target), and
// the AVX2 (8 lanes: two channel blocks) and generic builds stay within FusedConv's tolerance of
// the interpreter.
Test(fuse_expand_depthwise, generated_code_matches_unfused_bit_for_bit) {
  char *dir = make_temp_dir(), *model = path_join(dir, "blocks.json");
  FILE *f = fopen(model, "w");
  cr_assert(f);
  for (const char *p = BLOCK_MODEL("128"); *p; p++) fputc(*p == '\'' ? '"' : *p, f);
  fclose(f);
  kiln_graph *g = model_or_fail(model);
  kiln_array x = make_input(g, 0), want;
  char *xpath = path_join(dir, "x.npy"), err[256], why[512];
  cr_assert_eq(kiln_npy_write(xpath, &x, err, sizeof err), 0, "%s", err);
  interpret(g, &x, &want);
  char *none[2] = {NULL, NULL}, *off[2] = {"--disable-pass", "fuse-expand-depthwise"};
  char *fused = build_and_run(dir, model, xpath, "fused", none);
  char *unfused = build_and_run(dir, model, xpath, "unfused", off);
  cr_expect(files_equal(fused, unfused), "fused and unfused outputs differ");
  free(fused), free(unfused);
  static const char *targets[] = {"avx2", "generic"};
  for (int t = 0; t < 2; t++) {
    __builtin_cpu_init();
    if (t == 0 && !__builtin_cpu_supports("avx2")) continue;
    char *flags[2] = {"--target", (char *)targets[t]};
    char *y = build_and_run(dir, model, xpath, targets[t], flags);
    kiln_array got = read_npy_or_fail(y);
    cr_expect(arrays_close(&got, &want, 1e-5, 1e-5, why, sizeof why), "%s: %s", targets[t], why);
    kiln_array_free(&got);
    free(y);
  }
  kiln_array_free(&want);
  kiln_array_free(&x);
  kiln_graph_free(g);
  rm_rf(dir);
  free(xpath), free(model), free(dir);
}

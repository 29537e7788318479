// Graph IR, passes and loop IR: before/expected checks on small models.
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/frontend.h"
#include "../compiler/ops/op.h"
#include "../compiler/passes/pipeline.h"
#include "sample_util.h"

TestSuite(passes, .fini = check_leaks);
TestSuite(loop_ir, .fini = check_leaks);

static kiln_graph *load_text(const char *json) {
  char *dir = make_temp_dir();
  char *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  fputs(json, f);
  fclose(f);
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_graph *g = kiln_load_model(path, &d);
  cr_assert(g, "model does not load:\n%s", json);
  rm_rf(dir);
  free(path);
  free(dir);
  return g;
}

static kiln_graph *load_sample(int i) {
  char model[512];
  sample_model(&samples[i], model, sizeof(model));
  return model_or_fail(model);
}

// The whole pipeline, with pass `off` (if not NULL) turned off: the tests of passes that
// fuse-elementwise would preempt (it merges their elementwise chains first) turn it off.
static void compile_without(kiln_compilation *c, kiln_graph *g, const char *off) {
  kiln_compilation_init(c, g);
  if (off) c->disabled[c->n_disabled++] = off;
  kiln_diag d;
  kiln_diag_init(&d, "test");
  cr_assert(kiln_compile_pipeline(c, &d));
}

static void compile_all(kiln_compilation *c, kiln_graph *g) { compile_without(c, g, NULL); }

static bool in_place_pair(const kiln_graph *g, const kiln_node *n, int a, int b) {
  if (n->n_outputs != 1 || (n->outputs[0] != a && n->outputs[0] != b)) return false;
  int in = n->outputs[0] == a ? b : a;
  kiln_fuse_kind kind = kiln_op_get(n->op)->fuse;
  return (kind == KILN_FUSE_ELEMENTWISE || kind == KILN_FUSE_BROADCAST) &&
         g->tensors[a].offset == g->tensors[b].offset &&
         kiln_shape_equal(&g->tensors[a].shape, &g->tensors[b].shape) &&
         g->tensors[in].producer < (int)(n - g->nodes);
}

// Two values share arena bytes only if no node needs both (in-place elementwise nodes aside).
Test(passes, plan_memory_never_overlaps_live_values) {
  for (int s = 0; s < N_SAMPLES; s++) {
    kiln_compilation c;
    compile_all(&c, load_sample(s));
    const kiln_graph *g = c.g;
    int64_t total = 0;
    for (int a = 0; a < g->n_tensors; a++) {
      const kiln_tensor *ta = &g->tensors[a];
      if (ta->kind != KILN_TENSOR_VALUE || ta->is_output) continue;
      int64_t a_bytes = kiln_shape_numel(&ta->shape) * (int64_t)kiln_dtype_size(ta->dtype);
      total += a_bytes;
      cr_expect(ta->offset >= 0 && ta->offset % 64 == 0, "%s: offset %lld", ta->name,
                (long long)ta->offset);
      cr_expect_leq(ta->offset + a_bytes, c.arena_bytes, "%s ends past the arena", ta->name);
      for (int b = 0; b < g->n_tensors; b++) {
        const kiln_tensor *tb = &g->tensors[b];
        if (b == a || tb->kind != KILN_TENSOR_VALUE || tb->is_output) continue;
        int64_t b_bytes = kiln_shape_numel(&tb->shape) * (int64_t)kiln_dtype_size(tb->dtype);
        bool bytes_overlap = ta->offset < tb->offset + b_bytes && tb->offset < ta->offset + a_bytes;
        if (!bytes_overlap) continue;
        // Overlapping bytes: no node may see both, unless it is an elementwise node writing its
        // output in place over an input that dies there (same offset, same size).
        for (int n = 0; n < g->n_nodes; n++) {
          if (in_place_pair(g, &g->nodes[n], a, b)) continue;
          bool uses_a = false, uses_b = false;
          for (int k = 0; k < g->nodes[n].n_inputs; k++) {
            uses_a |= g->nodes[n].inputs[k] == a;
            uses_b |= g->nodes[n].inputs[k] == b;
          }
          uses_a |= g->nodes[n].outputs[0] == a;
          uses_b |= g->nodes[n].outputs[0] == b;
          cr_expect(!(uses_a && uses_b), "%s and %s share bytes but node %s uses both", ta->name,
                    tb->name, g->nodes[n].name);
        }
      }
    }
    cr_expect_leq(c.arena_bytes, total + 64 * g->n_tensors, "arena bigger than no reuse at all");
    kiln_compilation_free(&c);
  }
}

Test(passes, plan_memory_reuses_a_chain) {
  // x -> relu -> a -> relu -> b -> relu -> c -> relu -> y: elementwise, each in place over the
  // last: one buffer.
  kiln_compilation c;
  compile_without(&c,
                  load_text("{\"format\":\"kiln-model\",\"version\":1,\"name\":\"chain\","
                            "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[1000]}],"
                            "\"outputs\":[{\"name\":\"y\"}],\"nodes\":["
                            "{\"op\":\"Relu\",\"inputs\":[\"x\"],\"outputs\":[\"a\"]},"
                            "{\"op\":\"Relu\",\"inputs\":[\"a\"],\"outputs\":[\"b\"]},"
                            "{\"op\":\"Relu\",\"inputs\":[\"b\"],\"outputs\":[\"c\"]},"
                            "{\"op\":\"Relu\",\"inputs\":[\"c\"],\"outputs\":[\"y\"]}]}"),
                  "fuse-elementwise");
  cr_expect_eq(c.arena_bytes, 4032, "expected one 64-aligned 4000-byte buffer, got %lld",
               (long long)c.arena_bytes);
  kiln_compilation_free(&c);
}

Test(passes, dce_drops_unused_branch) {
  kiln_compilation c;
  compile_all(
      &c,
      load_text("{\"format\":\"kiln-model\",\"version\":1,\"name\":\"dead\","
                "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[4]}],"
                "\"outputs\":[{\"name\":\"y\"}],\"nodes\":["
                "{\"op\":\"Tanh\",\"name\":\"unused\",\"inputs\":[\"x\"],\"outputs\":[\"t\"]},"
                "{\"op\":\"Sigmoid\",\"name\":\"unused2\",\"inputs\":[\"t\"],\"outputs\":[\"u\"]},"
                "{\"op\":\"Relu\",\"name\":\"kept\",\"inputs\":[\"x\"],\"outputs\":[\"y\"]}]}"));
  cr_expect_eq(c.g->n_nodes, 1);
  cr_expect_str_eq(c.g->nodes[0].name, "kept");
  cr_expect_eq(c.prog->n_kernels, 1);
  kiln_compilation_free(&c);
}

static bool any_flag(const kiln_lstmt *s, unsigned flag) {
  if (s->kind == LS_FOR) return (s->flags & flag) || any_flag(s->body, flag);
  if (s->kind == LS_BLOCK)
    for (int i = 0; i < s->n; i++)
      if (any_flag(s->stmts[i], flag)) return true;
  if (s->kind == LS_IF) return any_flag(s->then_, flag) || (s->else_ && any_flag(s->else_, flag));
  return false;
}

// A thread team pays for a loop with much work, or with some work over more data than one core's
// cache holds; LeNet-5's kernels (at most ~120k MACs over a few KB) stay serial, the MLP's fc1
// and fc2 (1.6 MB and 512 KB of weights) run in parallel, its fc3 (2,560 MACs) does not.
Test(passes, schedule_parallelizes_big_kernels_only) {
  kiln_compilation c;
  compile_all(&c, load_sample(2));  // lenet5
  const kiln_lprog *p = c.prog;
  cr_assert_str_eq(p->kernels[0].op, "Conv");
  for (int k = 0; k < p->n_kernels; k++)
    cr_expect(!any_flag(p->kernels[k].body, KILN_LOOP_PARALLEL), "lenet5's %s (%s) is parallel",
              p->kernels[k].name, p->kernels[k].op);
  bool any_vector = false;
  for (int k = 0; k < p->n_kernels; k++)
    any_vector |= any_flag(p->kernels[k].body, KILN_LOOP_VECTORIZE);
  cr_expect(any_vector, "no loop marked for vectorization");
  kiln_compilation_free(&c);
  compile_all(&c, load_sample(1));  // mlp
  p = c.prog;
  cr_assert_geq(p->n_kernels, 3);
  cr_expect(any_flag(p->kernels[0].body, KILN_LOOP_PARALLEL), "fc1 (400k MACs) is not parallel");
  cr_expect(any_flag(p->kernels[1].body, KILN_LOOP_PARALLEL), "fc2 (512 KB) is not parallel");
  const kiln_lkernel *last = &p->kernels[p->n_kernels - 1];
  cr_expect(!any_flag(last->body, KILN_LOOP_PARALLEL), "fc3 (2,560 MACs) should stay serial");
  kiln_compilation_free(&c);
}

// The first vectorized reduction loop in s (NULL: none).
static const kiln_lstmt *reduction_loop(const kiln_lstmt *s) {
  if (s->kind == LS_FOR && (s->flags & KILN_LOOP_REDUCE) && (s->flags & KILN_LOOP_VECTORIZE))
    return s;
  const kiln_lstmt *r = NULL;
  if (s->kind == LS_FOR) r = reduction_loop(s->body);
  for (int i = 0; s->kind == LS_BLOCK && !r && i < s->n; i++) r = reduction_loop(s->stmts[i]);
  if (s->kind == LS_IF && !r) r = reduction_loop(s->then_);
  if (s->kind == LS_IF && !r && s->else_) r = reduction_loop(s->else_);
  return r;
}

Test(passes, schedule_sums_several_outputs_per_loop) {
  // The MLP's fc1 (512 outputs, transB = 1): 4 dot products per vectorized loop over k, so 4
  // independent accumulator chains.
  kiln_compilation c;
  compile_all(&c, load_sample(1));  // mlp
  const kiln_lstmt *r = reduction_loop(c.prog->kernels[0].body);
  cr_assert(r, "fc1 has no vectorized reduction");
  cr_expect_eq(r->n_reduce, 4, "fc1 sums %d outputs per loop over k, expected 4", r->n_reduce);
  for (int i = 0; i < r->n_reduce; i++) cr_expect_eq(r->reduce_ops[i], LB_ADD);
  kiln_compilation_free(&c);
  // BatchNormTrainGrad's sum(dy) and sum(dy (x - m)): one sweep, two accumulators.
  char path[512];
  snprintf(path, sizeof path, "%s/ops/bntrain_relu_grad/model.json", KILN_TEST_GOLDENS_DIR);
  compile_all(&c, model_or_fail(path));
  r = reduction_loop(c.prog->kernels[c.prog->n_kernels - 1].body);
  cr_assert(r, "BatchNormTrainGrad has no vectorized reduction");
  cr_expect_eq(r->n_reduce, 2, "BatchNormTrainGrad's sums: %d per loop, expected 2", r->n_reduce);
  kiln_compilation_free(&c);
}

// A loop over 64 elements of x whose body is built by `body` (acc and acc2 declared before it),
// then scheduled: returns the loop's flags.
typedef void (*body_fn)(kiln_lb *b, int x, int y, int i, int acc, int acc2);
static unsigned schedule_flags(body_fn body) {
  kiln_lprog *p = kiln_lprog_new("sched");
  kiln_lbuf in = {.name = "x", .kind = KILN_BUF_INPUT, .dtype = KILN_F32, .numel = 64};
  kiln_lbuf out = {.name = "y", .kind = KILN_BUF_OUTPUT, .dtype = KILN_F32, .numel = 64};
  int x = kiln_lprog_add_buf(p, &in), y = kiln_lprog_add_buf(p, &out);
  kiln_lb b;
  kiln_lb_begin(&b, p, kiln_lprog_add_kernel(p, "Test", "t"));
  int acc = kiln_lb_decl(&b, "acc", KILN_F32, lx_float(&b, KILN_F32, 0));
  int acc2 = kiln_lb_decl(&b, "acc2", KILN_F32, lx_float(&b, KILN_F32, 0));
  int i = kiln_lb_for_n(&b, "i", 64);
  body(&b, x, y, i, acc, acc2);
  kiln_lstmt *loop = kiln_lb_end_for(&b);
  kiln_lb_store(&b, y, lx_int(&b, 0), lx_bin(&b, LB_ADD, lx_var(&b, acc), lx_var(&b, acc2)));
  kiln_lb_end(&b);
  kiln_compilation c = {.prog = p};
  kiln_diag d;
  kiln_diag_init(&d, "test");
  bool changed;
  cr_assert(kiln_pass_schedule(&c, &d, &changed));
  cr_assert(kiln_lprog_verify(p, stderr));
  unsigned flags = loop->flags;
  kiln_lprog_free(p);
  return flags;
}

static kiln_lexpr *x_at(kiln_lb *b, int x, int i) { return lx_load(b, x, lx_var(b, i)); }

// acc += x[i]; acc2 = max(acc2, x[i]): two independent reductions
static void two_sums(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  (void)y;
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), x_at(b, x, i)));
  kiln_lb_assign(b, acc2, lx_bin(b, LB_MAX, lx_var(b, acc2), x_at(b, x, i)));
}

// acc += x[i]; acc2 += acc: acc2 reads the running sum
static void chained_sums(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  (void)y;
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), x_at(b, x, i)));
  kiln_lb_assign(b, acc2, lx_bin(b, LB_ADD, lx_var(b, acc2), lx_var(b, acc)));
}

// acc += x[i]; y[i] = acc: a prefix sum
static void prefix_sum(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  (void)acc2;
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), x_at(b, x, i)));
  kiln_lb_store(b, y, lx_var(b, i), lx_var(b, acc));
}

// acc += x[i] twice
static void twice(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  (void)y, (void)acc2;
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), x_at(b, x, i)));
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), x_at(b, x, i)));
}

// y[i] = x[i], and the same in a loop the lowering marked serial (kiln_lb_serial)
static void copy(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  (void)acc, (void)acc2;
  kiln_lb_store(b, y, lx_var(b, i), x_at(b, x, i));
}

static void copy_serial(kiln_lb *b, int x, int y, int i, int acc, int acc2) {
  kiln_lb_serial(b);
  copy(b, x, y, i, acc, acc2);
}

Test(passes, schedule_leaves_serial_loops_alone) {
  cr_expect(schedule_flags(copy) & KILN_LOOP_VECTORIZE, "a copy loop not vectorized");
  unsigned flags = schedule_flags(copy_serial);
  cr_expect_eq(flags & (KILN_LOOP_VECTORIZE | KILN_LOOP_PARALLEL), 0,
               "a loop marked serial was annotated (flags %#x)", flags);
  cr_expect(flags & KILN_LOOP_SERIAL, "the serial mark was lost");
}

Test(passes, schedule_vectorizes_independent_reductions_only) {
  unsigned vr = KILN_LOOP_VECTORIZE | KILN_LOOP_REDUCE;
  cr_expect_eq(schedule_flags(two_sums) & vr, vr, "two independent sums not vectorized");
  cr_expect_eq(schedule_flags(chained_sums) & vr, 0, "a sum reading another vectorized");
  cr_expect_eq(schedule_flags(prefix_sum) & vr, 0, "a prefix sum vectorized");
  cr_expect_eq(schedule_flags(twice) & vr, 0, "an accumulator updated twice vectorized");
}

Test(loop_ir, verifier_rejects_bad_programs) {
  kiln_lprog *p = kiln_lprog_new("bad");
  kiln_lbuf in = {.name = "x", .kind = KILN_BUF_INPUT, .dtype = KILN_F32, .numel = 4};
  int x = kiln_lprog_add_buf(p, &in);
  kiln_lkernel *k = kiln_lprog_add_kernel(p, "Test", "t");
  kiln_lb b;
  kiln_lb_begin(&b, p, k);
  int i = kiln_lb_for_n(&b, "i", 4);
  kiln_lb_store(&b, x, lx_var(&b, i), lx_float(&b, KILN_F32, 1.0));  // writes an input
  kiln_lb_end_for(&b);
  kiln_lb_end(&b);
  FILE *sink = fopen("/dev/null", "w");
  cr_expect(!kiln_lprog_verify(p, sink), "a store into an input passed the verifier");
  fclose(sink);
  kiln_lprog_free(p);
}

Test(loop_ir, verifier_rejects_type_mismatch_and_scope) {
  kiln_lprog *p = kiln_lprog_new("bad2");
  kiln_lbuf out = {.name = "y", .kind = KILN_BUF_OUTPUT, .dtype = KILN_F32, .numel = 4};
  int y = kiln_lprog_add_buf(p, &out);
  kiln_lkernel *k = kiln_lprog_add_kernel(p, "Test", "t");
  kiln_lb b;
  kiln_lb_begin(&b, p, k);
  int i = kiln_lb_for_n(&b, "i", 4);
  kiln_lb_end_for(&b);
  kiln_lb_store(&b, y, lx_var(&b, i), lx_float(&b, KILN_F32, 0));  // i is out of scope here
  kiln_lb_end(&b);
  FILE *sink = fopen("/dev/null", "w");
  cr_expect(!kiln_lprog_verify(p, sink), "a loop variable used outside its loop passed");
  fclose(sink);
  kiln_lprog_free(p);
}

Test(loop_ir, builder_folds_index_constants) {
  kiln_lprog *p = kiln_lprog_new("fold");
  kiln_lkernel *k = kiln_lprog_add_kernel(p, "Test", "t");
  kiln_lb b;
  kiln_lb_begin(&b, p, k);
  kiln_lexpr *e = lx_madd(&b, lx_int(&b, 3), 4, lx_int(&b, 5));
  cr_expect_eq(e->kind, LE_INT);
  cr_expect_eq(e->i, 17);
  int v = kiln_lb_var(&b, "i", KILN_I64);
  cr_expect_eq(lx_mul(&b, lx_var(&b, v), lx_int(&b, 1))->kind, LE_VAR);
  cr_expect_eq(lx_add(&b, lx_int(&b, 0), lx_var(&b, v))->kind, LE_VAR);
  kiln_lb_end(&b);
  kiln_lprog_free(p);
}

Test(passes, fold_constants_evaluates_constant_subgraphs) {
  // c = a + b with a, b constants folds to a param holding [11, 22, 33]; y = x * c stays.
  kiln_graph *g = load_text(
      "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"fold\","
      "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[3]}],\"outputs\":[{\"name\":\"y\"}]"
      ","
      "\"params\":[{\"name\":\"a\",\"dtype\":\"f32\",\"shape\":[3],\"init\":{\"kind\":\"values\","
      "\"values\":[1,2,3]}},{\"name\":\"b\",\"dtype\":\"f32\",\"shape\":[3],\"init\":{\"kind\":"
      "\"values\",\"values\":[10,20,30]}}],\"nodes\":["
      "{\"op\":\"Add\",\"inputs\":[\"a\",\"b\"],\"outputs\":[\"c\"]},"
      "{\"op\":\"Mul\",\"inputs\":[\"x\",\"c\"],\"outputs\":[\"y\"]}]}");
  // Folding happens while shapes are inferred, so the loaded graph is already folded.
  cr_assert_eq(g->n_nodes, 1, "the constant Add was not folded");
  const kiln_tensor *c = &g->tensors[kiln_graph_find_tensor(g, "c")];
  cr_assert_eq(c->kind, KILN_TENSOR_PARAM);
  for (int i = 0; i < 3; i++) cr_expect_float_eq(kiln_tensor_get(c, i), 11.0 * (i + 1), 0);
  kiln_compilation comp;
  compile_all(&comp, g);
  cr_expect_eq(comp.prog->n_kernels, 1);
  kiln_compilation_free(&comp);
}

Test(passes, cse_merges_identical_nodes) {
  kiln_compilation c;
  compile_without(&c,
                  load_text("{\"format\":\"kiln-model\",\"version\":1,\"name\":\"cse\","
                            "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[8]}],"
                            "\"outputs\":[{\"name\":\"y\"}],\"nodes\":["
                            "{\"op\":\"Tanh\",\"inputs\":[\"x\"],\"outputs\":[\"t1\"]},"
                            "{\"op\":\"Tanh\",\"inputs\":[\"x\"],\"outputs\":[\"t2\"]},"
                            "{\"op\":\"Sigmoid\",\"inputs\":[\"x\"],\"outputs\":[\"s\"]},"
                            "{\"op\":\"Add\",\"inputs\":[\"t1\",\"t2\"],\"outputs\":[\"u\"]},"
                            "{\"op\":\"Add\",\"inputs\":[\"u\",\"s\"],\"outputs\":[\"y\"]}]}"),
                  "fuse-elementwise");
  cr_expect_eq(c.g->n_nodes, 4, "expected one Tanh, one Sigmoid and two Adds");
  int tanh_count = 0;
  for (int i = 0; i < c.g->n_nodes; i++) tanh_count += strcmp(c.prog->kernels[i].op, "Tanh") == 0;
  cr_expect_eq(tanh_count, 1);
  // The surviving Add reads the one Tanh twice.
  const kiln_node *add = &c.g->nodes[2];
  cr_expect_eq(add->inputs[0], add->inputs[1]);
  kiln_compilation_free(&c);
}

// ---- fold-batchnorm ----
// (Included here rather than at the top: this section was appended to a shared file.)
#include <math.h>

#include "../compiler/interp.h"

// Appends `count` values of a fixed, sign-varying sequence (seeded by `seed`) as a JSON list.
static void append_values(char *buf, size_t size, int count, int seed, double lo, double span) {
  strncat(buf, "[", size - strlen(buf) - 1);
  for (int i = 0; i < count; i++) {
    char v[32];
    double x = lo + span * (0.5 + 0.5 * sin(1.7 * (i + 1) + 0.9 * seed));
    snprintf(v, sizeof v, "%s%.6f", i ? "," : "", x);
    strncat(buf, v, size - strlen(buf) - 1);
  }
  strncat(buf, "]", size - strlen(buf) - 1);
}

static void append_param(char *buf, size_t size, const char *name, const char *shape, int count,
                         int seed, double lo, double span) {
  char head[160];
  snprintf(head, sizeof head,
           "%s{\"name\":\"%s\",\"dtype\":\"f32\",\"shape\":%s,\"init\":{\"kind\":\"values\","
           "\"values\":",
           strcmp(name, "w") == 0 ? "" : ",", name, shape);
  strncat(buf, head, size - strlen(buf) - 1);
  append_values(buf, size, count, seed, lo, span);
  strncat(buf, "}}", size - strlen(buf) - 1);
}

// x (1, 2, 5, 5) -> Conv w (3, 2, 3, 3), pads 1 -> c -> BatchNormalization -> b -> Relu -> y.
// With `shared`, c is also a graph output, so the BN must not be folded.
static char *conv_bn_model(bool shared) {
  size_t size = 16384;
  char *m = calloc(size, 1);
  snprintf(m, size,
           "{\"format\":\"kiln-model\",\"version\":1,\"name\":\"convbn\","
           "\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[1,2,5,5]}],"
           "\"outputs\":[{\"name\":\"y\"}%s],\"params\":[",
           shared ? ",{\"name\":\"c\"}" : "");
  append_param(m, size, "w", "[3,2,3,3]", 54, 1, -1, 2);
  append_param(m, size, "scale", "[3]", 3, 2, 0.5, 1.5);
  append_param(m, size, "shift", "[3]", 3, 3, -0.5, 1);
  append_param(m, size, "mean", "[3]", 3, 4, -0.3, 0.6);
  append_param(m, size, "var", "[3]", 3, 5, 0.2, 2);
  strncat(m,
          "],\"nodes\":["
          "{\"op\":\"Conv\",\"name\":\"conv\",\"inputs\":[\"x\",\"w\"],\"outputs\":[\"c\"],"
          "\"attrs\":{\"pads\":[1,1,1,1]}},"
          "{\"op\":\"BatchNormalization\",\"name\":\"bn\",\"inputs\":[\"c\",\"scale\",\"shift\","
          "\"mean\",\"var\"],\"outputs\":[\"b\"],\"attrs\":{\"epsilon\":0.001}},"
          "{\"op\":\"Relu\",\"name\":\"relu\",\"inputs\":[\"b\"],\"outputs\":[\"y\"]}]}",
          size - strlen(m) - 1);
  return m;
}

static int count_op(const kiln_graph *g, int op) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++) count += g->nodes[i].op == op;
  return count;
}

static kiln_array conv_bn_input(void) {
  kiln_array x = {.dtype = KILN_F32, .rank = 4, .shape = {1, 2, 5, 5}};
  x.nbytes = 50 * sizeof(float);
  x.data = kiln_aligned_alloc(x.nbytes);
  for (int i = 0; i < 50; i++) kiln_element_set(x.data, x.dtype, i, sin(0.37 * i) * 2);
  return x;
}

Test(passes, fold_batchnorm_folds_conv_bn_and_keeps_results) {
  char *json = conv_bn_model(false);
  kiln_compilation c;
  compile_all(&c, load_text(json));
  cr_expect_eq(count_op(c.g, KILN_OP_BatchNormalization), 0, "the BatchNormalization stayed");
  // fuse-epilogue then folds the Relu in: one convolution either way.
  cr_expect_eq(count_op(c.g, KILN_OP_Conv) + count_op(c.g, KILN_OP_FusedConv), 1);
  kiln_compilation_free(&c);
  // The built binary (folded) against the interpreter on the unfolded graph.
  char *dir = make_temp_dir();
  char *model = path_join(dir, "convbn.json"), *exe = path_join(dir, "convbn");
  char *xpath = path_join(dir, "x.npy"), *ypath = path_join(dir, "y.npy");
  FILE *f = fopen(model, "w");
  fputs(json, f);
  fclose(f);
  kiln_array x = conv_bn_input(), want = {0};
  char err[256];
  cr_assert_eq(kiln_npy_write(xpath, &x, err, sizeof err), 0, "%s", err);
  kiln_graph *g = load_text(json);
  kiln_diag d;
  kiln_diag_init(&d, model);
  cr_assert(kiln_interp_run(g, &x, &want, &d));
  char *build[] = {KILN_EXE, "build", model, "-o", exe, NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build failed: %s", r.err);
  run_result_free(&r);
  char *run[] = {exe, "--input", xpath, "--output", ypath, NULL};
  r = run_cmd(run, 60);
  cr_assert_eq(r.status, 0, "the built model failed: %s", r.err);
  run_result_free(&r);
  kiln_array got = read_npy_or_fail(ypath);
  char why[512];
  cr_expect(arrays_close(&got, &want, 1e-5, 1e-5, why, sizeof why), "folded vs unfolded: %s", why);
  kiln_array_free(&got);
  kiln_array_free(&want);
  kiln_array_free(&x);
  kiln_graph_free(g);
  rm_rf(dir);
  free(model), free(exe), free(xpath), free(ypath), free(dir), free(json);
}

Test(passes, fold_batchnorm_leaves_shared_conv_output) {
  char *json = conv_bn_model(true);
  kiln_compilation c;
  compile_all(&c, load_text(json));
  cr_expect_eq(count_op(c.g, KILN_OP_BatchNormalization), 1, "folded a Conv whose output is read");
  kiln_compilation_free(&c);
  free(json);
}

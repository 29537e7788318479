// Gradient checks (docs/training.md): every gradient rule and backward op against central finite
// differences of the loss, in double precision through the reference interpreter.
//
// Each case is a small model in f64 whose params feed the op under test, with a `training`
// section: the loss (mse summed, unless the case says otherwise) and plain SGD with lr = 1, so one
// training step moves each param by exactly -dL/dp. The reference is (L(p + h) - L(p - h)) / 2h
// with L read from the same training graph's loss output (its STATE restored after every run).
// The kinks are checked against their stated subgradients: ReLU'(0) = 0, |x|'(0) = 0, max-pool
// ties go to the first maximal element in window order.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/autodiff/train_mode.h"
#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "test_util.h"

TestSuite(grad, .fini = check_leaks);

typedef struct grad_case {
  const char *inputs;        // JSON array items (may be "")
  const char *params;        // JSON array items
  const char *nodes;         // JSON array items
  const char *output;        // the tensor the loss reads
  const char *graph_output;  // the model's output (default: output)
  const char *loss;          // the loss object's fields besides output/target (default mse, sum)
  const char *target;        // target dtype (default f64)
  const char *extra;  // more fields of the training section ("" or ", \"regularization\": ...")
  int64_t batch;      // training.batch_size: the inputs' leading dim (1 without inputs)
} grad_case;

typedef struct harness {
  kiln_graph *g;
  kiln_array *in, *out;
  void **snapshot;  // per tensor: STATE data before any run
  char *dir;
} harness;

static uint64_t rng_state;
static double uniform(void) {  // [0, 1), SplitMix64
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static size_t tensor_bytes(const kiln_tensor *t) {
  return (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
}

// Random inputs: floats in [-1, 1) (targets of bce / kl_div in (0, 1)), integer labels in
// [0, classes) where classes is the dim 1 of the tensor the loss reads.
static void make_inputs(harness *h, const grad_case *c) {
  kiln_graph *g = h->g;
  const kiln_tensor *y = &g->tensors[g->outputs[1 < g->n_outputs ? 1 : 0]];
  int64_t classes = y->shape.rank == 2 ? y->shape.dim[1] : 2;
  bool unit = c->loss && (strstr(c->loss, "bce") || strstr(c->loss, "kl_div"));
  h->in = calloc((size_t)g->n_inputs + 1, sizeof(kiln_array));
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_tensor *t = &g->tensors[g->inputs[i]];
    kiln_array *a = &h->in[i];
    a->dtype = (int)t->dtype, a->rank = t->shape.rank;
    memcpy(a->shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
    a->nbytes = tensor_bytes(t);
    a->data = kiln_aligned_alloc(a->nbytes + 64);
    for (int64_t k = 0; k < kiln_shape_numel(&t->shape); k++) {
      double v = kiln_dtype_is_float(t->dtype) ? (unit ? 0.05 + 0.9 * uniform() : 2 * uniform() - 1)
                                               : floor(uniform() * (double)classes);
      kiln_element_set(a->data, a->dtype, k, v);
    }
  }
}

static void open_case(harness *h, const grad_case *c) {
  memset(h, 0, sizeof(*h));
  rng_state = 12345;
  h->dir = make_temp_dir();
  char *path = path_join(h->dir, "model.json");
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(f,
          "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"g\",\n"
          " \"inputs\": [%s], \"outputs\": [{\"name\": \"%s\"}],\n"
          " \"params\": [%s],\n \"nodes\": [%s],\n"
          " \"training\": {\"batch_size\": %lld, \"loss\": {\"output\": \"%s\", \"target\": "
          "{\"name\": \"t\", \"dtype\": \"%s\"}, %s},\n"
          "   \"optimizer\": {\"kind\": \"sgd\", \"lr\": 1}%s}}\n",
          c->inputs ? c->inputs : "", c->graph_output ? c->graph_output : c->output, c->params,
          c->nodes, (long long)(c->batch ? c->batch : 1), c->output, c->target ? c->target : "f64",
          c->loss ? c->loss : "\"kind\": \"mse\", \"reduction\": \"sum\"",
          c->extra ? c->extra : "");
  fclose(f);
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_training tr;
  kiln_load_options o = {.training = &tr};
  h->g = kiln_load_model_ex(path, &o, &d);
  cr_assert(h->g, "the case model does not load (see stderr)");
  cr_assert(kiln_build_training_graph(h->g, &tr, &d), "no training graph (see stderr)");
  free(path);
  make_inputs(h, c);
  h->out = calloc((size_t)h->g->n_outputs + 1, sizeof(kiln_array));
  h->snapshot = calloc((size_t)h->g->n_tensors + 1, sizeof(void *));
  for (int t = 0; t < h->g->n_tensors; t++) {
    const kiln_tensor *x = &h->g->tensors[t];
    if (x->kind != KILN_TENSOR_STATE) continue;
    h->snapshot[t] = malloc(tensor_bytes(x) + 1);
    memcpy(h->snapshot[t], x->data, tensor_bytes(x));
  }
}

static void restore(harness *h) {
  for (int t = 0; t < h->g->n_tensors; t++)
    if (h->snapshot[t])
      memcpy(h->g->tensors[t].data, h->snapshot[t], tensor_bytes(&h->g->tensors[t]));
}

// One training step from the snapshot, with element k of tensor p moved by delta; the loss.
static double step_loss(harness *h, int p, int64_t k, double delta) {
  restore(h);
  kiln_tensor *x = &h->g->tensors[p];
  if (p >= 0) kiln_element_set(x->data, (int)x->dtype, k, kiln_tensor_get(x, k) + delta);
  kiln_diag d;
  kiln_diag_init(&d, "grad");
  cr_assert(kiln_interp_run(h->g, h->in, h->out, &d));
  double loss = kiln_element_get(h->out[0].data, h->out[0].dtype, 0);
  for (int i = 0; i < h->g->n_outputs; i++) kiln_array_free(&h->out[i]);
  return loss;
}

static void close_case(harness *h) {
  for (int t = 0; t < h->g->n_tensors; t++) free(h->snapshot[t]);
  for (int i = 0; i < h->g->n_inputs; i++) kiln_array_free(&h->in[i]);
  free(h->snapshot);
  free(h->in);
  free(h->out);
  kiln_graph_free(h->g);
  rm_rf(h->dir);
  free(h->dir);
}

// A trainable param (a STATE weight: not the step counter, the dropout seed or running stats).
static bool is_param(const kiln_graph *g, int t) {
  return g->tensors[t].kind == KILN_TENSOR_STATE && g->tensors[t].role == KILN_ROLE_WEIGHT;
}

// The analytic gradient of every element of trainable param p: w - w' after one SGD step, lr 1.
static double *analytic(harness *h, int p) {
  int64_t n = kiln_shape_numel(&h->g->tensors[p].shape);
  double *g = calloc((size_t)n, sizeof(double));
  step_loss(h, -1, 0, 0);
  for (int64_t k = 0; k < n; k++)
    g[k] = kiln_element_get(h->snapshot[p], (int)h->g->tensors[p].dtype, k) -
           kiln_tensor_get(&h->g->tensors[p], k);
  return g;
}

// Every trainable param's gradient against central differences, on an open case.
static void check_open_gradients(harness *h, double rtol, double atol) {
  int checked = 0;
  for (int p = 0; p < h->g->n_tensors; p++) {
    if (!is_param(h->g, p)) continue;
    double *g = analytic(h, p);
    for (int64_t k = 0; k < kiln_shape_numel(&h->g->tensors[p].shape); k++) {
      double eps = 1e-4;  // rounding error ~1e-16 |L| / eps, truncation ~eps^2
      double fd = (step_loss(h, p, k, eps) - step_loss(h, p, k, -eps)) / (2 * eps);
      cr_expect(fabs(g[k] - fd) <= atol + rtol * fabs(fd),
                "%s[%lld]: gradient %.12g, finite difference %.12g", h->g->tensors[p].name,
                (long long)k, g[k], fd);
      checked++;
    }
    free(g);
  }
  cr_expect(checked > 0, "no trainable param");
}

static void check_gradients(const grad_case *c, double rtol, double atol) {
  harness h;
  open_case(&h, c);
  check_open_gradients(&h, rtol, atol);
  close_case(&h);
}

// A random f64 param (normal, or uniform in [0.5, 1.5) for divisors); seed: a string literal.
#define PARAM(name, shape, seed)                                   \
  "{\"name\": \"" name "\", \"dtype\": \"f64\", \"shape\": " shape \
  ", \"init\": {\"kind\": \"normal\", \"std\": 1, \"seed\": " seed "}}"
#define PARAM_POS(name, shape, seed)                               \
  "{\"name\": \"" name "\", \"dtype\": \"f64\", \"shape\": " shape \
  ", \"init\": {\"kind\": \"uniform\", \"low\": 0.5, \"high\": 1.5, \"seed\": " seed "}}"
#define NODE(op, in, out, attrs) \
  "{\"op\": \"" op "\", \"inputs\": " in ", \"outputs\": [\"" out "\"], \"attrs\": {" attrs "}}"

static const double RTOL = 1e-5, ATOL = 1e-6;

// ---- Core ops ----

Test(grad, gemm_with_input_and_bias) {
  grad_case c = {.inputs = "{\"name\": \"x\", \"dtype\": \"f64\", \"shape\": [3, 4]}",
                 .params = PARAM("w", "[4, 5]", "1") "," PARAM("b", "[5]", "2"),
                 .nodes = NODE("Gemm", "[\"x\", \"w\", \"b\"]", "y", ""),
                 .output = "y",
                 .batch = 3};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, gemm_transposed_scaled) {
  grad_case c = {.params = PARAM("a", "[4, 3]", "3") "," PARAM("w", "[5, 4]", "4") "," PARAM(
                     "b", "[1, 5]", "5"),
                 .nodes = NODE("Gemm", "[\"a\", \"w\", \"b\"]", "y",
                               "\"transA\": 1, \"transB\": 1, \"alpha\": 0.7, \"beta\": 1.3"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, gemm_full_bias_no_trans_a) {
  grad_case c = {.params = PARAM("a", "[2, 3]", "6") "," PARAM("w", "[4, 3]", "7") "," PARAM(
                     "b", "[2, 4]", "8"),
                 .nodes = NODE("Gemm", "[\"a\", \"w\", \"b\"]", "y", "\"transB\": 1"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, matmul_batched_broadcast) {
  grad_case c = {.params = PARAM("a", "[2, 3, 4]", "9") "," PARAM("b", "[4, 5]", "10"),
                 .nodes = NODE("MatMul", "[\"a\", \"b\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, matmul_vector_and_batched_b) {
  grad_case c = {.params = PARAM("a", "[4]", "11") "," PARAM("b", "[2, 4, 3]", "12"),
                 .nodes = NODE("MatMul", "[\"a\", \"b\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, conv_groups_strides_pads_dilations) {
  grad_case c = {.params = PARAM("x", "[2, 4, 7, 8]", "13") "," PARAM(
                     "w", "[6, 2, 3, 3]", "14") "," PARAM("b", "[6]", "15"),
                 .nodes = NODE("Conv", "[\"x\", \"w\", \"b\"]", "y",
                               "\"group\": 2, \"strides\": [2, 1], \"pads\": [1, 0, 2, 1], "
                               "\"dilations\": [1, 2]"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, conv_same_padding_stride_1) {
  grad_case c = {.params = PARAM("x", "[2, 3, 5, 5]", "16") "," PARAM("w", "[4, 3, 3, 3]", "17"),
                 .nodes = NODE("Conv", "[\"x\", \"w\"]", "y", "\"pads\": [1, 1, 1, 1]"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, maxpool_overlapping_padded) {
  grad_case c = {
      .params = PARAM("x", "[2, 2, 6, 5]", "18"),
      .nodes = NODE("MaxPool", "[\"x\"]", "y", "\"kernel_shape\": [3, 3], \"pads\": [1, 1, 1, 1]"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, maxpool_ceil_mode_strided) {
  grad_case c = {.params = PARAM("x", "[1, 2, 5, 5]", "19"),
                 .nodes = NODE("MaxPool", "[\"x\"]", "y",
                               "\"kernel_shape\": [2, 2], \"strides\": [2, 2], \"ceil_mode\": 1"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, averagepool_excluding_pads) {
  grad_case c = {
      .params = PARAM("x", "[2, 2, 6, 5]", "20"),
      .nodes = NODE("AveragePool", "[\"x\"]", "y",
                    "\"kernel_shape\": [3, 3], \"strides\": [2, 2], \"pads\": [1, 1, 1, 1]"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, averagepool_including_pads_ceil_mode) {
  grad_case c = {
      .params = PARAM("x", "[1, 2, 5, 6]", "21"),
      .nodes = NODE("AveragePool", "[\"x\"]", "y",
                    "\"kernel_shape\": [2, 3], \"strides\": [2, 2], \"pads\": [1, 0, 0, 1], "
                    "\"count_include_pad\": 1, \"ceil_mode\": 1"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, add_sub_mul_div_broadcasting) {
  grad_case c = {
      .params = PARAM("a", "[2, 3, 4]", "22") "," PARAM("b", "[3, 1]", "23") "," PARAM(
          "c", "[4]", "24") "," PARAM_POS("d", "[2, 1, 1]", "25"),
      .nodes = NODE("Add", "[\"a\", \"b\"]", "s", "") "," NODE(
          "Sub", "[\"c\", \"s\"]", "u", "") "," NODE("Mul", "[\"u\", \"b\"]", "m",
                                                     "") "," NODE("Div", "[\"m\", \"d\"]", "y", ""),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, where_broadcasting) {
  // cond (3, 1) broadcast along columns, x (3, 4) and y (4) along rows: y's gradient sums the rows
  // cond leaves to it.
  grad_case c = {.params =
                     "{\"name\": \"cond\", \"dtype\": \"bool\", \"shape\": [3, 1], "
                     "\"init\": {\"kind\": \"values\", \"values\": [1, 0, 0]}}," PARAM(
                         "x", "[3, 4]", "61") "," PARAM("y", "[4]", "62"),
                 .nodes = NODE("Where", "[\"cond\", \"x\", \"y\"]", "w", ""),
                 .output = "w"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, fan_out_accumulates) {
  // y = p * p + relu(p) + sigmoid(p): three uses of p.
  grad_case c = {.params = PARAM("p", "[3, 4]", "26"),
                 .nodes = NODE("Mul", "[\"p\", \"p\"]", "sq", "") "," NODE(
                     "Relu", "[\"p\"]", "r",
                     "") "," NODE("Add", "[\"sq\", \"r\"]", "s",
                                  "") "," NODE("Sigmoid", "[\"p\"]", "g",
                                               "") "," NODE("Add", "[\"s\", \"g\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, activations) {
  grad_case c = {.params = PARAM("p", "[3, 5]", "27"),
                 .nodes = NODE("Tanh", "[\"p\"]", "a", "") "," NODE(
                     "Relu", "[\"a\"]", "b", "") "," NODE("Sigmoid", "[\"b\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, softmax_middle_axis) {
  grad_case c = {.params = PARAM("p", "[2, 3, 4]", "28"),
                 .nodes = NODE("Softmax", "[\"p\"]", "y", "\"axis\": 1"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, flatten_and_reshape) {
  grad_case c = {.params = PARAM("p", "[2, 3, 4]", "29") ", {\"name\": \"s\", \"dtype\": \"i64\", \"shape\": [2], \"init\": {\"kind\": \"values\", \"values\": [4, -1]}}," PARAM("q", "[4, 6]", "30"),
                 .nodes = NODE("Flatten", "[\"p\"]", "f", "\"axis\": 2") "," NODE("Reshape", "[\"f\", \"s\"]", "r", "") "," NODE("Mul", "[\"r\", \"q\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- Losses, regularization ----

// The loss reads p (or y = pred_node(p)); the model's output is r = relu(p) then.
static void check_loss(const char *loss, const char *target, const char *pred_node) {
  grad_case c = {.params = PARAM("p", "[4, 3]", "31"),
                 .nodes = pred_node ? pred_node : NODE("Relu", "[\"p\"]", "r", ""),
                 .output = pred_node ? "y" : "p",
                 .graph_output = pred_node ? "y" : "r",
                 .loss = loss,
                 .target = target};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, loss_mse_mean) { check_loss("\"kind\": \"mse\"", NULL, NULL); }
Test(grad, loss_mae) { check_loss("\"kind\": \"mae\", \"reduction\": \"sum\"", NULL, NULL); }
Test(grad, loss_huber) { check_loss("\"kind\": \"huber\", \"delta\": 0.5", NULL, NULL); }
Test(grad, loss_clipped_mse) { check_loss("\"kind\": \"clipped_mse\", \"clip\": 0.8", NULL, NULL); }
Test(grad, loss_bce_with_logits) { check_loss("\"kind\": \"bce_with_logits\"", NULL, NULL); }
Test(grad, loss_bce_on_sigmoid) {
  check_loss("\"kind\": \"bce\"", NULL, NODE("Sigmoid", "[\"p\"]", "y", ""));
}
Test(grad, loss_kl_div_batchmean) {
  check_loss("\"kind\": \"kl_div\", \"reduction\": \"batchmean\"", NULL, NULL);
}
Test(grad, loss_cross_entropy_mean) { check_loss("\"kind\": \"cross_entropy\"", "i64", NULL); }
Test(grad, loss_cross_entropy_sum_weighted) {
  check_loss("\"kind\": \"cross_entropy\", \"reduction\": \"sum\", \"weight\": \"sw\"", "i32",
             NULL);
}

Test(grad, regularization_l1_l2) {
  grad_case c = {.params = PARAM("w", "[3, 4]", "32") "," PARAM("b", "[4]", "33"),
                 .nodes = NODE("Add", "[\"w\", \"b\"]", "y", ""),
                 .output = "y",
                 .extra = ", \"regularization\": {\"l1\": 0.3, \"l2\": 0.2}"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- Kinks and clipping ----

// The analytic gradient of the single param of case c.
static double *case_gradient(const grad_case *c, harness *h, int64_t *n) {
  open_case(h, c);
  for (int p = 0; p < h->g->n_tensors; p++)
    if (is_param(h->g, p)) {
      *n = kiln_shape_numel(&h->g->tensors[p].shape);
      return analytic(h, p);
    }
  cr_assert_fail("no param");
  return NULL;
}

Test(grad, relu_at_zero_is_zero) {
  // L = sum (relu(p) - t)^2 with p = (0, 2, -2): dL/dp = (0, 2 (2 - t1), 0).
  grad_case c = {.params =
                     "{\"name\": \"p\", \"dtype\": \"f64\", \"shape\": [3], \"init\": "
                     "{\"kind\": \"values\", \"values\": [0, 2, -2]}}",
                 .nodes = NODE("Relu", "[\"p\"]", "y", ""),
                 .output = "y"};
  harness h;
  int64_t n;
  double *g = case_gradient(&c, &h, &n);
  cr_expect_eq(g[0], 0.0, "ReLU'(0) must be 0, got %g", g[0]);
  cr_expect(fabs(g[1] - 2 * (2 - kiln_element_get(h.in[0].data, h.in[0].dtype, 1))) < 1e-12);
  cr_expect_eq(g[2], 0.0);
  free(g);
  close_case(&h);
}

Test(grad, mae_at_zero_error_is_zero) {
  // p = t exactly: |p - t|'(0) = 0. The target input is set to the param's values.
  grad_case c = {.params =
                     "{\"name\": \"p\", \"dtype\": \"f64\", \"shape\": [2], \"init\": "
                     "{\"kind\": \"values\", \"values\": [0.5, -0.25]}}",
                 .nodes = NODE("Relu", "[\"p\"]", "r", ""),
                 .output = "p",
                 .graph_output = "r",
                 .loss = "\"kind\": \"mae\", \"reduction\": \"sum\""};
  harness h;
  open_case(&h, &c);
  kiln_element_set(h.in[0].data, h.in[0].dtype, 0, 0.5);
  kiln_element_set(h.in[0].data, h.in[0].dtype, 1, -0.25);
  int p = kiln_graph_find_tensor(h.g, "p");
  double *g = analytic(&h, p);
  cr_expect_eq(g[0], 0.0);
  cr_expect_eq(g[1], 0.0);
  free(g);
  close_case(&h);
}

Test(grad, maxpool_ties_go_to_first_element) {
  // x all equal: every 2x2 window's gradient goes to its top-left element.
  grad_case c = {
      .params =
          "{\"name\": \"x\", \"dtype\": \"f64\", \"shape\": [1, 1, 4, 4], "
          "\"init\": {\"kind\": \"constant\", \"value\": 1}}",
      .nodes = NODE("MaxPool", "[\"x\"]", "y", "\"kernel_shape\": [2, 2], \"strides\": [2, 2]"),
      .output = "y"};
  harness h;
  int64_t n;
  double *g = case_gradient(&c, &h, &n);
  for (int64_t i = 0; i < 16; i++) {
    int64_t r = i / 4, col = i % 4;
    bool first = r % 2 == 0 && col % 2 == 0;
    double t = kiln_element_get(h.in[0].data, h.in[0].dtype, (r / 2) * 2 + col / 2);
    double want = first ? 2 * (1 - t) : 0;
    cr_expect(fabs(g[i] - want) < 1e-12, "x[%lld]: gradient %g, expected %g", (long long)i, g[i],
              want);
  }
  free(g);
  close_case(&h);
}

Test(grad, clipping_scales_by_global_norm) {
  // With clip_grad_norm c, the step is g * min(1, c / (|g| + 1e-6)).
  grad_case plain = {.params = PARAM("w", "[3, 4]", "34") "," PARAM("b", "[4]", "35"),
                     .nodes = NODE("Add", "[\"w\", \"b\"]", "y", ""),
                     .output = "y"};
  grad_case clipped = plain;
  clipped.extra = ", \"clip_grad_norm\": 0.5";
  harness h1, h2;
  open_case(&h1, &plain);
  open_case(&h2, &clipped);
  int ps[2] = {kiln_graph_find_tensor(h1.g, "w"), kiln_graph_find_tensor(h1.g, "b")};
  double *g1[2], *g2[2], norm2 = 0;
  for (int i = 0; i < 2; i++) {
    g1[i] = analytic(&h1, ps[i]);
    g2[i] = analytic(&h2, kiln_graph_find_tensor(h2.g, h1.g->tensors[ps[i]].name));
    for (int64_t k = 0; k < kiln_shape_numel(&h1.g->tensors[ps[i]].shape); k++)
      norm2 += g1[i][k] * g1[i][k];
  }
  double scale = fmin(1.0, 0.5 / (sqrt(norm2) + 1e-6));
  cr_expect(scale < 1, "the case should clip (norm %g)", sqrt(norm2));
  for (int i = 0; i < 2; i++) {
    for (int64_t k = 0; k < kiln_shape_numel(&h1.g->tensors[ps[i]].shape); k++)
      cr_expect(fabs(g2[i][k] - g1[i][k] * scale) < 1e-12, "clipped gradient %g, expected %g",
                g2[i][k], g1[i][k] * scale);
    free(g1[i]);
    free(g2[i]);
  }
  close_case(&h1);
  close_case(&h2);
}

// ---- Unary math (grad rules composed from graph ops) ----

// L = sum (op(p) - t)^2 for p of shape (3, 4): normal, or uniform in [0.5, 1.5) when positive.
static void check_unary(const char *op, const char *attrs, bool positive, double rtol) {
  char node[256];
  snprintf(node, sizeof node, NODE("%s", "[\"p\"]", "y", "%s"), op, attrs);
  grad_case c = {.params = positive ? PARAM_POS("p", "[3, 4]", "40") : PARAM("p", "[3, 4]", "40"),
                 .nodes = node,
                 .output = "y"};
  check_gradients(&c, rtol, ATOL);
}

Test(grad, exp) { check_unary("Exp", "", false, RTOL); }
Test(grad, log) { check_unary("Log", "", true, RTOL); }
Test(grad, sqrt) { check_unary("Sqrt", "", true, RTOL); }
Test(grad, neg) { check_unary("Neg", "", false, RTOL); }
Test(grad, abs) { check_unary("Abs", "", false, RTOL); }
Test(grad, reciprocal) { check_unary("Reciprocal", "", true, RTOL); }
Test(grad, leaky_relu) { check_unary("LeakyRelu", "\"alpha\": 0.3", false, RTOL); }
Test(grad, elu) { check_unary("Elu", "\"alpha\": 0.7", false, RTOL); }
Test(grad, softplus) { check_unary("Softplus", "", false, RTOL); }
Test(grad, hard_sigmoid) {
  // alpha 0.5: |x| < 1 is inside, the normal draws land on both sides.
  check_unary("HardSigmoid", "\"alpha\": 0.5, \"beta\": 0.5", false, RTOL);
}
Test(grad, gelu_erf) { check_unary("Gelu", "", false, RTOL); }
Test(grad, erf) { check_unary("Erf", "", false, RTOL); }
Test(grad, identity) { check_unary("Identity", "", false, RTOL); }
Test(grad, clip_attrs) { check_unary("Clip", "\"min\": -0.5, \"max\": 0.7", false, RTOL); }
Test(grad, clip_min_only) { check_unary("Clip", "\"min\": -0.2", false, RTOL); }

Test(grad, clip_bound_inputs) {
  grad_case c = {.params = PARAM("p", "[3, 4]", "41") ", {\"name\": \"lo\", \"dtype\": \"f64\", "
                                                      "\"shape\": [1], \"init\": {\"kind\": "
                                                      "\"values\", \"values\": [-0.4]}}",
                 .nodes = NODE("Clip", "[\"p\", \"lo\", \"\"]", "y", ""),
                 .output = "y",
                 .extra = ", \"frozen\": [\"lo\"]"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, clip_passes_at_the_bounds) {
  // p = (-0.5, 0.7, 2): min <= x <= max passes the gradient, beyond max it does not.
  grad_case c = {.params =
                     "{\"name\": \"p\", \"dtype\": \"f64\", \"shape\": [3], \"init\": "
                     "{\"kind\": \"values\", \"values\": [-0.5, 0.7, 2]}}",
                 .nodes = NODE("Clip", "[\"p\"]", "y", "\"min\": -0.5, \"max\": 0.7"),
                 .output = "y"};
  harness h;
  int64_t n;
  double *g = case_gradient(&c, &h, &n);
  double t0 = kiln_element_get(h.in[0].data, h.in[0].dtype, 0);
  double t1 = kiln_element_get(h.in[0].data, h.in[0].dtype, 1);
  cr_expect(fabs(g[0] - 2 * (-0.5 - t0)) < 1e-12, "x = min: gradient %g", g[0]);
  cr_expect(fabs(g[1] - 2 * (0.7 - t1)) < 1e-12, "x = max: gradient %g", g[1]);
  cr_expect_eq(g[2], 0.0);
  free(g);
  close_case(&h);
}

Test(grad, abs_at_zero_is_zero) {
  grad_case c = {.params =
                     "{\"name\": \"p\", \"dtype\": \"f64\", \"shape\": [3], \"init\": "
                     "{\"kind\": \"values\", \"values\": [0, 1.5, -1.5]}}",
                 .nodes = NODE("Abs", "[\"p\"]", "y", ""),
                 .output = "y"};
  harness h;
  int64_t n;
  double *g = case_gradient(&c, &h, &n);
  double t1 = kiln_element_get(h.in[0].data, h.in[0].dtype, 1);
  double t2 = kiln_element_get(h.in[0].data, h.in[0].dtype, 2);
  cr_expect_eq(g[0], 0.0, "|x|'(0) must be 0, got %g", g[0]);
  cr_expect(fabs(g[1] - 2 * (1.5 - t1)) < 1e-12);
  cr_expect(fabs(g[2] + 2 * (1.5 - t2)) < 1e-12);
  free(g);
  close_case(&h);
}

Test(grad, pow_both_inputs_broadcast) {
  grad_case c = {.params = PARAM_POS("x", "[3, 4]", "42") "," PARAM("e", "[4]", "43"),
                 .nodes = NODE("Pow", "[\"x\", \"e\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, pow_integer_exponent) {
  grad_case c = {.params = PARAM("x", "[3, 4]", "44") ", {\"name\": \"e\", \"dtype\": \"i64\", "
                                                      "\"shape\": [1], \"init\": {\"kind\": "
                                                      "\"values\", \"values\": [3]}}",
                 .nodes = NODE("Pow", "[\"x\", \"e\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- Tensor plumbing and reductions ----

// A constant i64 param `name` (frozen by being an integer) with the given values.
#define INTS(name, shape, values)                                  \
  "{\"name\": \"" name "\", \"dtype\": \"i64\", \"shape\": " shape \
  ", \"init\": {\"kind\": "                                        \
  "\"values\", \"values\": " values "}}"

// y = op(p) * q with q random, so that every element of y's gradient differs.
static void check_times_weight(const char *p_shape, const char *op_node, const char *y_shape,
                               const char *more_params) {
  char params[512], nodes[512];
  snprintf(params, sizeof params, PARAM("p", "%s", "50") "," PARAM("q", "%s", "51") "%s", p_shape,
           y_shape, more_params);
  snprintf(nodes, sizeof nodes, "%s," NODE("Mul", "[\"o\", \"q\"]", "y", ""), op_node);
  grad_case c = {.params = params, .nodes = nodes, .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, transpose_perm) {
  check_times_weight("[2, 3, 4]", NODE("Transpose", "[\"p\"]", "o", "\"perm\": [1, 2, 0]"),
                     "[3, 4, 2]", "");
}
Test(grad, transpose_default) {
  check_times_weight("[2, 3, 4]", NODE("Transpose", "[\"p\"]", "o", ""), "[4, 3, 2]", "");
}
Test(grad, squeeze_unsqueeze) {
  check_times_weight("[2, 1, 3]",
                     NODE("Squeeze", "[\"p\", \"ax\"]", "s", "") "," NODE("Unsqueeze", "[\"s\"]",
                                                                          "o", "\"axes\": [0]"),
                     "[1, 2, 3]", "," INTS("ax", "[1]", "[1]"));
}
Test(grad, expand) {
  check_times_weight("[3, 1]", NODE("Expand", "[\"p\", \"sh\"]", "o", ""), "[2, 3, 4]",
                     "," INTS("sh", "[3]", "[2, 3, 4]"));
}
Test(grad, reduce_sum_keepdims) {
  check_times_weight("[2, 3, 4]", NODE("ReduceSum", "[\"p\", \"ax\"]", "o", ""), "[2, 1, 4]",
                     "," INTS("ax", "[1]", "[-2]"));
}
Test(grad, reduce_sum_all_axes) {
  check_times_weight("[2, 3, 4]", NODE("ReduceSum", "[\"p\"]", "o", "\"keepdims\": 0"), "[1]", "");
}
Test(grad, reduce_mean_dropping_axes) {
  check_times_weight("[2, 3, 4]",
                     NODE("ReduceMean", "[\"p\"]", "o", "\"axes\": [0, 2], \"keepdims\": 0"), "[3]",
                     "");
}
Test(grad, global_average_pool) {
  check_times_weight("[2, 3, 4, 5]", NODE("GlobalAveragePool", "[\"p\"]", "o", ""), "[2, 3, 1, 1]",
                     "");
}
Test(grad, dropout_inference_is_identity) {
  check_times_weight("[3, 4]", NODE("Dropout", "[\"p\"]", "o", ""), "[3, 4]", "");
}

Test(grad, concat_three_inputs) {
  // o = concat(p, a, q2) along axis 1, with a second param a in the middle.
  grad_case c = {.params = PARAM("p", "[2, 3]", "52") "," PARAM("a", "[2, 1]", "53") "," PARAM(
                     "b", "[2, 2]", "54") "," PARAM("q", "[2, 6]", "55"),
                 .nodes = NODE("Concat", "[\"p\", \"a\", \"b\"]", "o", "\"axis\": -1") "," NODE(
                     "Mul", "[\"o\", \"q\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, split_with_unused_output) {
  // p (2, 5) split into (2, 2), (2, 3) along axis 1; only the second piece reaches the loss.
  grad_case c = {
      .params =
          PARAM("p", "[2, 5]", "56") "," PARAM("q", "[2, 3]", "57") "," INTS("sp", "[2]", "[2, 3]"),
      .nodes =
          "{\"op\": \"Split\", \"inputs\": [\"p\", \"sp\"], \"outputs\": "
          "[\"s0\", \"s1\"], \"attrs\": {\"axis\": 1}}," NODE("Mul", "[\"s1\", \"q\"]", "y", ""),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, split_both_outputs) {
  grad_case c = {
      .params = PARAM("p", "[4, 3]", "58") "," PARAM("q", "[2, 3]", "59"),
      .nodes =
          "{\"op\": \"Split\", \"inputs\": [\"p\"], \"outputs\": "
          "[\"s0\", \"s1\"], \"attrs\": {}}," NODE("Mul", "[\"s0\", \"q\"]", "m", "") "," NODE(
              "Sub", "[\"m\", \"s1\"]", "y", ""),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, slice_two_axes) {
  check_times_weight("[3, 5, 4]", NODE("Slice", "[\"p\", \"st\", \"en\", \"ax\"]", "o", ""),
                     "[3, 2, 3]",
                     "," INTS("st", "[2]", "[1, -3]") "," INTS("en", "[2]", "[3, 100]") "," INTS(
                         "ax", "[2]", "[1, 2]"));
}

Test(grad, gather_axis0_repeated_indices) {
  // Rows 2 and 0 are picked twice: their gradients add up; row 3 gets none.
  check_times_weight("[4, 3]", NODE("Gather", "[\"p\", \"ix\"]", "o", ""), "[2, 3, 3]",
                     "," INTS("ix", "[2, 3]", "[2, 0, 1, -2, 0, 2]"));
}

Test(grad, gather_rank1_table) {
  check_times_weight("[5]", NODE("Gather", "[\"p\", \"ix\"]", "o", ""), "[3]",
                     "," INTS("ix", "[3]", "[4, 1, 4]"));
}

Test(grad, layer_norm_scale_bias) {
  grad_case c = {.params = PARAM("x", "[2, 3, 4]", "60") "," PARAM("s", "[4]", "61") "," PARAM(
                     "b", "[4]", "62") "," PARAM("q", "[2, 3, 4]", "63"),
                 .nodes = NODE("LayerNormalization", "[\"x\", \"s\", \"b\"]", "o",
                               "\"epsilon\": 0.001") "," NODE("Mul", "[\"o\", \"q\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, layer_norm_two_axes_scale_only) {
  grad_case c = {.params = PARAM("x", "[2, 3, 4]", "64") "," PARAM("s", "[3, 4]", "65") "," PARAM(
                     "q", "[2, 3, 4]", "66"),
                 .nodes = NODE("LayerNormalization", "[\"x\", \"s\"]", "o", "\"axis\": 1") "," NODE(
                     "Mul", "[\"o\", \"q\"]", "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- ConvTranspose, Gather on every axis ----

Test(grad, conv_transpose_groups_strides_pads_dilations) {
  grad_case c = {.params = PARAM("x", "[2, 4, 3, 4]", "70") "," PARAM(
                     "w", "[4, 3, 3, 2]", "71") "," PARAM("b", "[6]", "72"),
                 .nodes = NODE("ConvTranspose", "[\"x\", \"w\", \"b\"]", "y",
                               "\"group\": 2, \"strides\": [2, 3], \"pads\": [1, 0, 0, 1], "
                               "\"dilations\": [1, 2], \"output_padding\": [1, 0]"),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, conv_transpose_output_shape_same_upper) {
  grad_case c = {.params = PARAM("x", "[1, 2, 3, 3]", "73") "," PARAM("w", "[2, 3, 3, 3]", "74"),
                 .nodes = NODE("ConvTranspose", "[\"x\", \"w\"]", "y",
                               "\"strides\": [2, 2], \"auto_pad\": \"SAME_UPPER\""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, gather_axis1_repeated_negative_indices) {
  check_times_weight("[2, 4, 3]", NODE("Gather", "[\"p\", \"ix\"]", "o", "\"axis\": 1"),
                     "[2, 2, 3, 3]", "," INTS("ix", "[2, 3]", "[3, -1, 0, 1, 1, 1]"));
}

Test(grad, gather_last_axis_scalar_index) {
  check_times_weight("[2, 3, 4]", NODE("Gather", "[\"p\", \"ix\"]", "o", "\"axis\": -1"), "[2, 3]",
                     "," INTS("ix", "[]", "[2]"));
}

Test(grad, gather_runtime_indices_embedding) {
  // Indices are a model input (an embedding lookup): random rows in [0, 3) of a (5, 3) table.
  grad_case c = {.inputs = "{\"name\": \"ix\", \"dtype\": \"i64\", \"shape\": [6]}",
                 .params = PARAM("p", "[5, 3]", "75"),
                 .nodes = NODE("Gather", "[\"p\", \"ix\"]", "y", ""),
                 .output = "y",
                 .batch = 6};
  check_gradients(&c, RTOL, ATOL);
}

// ---- BatchNormalization in training mode ----

#define BUFFER(name, shape, lo, hi)                                                          \
  "{\"name\": \"" name "\", \"dtype\": \"f64\", \"shape\": " shape                           \
  ", \"role\": \"buffer\", \"init\": {\"kind\": \"uniform\", \"low\": " lo ", \"high\": " hi \
  ", \"seed\": 9}}"

static const char *const bn_params =
    PARAM("x", "[4, 3, 2, 3]", "80") "," PARAM("s", "[3]", "81") "," PARAM(
        "b", "[3]", "82") "," BUFFER("rm", "[3]", "-1", "1") "," BUFFER("rv", "[3]", "0.5",
                                                                        "2") "," PARAM("q",
                                                                                       "[4, 3, 2, "
                                                                                       "3]",
                                                                                       "83");

// y = BatchNormalization(x) * q
static const char *const bn_nodes =
    NODE("BatchNormalization", "[\"x\", \"s\", \"b\", \"rm\", \"rv\"]", "o",
         "\"epsilon\": 0.01, \"momentum\": 0.8") "," NODE("Mul", "[\"o\", \"q\"]", "y", "");

Test(grad, batchnorm_training_through_batch_statistics) {
  // x is a param too: its gradient goes through the batch mean and variance.
  grad_case c = {.params = bn_params, .nodes = bn_nodes, .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// The fused BatchNormTrain node's gradient (BatchNormTrainGrad) with the mode flag kiln.training
// at f: 0 (evaluation: the running statistics, an affine map) or between the modes, where the
// mean and the variance depend on x through their weight f.
static void check_batchnorm_flag(double f) {
  grad_case c = {.params = bn_params, .nodes = bn_nodes, .output = "y"};
  harness h;
  open_case(&h, &c);
  int flag = kiln_graph_find_tensor(h.g, KILN_TRAINING_FLAG_TENSOR);
  cr_assert(flag >= 0 && h.snapshot[flag], "no %s STATE flag", KILN_TRAINING_FLAG_TENSOR);
  kiln_element_set(h.snapshot[flag], (int)h.g->tensors[flag].dtype, 0, f);
  check_open_gradients(&h, RTOL, ATOL);
  close_case(&h);
}

Test(grad, batchnorm_evaluation_flag_gradient) { check_batchnorm_flag(0); }
Test(grad, batchnorm_between_modes_gradient) { check_batchnorm_flag(0.375); }

Test(grad, batchnorm_relu_fused_training) {
  // The Relu reading only the BatchNormalization is fused into BatchNormTrain (relu = 1); its
  // gradient mask goes into BatchNormTrainGrad.
  grad_case c = {
      .params = bn_params,
      .nodes = NODE("BatchNormalization", "[\"x\", \"s\", \"b\", \"rm\", \"rv\"]", "o",
                    "\"epsilon\": 0.01") "," NODE("Relu", "[\"o\"]", "r",
                                                  "") "," NODE("Mul", "[\"r\", \"q\"]", "y", ""),
      .output = "y"};
  harness h;
  open_case(&h, &c);
  int fused = 0;
  for (int k = 0; k < h.g->n_nodes; k++) {
    cr_expect_neq(h.g->nodes[k].op, KILN_OP_Relu, "the Relu was not fused");
    fused += h.g->nodes[k].op == KILN_OP_BatchNormTrain && kiln_attr_int(&h.g->nodes[k], "relu", 0);
  }
  cr_expect_eq(fused, 1, "expected one BatchNormTrain with relu = 1");
  check_open_gradients(&h, RTOL, ATOL);
  close_case(&h);
}

Test(grad, batchnorm_training_rank2) {
  // x (N, C): BatchNorm1d over features, one element per sample and channel.
  grad_case c = {
      .params = PARAM("x", "[5, 3]", "84") "," PARAM("s", "[3]", "85") "," PARAM(
          "b", "[3]", "86") "," BUFFER("rm", "[3]", "-1",
                                       "1") "," BUFFER("rv", "[3]", "0.5",
                                                       "2") "," PARAM("q", "[5, 3]", "87"),
      .nodes = NODE("BatchNormalization", "[\"x\", \"s\", \"b\", \"rm\", \"rv\"]", "o",
                    "") "," NODE("Mul", "[\"o\", \"q\"]", "y", ""),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, batchnorm_training_updates_running_stats) {
  // One step: rm' = 0.8 rm + 0.2 mean_b, rv' = 0.8 rv + 0.2 var_b * n / (n - 1) per channel.
  grad_case c = {.params = bn_params, .nodes = bn_nodes, .output = "y"};
  harness h;
  open_case(&h, &c);
  int x = kiln_graph_find_tensor(h.g, "x"), rm = kiln_graph_find_tensor(h.g, "rm");
  int rv = kiln_graph_find_tensor(h.g, "rv");
  cr_assert(
      h.g->tensors[rm].kind == KILN_TENSOR_STATE && h.g->tensors[rv].kind == KILN_TENSOR_STATE,
      "running stats must be STATE in a training graph");
  step_loss(&h, -1, 0, 0);
  for (int ch = 0; ch < 3; ch++) {
    double sum = 0, sq = 0, n = 24;
    for (int i = 0; i < 4; i++)
      for (int k = 0; k < 6; k++)
        sum += kiln_element_get(h.snapshot[x], KILN_F64, (i * 3 + ch) * 6 + k);
    double mean = sum / n;
    for (int i = 0; i < 4; i++)
      for (int k = 0; k < 6; k++) {
        double v = kiln_element_get(h.snapshot[x], KILN_F64, (i * 3 + ch) * 6 + k) - mean;
        sq += v * v;
      }
    double want_m = 0.8 * kiln_element_get(h.snapshot[rm], KILN_F64, ch) + 0.2 * mean;
    double want_v = 0.8 * kiln_element_get(h.snapshot[rv], KILN_F64, ch) + 0.2 * sq / (n - 1);
    cr_expect(fabs(kiln_tensor_get(&h.g->tensors[rm], ch) - want_m) < 1e-12, "running mean[%d]",
              ch);
    cr_expect(fabs(kiln_tensor_get(&h.g->tensors[rv], ch) - want_v) < 1e-12, "running var[%d]", ch);
  }
  close_case(&h);
}

// ---- Dropout in training mode ----

// y = dropout(p) with p (n) all ones, so y is the scaled mask; training.seed `seed`.
static void open_dropout(harness *h, int64_t n, const char *seed) {
  static char params[512], extra[64];
  snprintf(params, sizeof params,
           "{\"name\": \"p\", \"dtype\": \"f64\", \"shape\": [%lld], \"init\": {\"kind\": "
           "\"constant\", \"value\": 1}}, " INTS("r0", "[1]", "[0]") ", {\"name\": \"r\", "
           "\"dtype\": \"f64\", \"shape\": [1], \"role\": \"constant\", \"init\": {\"kind\": "
           "\"values\", \"values\": [0.3]}}",
           (long long)n);
  snprintf(extra, sizeof extra, ", \"seed\": %s", seed);
  grad_case c = {.params = params,
                 .nodes = NODE("Dropout", "[\"p\", \"r\"]", "y", ""),
                 .output = "y",
                 .extra = extra};
  open_case(h, &c);
}

// The output y of one run from the current state (no restore): the mask * 1 / (1 - 0.3).
static double *run_mask(harness *h, int64_t n) {
  kiln_diag d;
  kiln_diag_init(&d, "dropout");
  cr_assert(kiln_interp_run(h->g, h->in, h->out, &d));
  double *m = calloc((size_t)n, sizeof(double));
  for (int64_t i = 0; i < n; i++) m[i] = kiln_element_get(h->out[1].data, h->out[1].dtype, i);
  for (int i = 0; i < h->g->n_outputs; i++) kiln_array_free(&h->out[i]);
  return m;
}

Test(grad, dropout_masks_seeded_reproducible_per_step) {
  enum { N = 4000 };
  harness h, other;
  open_dropout(&h, N, "7");
  open_dropout(&other, N, "8");
  restore(&h);
  double *a = run_mask(&h, N), *b = run_mask(&h, N);  // steps 0 and 1
  restore(&h);
  double *a2 = run_mask(&h, N);  // step 0 again
  restore(&other);
  double *o = run_mask(&other, N);
  int same_seed_same = 0, next_step_same = 0, other_seed_same = 0, kept = 0;
  for (int i = 0; i < N; i++) {
    cr_assert(a[i] == 0 || a[i] == 1 / (1 - 0.3), "mask value %g", a[i]);
    same_seed_same += memcmp(&a[i], &a2[i], sizeof(double)) == 0;
    next_step_same += a[i] == b[i];
    other_seed_same += a[i] == o[i];
    kept += a[i] != 0;
  }
  cr_expect_eq(same_seed_same, N, "same seed and step: the masks must be bit-identical");
  // Independent masks with keep probability 0.7 agree on 0.7^2 + 0.3^2 = 58% of the elements.
  cr_expect(next_step_same < N * 0.65, "the next step's mask agrees on %d of %d", next_step_same,
            N);
  cr_expect(other_seed_same < N * 0.65, "another seed's mask agrees on %d of %d", other_seed_same,
            N);
  // Kept fraction 0.7 +- 4 standard deviations (sqrt(0.21 / N) = 0.0072).
  cr_expect(fabs(kept / (double)N - 0.7) < 0.03, "kept fraction %g", kept / (double)N);
  free(a), free(b), free(a2), free(o);
  close_case(&h);
  close_case(&other);
}

Test(grad, dropout_gradient_is_mask_times_dy) {
  // L = sum (x * m - t)^2: dL/dx = 2 (y - t) * m with the same mask m as the forward pass.
  grad_case c = {.params = PARAM("x", "[50]", "84") ", {\"name\": \"r\", \"dtype\": \"f64\", "
                                                  "\"shape\": [1], \"role\": \"constant\", "
                                                  "\"init\": {\"kind\": \"values\", \"values\": "
                                                  "[0.4]}}",
                 .nodes = NODE("Dropout", "[\"x\", \"r\"]", "y", ""),
                 .output = "y",
                 .extra = ", \"seed\": 3"};
  harness h;
  open_case(&h, &c);
  int x = kiln_graph_find_tensor(h.g, "x");
  restore(&h);
  kiln_diag d;
  kiln_diag_init(&d, "dropout");
  cr_assert(kiln_interp_run(h.g, h.in, h.out, &d));
  double ys[50];
  for (int64_t i = 0; i < 50; i++) ys[i] = kiln_element_get(h.out[1].data, h.out[1].dtype, i);
  for (int i = 0; i < h.g->n_outputs; i++) kiln_array_free(&h.out[i]);
  double *g = analytic(&h, x);  // the same step again from the snapshot
  int dropped = 0;
  for (int64_t i = 0; i < 50; i++) {
    double xi = kiln_element_get(h.snapshot[x], KILN_F64, i), y = ys[i];
    double m = y / xi, t = kiln_element_get(h.in[0].data, h.in[0].dtype, i);
    double want = 2 * (y - t) * (y == 0 ? 0 : 1 / (1 - 0.4));
    dropped += y == 0;
    cr_expect(fabs(g[i] - want) <= 1e-15 * fabs(want),
              "x[%lld]: gradient %.17g, expected %.17g "
              "(mask %g)",
              (long long)i, g[i], want, m);
  }
  cr_expect(dropped > 5 && dropped < 45, "%d of 50 dropped", dropped);
  free(g);
  close_case(&h);
}

Test(grad, dropout_training_finite_differences) {
  // The mask is fixed by (seed, step), so L is a smooth function of the params at one step.
  grad_case c = {.params = PARAM("w", "[4, 5]", "85") "," PARAM("v", "[5, 3]", "86") ", "
                     "{\"name\": \"r\", \"dtype\": \"f64\", \"shape\": [1], \"role\": "
                     "\"constant\", \"init\": {\"kind\": \"values\", \"values\": [0.5]}}",
                 .nodes = NODE("Tanh", "[\"w\"]", "a", "") "," NODE(
                     "Dropout", "[\"a\", \"r\"]", "m", "") "," NODE("MatMul", "[\"m\", \"v\"]",
                                                                     "y", ""),
                 .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- Recurrent ops through time ----

#define RNN_NODE(op, attrs, outs)                                                  \
  "{\"op\": \"" op                                                                 \
  "\", \"inputs\": [\"X\", \"W\", \"R\", \"B\", \"\", \"h0\"], \"outputs\": " outs \
  ", \"attrs\": {" attrs "}}"

Test(grad, lstm_bptt_all_inputs) {
  // T 3, batch 2, input 4, hidden 3; peepholes; loss on Y and on Y_h + Y_c.
  grad_case c = {
      .params = PARAM("X", "[3, 2, 4]", "90") "," PARAM("W", "[1, 12, 4]", "91") "," PARAM(
          "R", "[1, 12, 3]",
          "92") "," PARAM("B", "[1, 24]",
                          "93") "," PARAM("h0", "[1, 2, 3]",
                                          "94") "," PARAM("c0", "[1, 2, 3]",
                                                          "95") "," PARAM("P", "[1, 9]", "96"),
      .nodes =
          "{\"op\": \"LSTM\", \"inputs\": [\"X\", \"W\", \"R\", \"B\", \"\", \"h0\", \"c0\", "
          "\"P\"], \"outputs\": [\"Y\", \"Yh\", \"Yc\"], \"attrs\": {\"hidden_size\": 3}}," NODE(
              "Add", "[\"Yh\", \"Yc\"]", "s", "") "," NODE("Mul", "[\"Y\", \"s\"]", "y", ""),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, gru_bidirectional_linear_before_reset) {
  grad_case c = {
      .params = PARAM("X", "[3, 2, 4]", "97") "," PARAM("W", "[2, 9, 4]", "98") "," PARAM(
          "R", "[2, 9, 3]", "99") "," PARAM("B", "[2, 18]", "100") "," PARAM("h0", "[2, 2, 3]",
                                                                             "101"),
      .nodes = RNN_NODE("GRU",
                        "\"hidden_size\": 3, \"direction\": \"bidirectional\", "
                        "\"linear_before_reset\": 1",
                        "[\"y\"]"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, gru_reverse_reset_before_linear) {
  grad_case c = {
      .params = PARAM("X", "[4, 2, 3]", "102") "," PARAM("W", "[1, 6, 3]", "103") "," PARAM(
          "R", "[1, 6, 2]", "104") "," PARAM("B", "[1, 12]", "105") "," PARAM("h0", "[1, 2, 2]",
                                                                              "106"),
      .nodes = RNN_NODE("GRU", "\"hidden_size\": 2, \"direction\": \"reverse\"", "[\"Y\", \"y\"]"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

Test(grad, rnn_clip_and_activation) {
  grad_case c = {
      .params = PARAM("X", "[3, 2, 4]", "107") "," PARAM("W", "[1, 3, 4]", "108") "," PARAM(
          "R", "[1, 3, 3]", "109") "," PARAM("B", "[1, 6]", "110") "," PARAM("h0", "[1, 2, 3]",
                                                                             "111"),
      .nodes = RNN_NODE("RNN",
                        "\"hidden_size\": 3, \"clip\": 1.5, \"activations\": "
                        "\"Sigmoid\"",
                        "[\"y\"]"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

// ---- Attention ----

Test(grad, attention_block_end_to_end) {
  // x (2, 4, 8): Q, K, V projections, 2 heads of 4, scores / sqrt(4) + an additive causal mask,
  // softmax, the weighted values, heads merged, the output projection, residual, LayerNorm.
  grad_case c = {
      .params = PARAM("x", "[2, 4, 8]", "120") "," PARAM("wq", "[8, 8]", "121") "," PARAM(
          "wk", "[8, 8]", "122") "," PARAM("wv", "[8, 8]", "123") "," PARAM(
          "wo", "[8, 8]", "124") "," PARAM("g", "[8]", "125") "," PARAM("be", "[8]", "126") ","
          INTS("hs", "[4]", "[2, 4, 2, 4]") "," INTS("ms", "[3]", "[2, 4, 8]") ", "
          "{\"name\": \"scale\", \"dtype\": \"f64\", \"shape\": [1], \"role\": \"constant\", "
          "\"init\": {\"kind\": \"values\", \"values\": [0.5]}}, "
          "{\"name\": \"mask\", \"dtype\": \"f64\", \"shape\": [4, 4], \"role\": \"constant\", "
          "\"init\": {\"kind\": \"values\", \"values\": [0, -1e4, -1e4, -1e4, 0, 0, -1e4, -1e4, "
          "0, 0, 0, -1e4, 0, 0, 0, 0]}}",
      .nodes = NODE("MatMul", "[\"x\", \"wq\"]", "q0", "") "," NODE(
          "Reshape", "[\"q0\", \"hs\"]", "q1", "") "," NODE("Transpose", "[\"q1\"]", "q",
                                                            "\"perm\": [0, 2, 1, 3]") ","
          NODE("MatMul", "[\"x\", \"wk\"]", "k0", "") "," NODE(
              "Reshape", "[\"k0\", \"hs\"]", "k1", "") "," NODE("Transpose", "[\"k1\"]", "kt",
                                                                "\"perm\": [0, 2, 3, 1]") ","
          NODE("MatMul", "[\"x\", \"wv\"]", "v0", "") "," NODE(
              "Reshape", "[\"v0\", \"hs\"]", "v1", "") "," NODE("Transpose", "[\"v1\"]", "v",
                                                                "\"perm\": [0, 2, 1, 3]") ","
          NODE("MatMul", "[\"q\", \"kt\"]", "s0", "") "," NODE("Mul", "[\"s0\", \"scale\"]", "s1",
                                                                "") "," NODE("Add", "[\"s1\", \"mask\"]",
                                                                             "s2", "") ","
          NODE("Softmax", "[\"s2\"]", "p", "\"axis\": -1") "," NODE(
              "MatMul", "[\"p\", \"v\"]", "a0", "") "," NODE("Transpose", "[\"a0\"]", "a1",
                                                            "\"perm\": [0, 2, 1, 3]") ","
          NODE("Reshape", "[\"a1\", \"ms\"]", "a2", "") "," NODE(
              "MatMul", "[\"a2\", \"wo\"]", "o0", "") "," NODE("Add", "[\"o0\", \"x\"]", "r",
                                                              "") ","
          NODE("LayerNormalization", "[\"r\", \"g\", \"be\"]", "y", "\"axis\": -1"),
      .output = "y"};
  check_gradients(&c, RTOL, ATOL);
}

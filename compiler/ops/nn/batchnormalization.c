// BatchNormalization (ONNX opset 15), inference: per channel c,
//   y = (x - input_mean[c]) / sqrt(input_var[c] + epsilon) * scale[c] + B[c]
//   x: (N, C, D1, ..., Dk), k >= 0   scale, B, input_mean, input_var: (C)   y: like x
// training_mode = 1 (ONNX): y uses the batch's mean and biased variance over every axis but 1, and
// the optional outputs running_mean, running_var (C) = input_* * momentum + batch statistic *
// (1 - momentum). The frontend rewrites such nodes into BatchNormTrain and graph ops
// (kiln_batchnorm_training_expand), so lower only sees training_mode = 0; eval computes both.
#include <math.h>
#include <stdlib.h>

#include "../op_internal.h"
#include "batchnorm_train.h"

static const kiln_attr_spec attrs[] = {
    {"epsilon", KILN_ATTR_FLOAT, false},
    {"momentum", KILN_ATTR_FLOAT, false},
    {"training_mode", KILN_ATTR_INT, false},
    {0},
};

static const char *const input_names[] = {"X", "scale", "B", "input_mean", "input_var"};

static bool check_attrs(const kiln_node *n, kiln_diag *d) {
  int64_t training;
  if (!kiln_op_read_int(n, d, "training_mode", 0, 0, 1, &training)) return false;
  double eps = kiln_attr_float(n, "epsilon", 1e-5);
  if (!(eps >= 0)) {
    kiln_op_error(d, n, "attrs.epsilon: expected a value >= 0, got %g", eps);
    return false;
  }
  if (n->n_outputs > 1 && !training) {
    kiln_op_error(d, n,
                  "outputs: %d given; running_mean and running_var exist only with "
                  "training_mode = 1",
                  n->n_outputs);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 5, d) || !check_attrs(n, d)) return false;
  static const int per_channel[] = {1, 2, 3, 4};
  if (!kiln_bn_check_channels(g, n, d, per_channel, 4, input_names)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t C = x->shape.dim[1];
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: like x
  for (int i = 1; i < n->n_outputs; i++)             // running_mean, running_var: (C)
    kiln_op_set_output(g, n, i, x->dtype, &(kiln_shape){.rank = 1, .dim = {C}});
  return true;
}

// training_mode = 1: channel c's mean and biased variance over the batch, and the running outputs.
static void batch_stats(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                        int64_t c, double *mean, double *var) {
  const kiln_shape *xs = in[0].shape;
  int64_t N = xs->dim[0], C = xs->dim[1], S = kiln_bn_view_of(xs).S;
  double sum = 0, sq = 0, momentum = kiln_attr_float(n, "momentum", 0.9);
  for (int64_t b = 0; b < N; b++)
    for (int64_t s = 0; s < S; s++) sum += in[0].data[(b * C + c) * S + s];
  *mean = sum / (double)(N * S);
  for (int64_t b = 0; b < N; b++)
    for (int64_t s = 0; s < S; s++) {
      double v = in[0].data[(b * C + c) * S + s] - *mean;
      sq += v * v;
    }
  *var = sq / (double)(N * S);
  if (n->n_outputs > 1 && n->outputs[1] >= 0)
    out[1].data[c] = in[3].data[c] * momentum + *mean * (1 - momentum);
  if (n->n_outputs > 2 && n->outputs[2] >= 0)
    out[2].data[c] = in[4].data[c] * momentum + *var * (1 - momentum);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const kiln_shape *xs = in[0].shape;
  int64_t N = xs->dim[0], C = xs->dim[1], S = kiln_bn_view_of(xs).S;
  double eps = kiln_attr_float(n, "epsilon", 1e-5);
  const double *scale = in[1].data, *bias = in[2].data;
  double *mean = kiln_xcalloc((size_t)C, sizeof(double)),
         *var = kiln_xcalloc((size_t)C, sizeof(double));
  for (int64_t c = 0; c < C; c++) {
    mean[c] = in[3].data[c], var[c] = in[4].data[c];
    if (kiln_attr_int(n, "training_mode", 0)) batch_stats(n, in, out, c, &mean[c], &var[c]);
  }
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t s = 0; s < S; s++) {
        int64_t i = (b * C + c) * S + s;
        out->data[i] = (in[0].data[i] - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c];
      }
  free(mean);
  free(var);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int64_t N = x->shape.dim[0], C = x->shape.dim[1], S = kiln_bn_view_of(&x->shape).S;
  kiln_dtype t = y->dtype;
  double eps = kiln_attr_float(c->node, "epsilon", 1e-5);
  kiln_lb_comment(b, "BatchNormalization %s (inference, epsilon %g): %s -> %s", c->node->name, eps,
                  kiln_describe(x).text, kiln_describe(y).text);
  int n = kiln_lb_for_n(b, "n", N);
  int ch = kiln_lb_for_n(b, "c", C);
  // k = scale[c] / sqrt(var[c] + eps); y = (x - mean[c]) * k + B[c]
  kiln_lexpr *var_eps =
      lx_bin(b, LB_ADD, lx_load(b, kiln_in_buf(c, 4), lx_var(b, ch)), lx_float(b, t, eps));
  kiln_lexpr *k = lx_bin(b, LB_DIV, lx_load(b, kiln_in_buf(c, 1), lx_var(b, ch)),
                         lx_unary(b, LU_SQRT, var_eps));
  int kv = kiln_lb_decl(b, "k", t, k);
  int mv = kiln_lb_decl(b, "mean", t, lx_load(b, kiln_in_buf(c, 3), lx_var(b, ch)));
  int bv = kiln_lb_decl(b, "shift", t, lx_load(b, kiln_in_buf(c, 2), lx_var(b, ch)));
  int s = kiln_lb_for_n(b, "s", S);
  kiln_lexpr *index = lx_madd(b, lx_madd(b, lx_var(b, n), C, lx_var(b, ch)), S, lx_var(b, s));
  kiln_lexpr *centered = lx_bin(b, LB_SUB, lx_load(b, kiln_in_buf(c, 0), index), lx_var(b, mv));
  kiln_lexpr *value = lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, centered, lx_var(b, kv)), lx_var(b, bv));
  index = lx_madd(b, lx_madd(b, lx_var(b, n), C, lx_var(b, ch)), S, lx_var(b, s));
  kiln_lb_store(b, kiln_out_buf(c, 0), index, value);
  for (int i = 0; i < 3; i++) kiln_lb_end_for(b);  // s, c, n
}

// A subtract, a multiply and an add per element.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 3 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_BatchNormalization = {
    .name = "BatchNormalization",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 3,
    .attrs = attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // f32: sqrt, a divide, a multiply-add: a few ulp of the result, which can be ~10 for
    // small variances; eval in double.
    .tol = {1e-5, 1e-5},
};

// Training-mode rewrites of BatchNormalization and Dropout (train_mode.h): the node list is
// rebuilt in order, each such node replaced by the graph ops of its training behaviour, which
// write the node's original output tensors.
#include "train_mode.h"

#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "builder.h"

typedef struct rewriter {
  kiln_graph *g;
  kiln_diag *d;
  int step;
  uint64_t seed_value;
  kiln_train_mode *out;
} rewriter;

static int64_t numel_of(const kiln_graph *g, int t) {
  return kiln_shape_numel(&g->tensors[t].shape);
}

// ---- BatchNormalization ----

// A declared param holding a running statistic becomes a STATE buffer.
static bool running_state(rewriter *R, kiln_grad_ctx *c, int t, const char *what) {
  kiln_tensor *x = &R->g->tensors[t];
  if ((x->kind != KILN_TENSOR_PARAM && x->kind != KILN_TENSOR_STATE) || !x->data) {
    kiln_diag_error(R->d, c->node.where,
                    "%s: training needs %s (%s) to be a param with values (the running average "
                    "is updated in place)",
                    c->node.name, what, x->name);
    return false;
  }
  x->kind = KILN_TENSOR_STATE;
  x->role = KILN_ROLE_BUFFER;
  return true;
}

static void add_stat(rewriter *R, int running, int batch, double momentum, double unbias) {
  kiln_train_mode *m = R->out;
  m->stats = realloc(m->stats, sizeof(kiln_running_stat) * (size_t)(m->n_stats + 1));
  if (!m->stats) abort();
  m->stats[m->n_stats++] = (kiln_running_stat){running, batch, momentum, unbias};
}

// (C) -> (C, 1, ..., 1) to broadcast over x (N, C, D1, ...).
static int per_channel(kiln_grad_ctx *c, int v, int rank) {
  kiln_shape s = {.rank = rank - 1, .dim = {c->g->tensors[v].shape.dim[0]}};
  for (int i = 1; i < s.rank; i++) s.dim[i] = 1;
  return kiln_gb_reshape(c, v, &s);
}

// y = (x - mean_b) / sqrt(var_b + eps) * scale + B, mean_b and var_b (biased) over every axis
// but 1.
static bool rewrite_batchnorm(rewriter *R, kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  if (n->n_outputs > 1) {
    kiln_diag_error(R->d, n->where,
                    "%s: a training build computes BatchNormalization's running "
                    "statistics itself; give it one output",
                    n->name);
    return false;
  }
  int x = n->inputs[0], rank = R->g->tensors[x].shape.rank;
  if (!running_state(R, c, n->inputs[3], "input_mean") ||
      !running_state(R, c, n->inputs[4], "input_var"))
    return false;
  int64_t axes[KILN_MAX_RANK], n_axes = 0;
  for (int i = 0; i < rank; i++)
    if (i != 1) axes[n_axes++] = i;
  kiln_gb_attr mean_attrs[] = {KILN_GB_INTS("axes", axes, (int)n_axes), KILN_GB_INT("keepdims", 1),
                               KILN_GB_END};
  kiln_dtype t = R->g->tensors[x].dtype;
  int mu = kiln_gb_op(c, "ReduceMean", &x, 1, mean_attrs, 1);
  int xc = mu < 0 ? -1 : kiln_gb_binary(c, "Sub", x, mu);
  int sq = xc < 0 ? -1 : kiln_gb_binary(c, "Mul", xc, xc);
  int var = sq < 0 ? -1 : kiln_gb_op(c, "ReduceMean", &sq, 1, mean_attrs, 1);
  if (var < 0) return false;
  int eps = kiln_gb_scalar(c, t, kiln_attr_float(n, "epsilon", 1e-5));
  int sd = kiln_gb_unary(c, "Sqrt", kiln_gb_binary(c, "Add", var, eps));
  int xhat = sd < 0 ? -1 : kiln_gb_binary(c, "Div", xc, sd);
  int scaled = xhat < 0 ? -1 : kiln_gb_binary(c, "Mul", xhat, per_channel(c, n->inputs[1], rank));
  if (scaled < 0) return false;
  int in[2] = {scaled, per_channel(c, n->inputs[2], rank)};
  if (kiln_gb_op_into(c, "Add", in, 2, NULL, n->outputs, 1) < 0) return false;
  double count = (double)(numel_of(R->g, x) / R->g->tensors[x].shape.dim[1]);
  double momentum = kiln_attr_float(n, "momentum", 0.9);
  add_stat(R, n->inputs[3], mu, momentum, 1.0);
  add_stat(R, n->inputs[4], var, momentum, count > 1 ? count / (count - 1) : 1.0);
  return true;
}

// ---- Dropout ----

// The ratio of a Dropout node (0.5, ONNX's default, when absent); -1 after reporting.
static double dropout_ratio(rewriter *R, const kiln_node *n) {
  if (n->n_inputs < 2 || n->inputs[1] < 0) return 0.5;
  const kiln_tensor *r = &R->g->tensors[n->inputs[1]];
  if (r->kind != KILN_TENSOR_PARAM || !r->data) {
    kiln_diag_error(R->d, n->where,
                    "%s: a training build needs Dropout's ratio (%s) to be a constant param",
                    n->name, r->name);
    return -1;
  }
  return kiln_tensor_get(r, 0);
}

static int seed_tensor(rewriter *R, kiln_grad_ctx *c) {
  if (R->out->seed >= 0) return R->out->seed;
  int id = kiln_gb_scalar(c, KILN_I64, 0);
  *(int64_t *)R->g->tensors[id].data = (int64_t)R->seed_value;
  kiln_tensor *s = &R->g->tensors[id];
  s->name = KILN_SEED_TENSOR;
  s->kind = KILN_TENSOR_STATE;
  s->role = KILN_ROLE_BUFFER;
  s->where = "training.seed";
  return R->out->seed = id;
}

// y = x * DropoutMask(seed, step); the optional bool mask output = mask > 0.
static bool rewrite_dropout(rewriter *R, kiln_grad_ctx *c, double ratio, int salt) {
  const kiln_node *n = &c->node;
  kiln_tensor x = R->g->tensors[n->inputs[0]];
  kiln_gb_attr attrs[] = {KILN_GB_INTS("shape", x.shape.dim, x.shape.rank),
                          KILN_GB_FLOAT("ratio", ratio), KILN_GB_INT("salt", salt),
                          KILN_GB_STRING("dtype", kiln_dtype_name(x.dtype)), KILN_GB_END};
  int in[2] = {seed_tensor(R, c), R->step};
  int mask = kiln_gb_op(c, "DropoutMask", in, 2, attrs, 1);
  if (mask < 0) return false;
  int mul[2] = {n->inputs[0], mask};
  if (kiln_gb_op_into(c, "Mul", mul, 2, NULL, n->outputs, 1) < 0) return false;
  if (n->n_outputs < 2 || n->outputs[1] < 0) return true;
  int gt[2] = {mask, kiln_gb_scalar(c, x.dtype, 0)};
  return kiln_gb_op_into(c, "Greater", gt, 2, NULL, n->outputs + 1, 1) >= 0;
}

// ---- The node list ----

static void keep_node(kiln_graph *g, const kiln_node *n) {
  KILN_VEC_PUSH(g->nodes, g->n_nodes, g->cap_nodes, *n);
  for (int j = 0; j < n->n_outputs; j++)
    if (n->outputs[j] >= 0) g->tensors[n->outputs[j]].producer = g->n_nodes - 1;
}

static bool rewrite_node(rewriter *R, const kiln_node *n, int index) {
  kiln_grad_ctx c = {.g = R->g, .node = *n, .d = R->d};
  const char *op = kiln_op_get(n->op)->name;
  if (strcmp(op, "BatchNormalization") == 0) return rewrite_batchnorm(R, &c);
  if (strcmp(op, "Dropout") == 0) {
    double ratio = dropout_ratio(R, n);
    if (ratio < 0) return false;
    if (ratio > 0) return rewrite_dropout(R, &c, ratio, index + 1);
  }
  keep_node(R->g, n);
  return true;
}

bool kiln_training_mode_rewrite(kiln_graph *g, int step, uint64_t seed, kiln_train_mode *out,
                                kiln_diag *d) {
  *out = (kiln_train_mode){.seed = -1};
  rewriter R = {.g = g, .d = d, .step = step, .seed_value = seed, .out = out};
  kiln_node *old = g->nodes;
  int n_old = g->n_nodes;
  g->nodes = NULL;
  g->n_nodes = g->cap_nodes = 0;
  bool ok = true;
  for (int k = 0; k < n_old && ok; k++)
    ok = old[k].dead ? (keep_node(g, &old[k]), true) : rewrite_node(&R, &old[k], k);
  free(old);
  return ok;
}

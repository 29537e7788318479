// Training-mode rewrites of BatchNormalization and Dropout (train_mode.h): the node list is
// rebuilt in order, each such node replaced by the graph ops of its training behaviour, blended
// with its inference behaviour by the mode flag `kiln.training`, which write the node's original
// output tensors.
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
  const kiln_node *old;  // the node list being rewritten
  int n_old;
  bool *absorbed;  // per old node: a Relu a BatchNormTrain computes (fused), not kept
} rewriter;

static int64_t numel_of(const kiln_graph *g, int t) {
  return kiln_shape_numel(&g->tensors[t].shape);
}

// ---- The mode flag ----

// The `kiln.training` STATE flag (f32 (1), 1 at init), made on first use.
static int training_flag(rewriter *R, kiln_grad_ctx *c) {
  if (R->out->training >= 0) return R->out->training;
  int id = kiln_gb_scalar(c, KILN_F32, 1.0);
  kiln_tensor *f = &R->g->tensors[id];
  f->name = KILN_TRAINING_FLAG_TENSOR;
  f->kind = KILN_TENSOR_STATE;
  f->role = KILN_ROLE_BUFFER;
  f->where = "training";
  return R->out->training = id;
}

// The flag f and 1 - f in dtype t, each (1); false after reporting.
typedef struct mode_weights {
  int f, not_f;
} mode_weights;

// The flag f in dtype t (1); -1 after reporting.
static int mode_flag(rewriter *R, kiln_grad_ctx *c, kiln_dtype t) {
  int f = training_flag(R, c);
  if (t == KILN_F32) return f;
  kiln_gb_attr to[] = {KILN_GB_INT("to", t == KILN_F64 ? 11 : 1), KILN_GB_END};
  return kiln_gb_op(c, "Cast", &f, 1, to, 1);
}

static bool mode_weights_of(rewriter *R, kiln_grad_ctx *c, kiln_dtype t, mode_weights *w) {
  w->f = mode_flag(R, c, t);
  w->not_f = w->f < 0 ? -1 : kiln_gb_binary(c, "Sub", kiln_gb_scalar(c, t, 1.0), w->f);
  return w->not_f >= 0;
}

// f * train + (1 - f) * infer (broadcast); -1 after reporting.
static int blend(kiln_grad_ctx *c, const mode_weights *w, int train, int infer) {
  int a = kiln_gb_binary(c, "Mul", w->f, train);
  int b = a < 0 ? -1 : kiln_gb_binary(c, "Mul", w->not_f, infer);
  return b < 0 ? -1 : kiln_gb_binary(c, "Add", a, b);
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

// --sync-bn: a batch statistic averaged over the ranks (RankMean; every rank's micro-batch has
// the same size, so the mean of the ranks' means is the global batch's). Else `stat` itself.
static int sync_stat(rewriter *R, kiln_grad_ctx *c, int stat) {
  return R->out->sync_bn && stat >= 0 ? kiln_gb_unary(c, "RankMean", stat) : stat;
}

// --sync-bn: the running variance is unbiased with the global batch's count n, like
// SyncBatchNorm: var_b * n / (n - 1) with n = RankSum(f * count) (f, the mode flag, keeps it from
// being folded at compile time; the update runs in training steps only, where f = 1).
static bool add_synced_var(rewriter *R, kiln_grad_ctx *c, const mode_weights *w, int var_b,
                           double count, double momentum) {
  kiln_dtype t = R->g->tensors[var_b].dtype;
  int n = kiln_gb_unary(c, "RankSum", kiln_gb_binary(c, "Mul", w->f, kiln_gb_scalar(c, t, count)));
  int n_minus_1 = n < 0 ? -1 : kiln_gb_binary(c, "Sub", n, kiln_gb_scalar(c, t, 1.0));
  int unbias = n_minus_1 < 0 ? -1 : kiln_gb_binary(c, "Div", n, n_minus_1);
  int unbiased = unbias < 0 ? -1 : kiln_gb_binary(c, "Mul", var_b, unbias);  // (1, C, 1, ...)
  if (unbiased < 0) return false;
  add_stat(R, c->node.inputs[4], unbiased, momentum, 1.0);
  return true;
}

// The mean of v over every axis of x's rank but 1 (the channels), kept: (1, C, 1, ...).
static int channel_mean(kiln_grad_ctx *c, int v, int rank) {
  int64_t axes[KILN_MAX_RANK], n_axes = 0;
  for (int i = 0; i < rank; i++)
    if (i != 1) axes[n_axes++] = i;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, (int)n_axes), KILN_GB_INT("keepdims", 1),
                          KILN_GB_END};
  return kiln_gb_op(c, "ReduceMean", &v, 1, attrs, 1);
}

// The node's output Y = xc / sqrt(var + eps) * scale + B (xc = x - mean); false after reporting.
static bool normalize_into(kiln_grad_ctx *c, int xc, int var, int rank) {
  const kiln_node *n = &c->node;
  kiln_dtype t = c->g->tensors[xc].dtype;
  int eps = kiln_gb_scalar(c, t, kiln_attr_float(n, "epsilon", 1e-5));
  int sd = kiln_gb_unary(c, "Sqrt", kiln_gb_binary(c, "Add", var, eps));
  int xhat = sd < 0 ? -1 : kiln_gb_binary(c, "Div", xc, sd);
  int scaled = xhat < 0 ? -1 : kiln_gb_binary(c, "Mul", xhat, per_channel(c, n->inputs[1], rank));
  if (scaled < 0) return false;
  int in[2] = {scaled, per_channel(c, n->inputs[2], rank)};
  return kiln_gb_op_into(c, "Add", in, 2, NULL, n->outputs, 1) >= 0;
}

// A new (C) tensor of dtype t named <node>.<what>.
static int channel_tensor(kiln_grad_ctx *c, kiln_dtype t, int64_t C, const char *what) {
  const char *name = kiln_pool_printf(&c->g->pool, "%s.%s", c->node.name, what);
  return kiln_graph_add_tensor(c->g, name, KILN_TENSOR_VALUE, t,
                               &(kiln_shape){.rank = 1, .dim = {C}});
}

// The Relu reading tensor y, old node k > `after`, when it is y's only reader and y no graph
// output (ResNet's BatchNormalization -> Relu); else -1.
static int lone_relu_reader(const rewriter *R, int after, int y) {
  for (int i = 0; i < R->g->n_outputs; i++)
    if (R->g->outputs[i] == y) return -1;
  int found = -1;
  for (int k = after + 1; k < R->n_old; k++) {
    const kiln_node *n = &R->old[k];
    for (int j = 0; j < n->n_inputs && !n->dead; j++) {
      if (n->inputs[j] != y) continue;
      if (found >= 0 || n->op != KILN_OP_Relu) return -1;
      found = k;
    }
  }
  return found;
}

// BatchNormTrain(x, scale, B, running_mean, running_var, f) writing the node's Y (or, in a
// rewrite R and when a lone Relu reads Y, that Relu's output: the Relu is absorbed), plus the
// batch mean, the biased variance and the inverse std (C) it makes; mean_b and var_b receive the
// first two. False after reporting.
static bool fused_batchnorm(rewriter *R, kiln_grad_ctx *c, int index, int f, int *mean_b,
                            int *var_b) {
  const kiln_node *n = &c->node;
  const kiln_tensor *x = &c->g->tensors[n->inputs[0]];
  kiln_dtype t = x->dtype;
  int64_t C = x->shape.dim[1];
  int relu = R ? lone_relu_reader(R, index, n->outputs[0]) : -1;
  if (relu >= 0) R->absorbed[relu] = true;
  int outs[4] = {relu >= 0 ? R->old[relu].outputs[0] : n->outputs[0],
                 channel_tensor(c, t, C, "batch_mean"), channel_tensor(c, t, C, "batch_var"),
                 channel_tensor(c, t, C, "inv_std")};
  int in[6] = {n->inputs[0], n->inputs[1], n->inputs[2], n->inputs[3], n->inputs[4], f};
  kiln_gb_attr attrs[] = {KILN_GB_FLOAT("epsilon", kiln_attr_float(n, "epsilon", 1e-5)),
                          KILN_GB_INT("relu", relu >= 0), KILN_GB_END};
  *mean_b = outs[1], *var_b = outs[2];
  return kiln_gb_op_into(c, "BatchNormTrain", in, 6, attrs, outs, 4) >= 0;
}

// y = (x - mean) / sqrt(var + eps) * scale + B with mean = f * mean_b + (1 - f) * running_mean
// and var = f * var_b + (1 - f) * running_var, mean_b and var_b (biased, around mean) over every
// axis but 1; the running averages are updated with mean_b and var_b. One BatchNormTrain node
// (its gradient one BatchNormTrainGrad); with --sync-bn, graph ops (the statistics pass through
// RankMean between the two reductions).
static bool rewrite_batchnorm(rewriter *R, kiln_grad_ctx *c, int index) {
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
  kiln_dtype t = R->g->tensors[x].dtype;
  double count = (double)(numel_of(R->g, x) / R->g->tensors[x].shape.dim[1]);
  double momentum = kiln_attr_float(n, "momentum", 0.9);
  if (!R->out->sync_bn) {
    int mean_b, var_b, f = mode_flag(R, c, t);
    if (f < 0 || !fused_batchnorm(R, c, index, f, &mean_b, &var_b)) return false;
    add_stat(R, n->inputs[3], mean_b, momentum, 1.0);
    add_stat(R, n->inputs[4], var_b, momentum, count > 1 ? count / (count - 1) : 1.0);
    return true;
  }
  mode_weights w;
  if (!mode_weights_of(R, c, t, &w)) return false;
  int mu = sync_stat(R, c, channel_mean(c, x, rank));  // (1, C, 1, ...)
  int mean = mu < 0 ? -1 : blend(c, &w, mu, per_channel(c, n->inputs[3], rank));
  int xc = mean < 0 ? -1 : kiln_gb_binary(c, "Sub", x, mean);
  int sq = xc < 0 ? -1 : kiln_gb_binary(c, "Mul", xc, xc);
  int var_b = sq < 0 ? -1 : sync_stat(R, c, channel_mean(c, sq, rank));
  int var = var_b < 0 ? -1 : blend(c, &w, var_b, per_channel(c, n->inputs[4], rank));
  if (var < 0 || !normalize_into(c, xc, var, rank)) return false;
  add_stat(R, n->inputs[3], mu, momentum, 1.0);
  return add_synced_var(R, c, &w, var_b, count, momentum);
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

// y = x * (f * DropoutMask(seed, step) + 1 - f); the optional bool mask output = that > 0.
static bool rewrite_dropout(rewriter *R, kiln_grad_ctx *c, double ratio, int salt) {
  const kiln_node *n = &c->node;
  kiln_tensor x = R->g->tensors[n->inputs[0]];
  kiln_gb_attr attrs[] = {KILN_GB_INTS("shape", x.shape.dim, x.shape.rank),
                          KILN_GB_FLOAT("ratio", ratio), KILN_GB_INT("salt", salt),
                          KILN_GB_STRING("dtype", kiln_dtype_name(x.dtype)), KILN_GB_END};
  int in[2] = {seed_tensor(R, c), R->step};
  mode_weights w;
  if (!mode_weights_of(R, c, x.dtype, &w)) return false;
  int drawn = kiln_gb_op(c, "DropoutMask", in, 2, attrs, 1);
  int mask =
      drawn < 0 ? -1 : kiln_gb_binary(c, "Add", kiln_gb_binary(c, "Mul", w.f, drawn), w.not_f);
  if (mask < 0) return false;
  int mul[2] = {n->inputs[0], mask};
  if (kiln_gb_op_into(c, "Mul", mul, 2, NULL, n->outputs, 1) < 0) return false;
  if (n->n_outputs < 2 || n->outputs[1] < 0) return true;
  int gt[2] = {mask, kiln_gb_scalar(c, x.dtype, 0)};
  return kiln_gb_op_into(c, "Greater", gt, 2, NULL, n->outputs + 1, 1) >= 0;
}

// ---- Reparameterization noise ----

// Salts of the noise streams: RandomNormalLike node k draws with salt k + 1 (as Dropout node k's
// mask; the ops differ, so the streams never meet), noise input j with salt 2^32 + j.
static const int64_t noise_input_salt = INT64_C(1) << 32;

// NormalNoise(kiln.seed, kiln.step) of `shape` writing tensor `out`.
static bool emit_noise(rewriter *R, kiln_grad_ctx *c, int out, int64_t salt, double mean,
                       double scale) {
  kiln_tensor y = R->g->tensors[out];
  kiln_gb_attr attrs[] = {KILN_GB_INTS("shape", y.shape.dim, y.shape.rank),
                          KILN_GB_INT("salt", salt),
                          KILN_GB_FLOAT("mean", mean),
                          KILN_GB_FLOAT("scale", scale),
                          KILN_GB_STRING("dtype", kiln_dtype_name(y.dtype)),
                          KILN_GB_END};
  int in[2] = {seed_tensor(R, c), R->step};
  return kiln_gb_op_into(c, "NormalNoise", in, 2, attrs, &out, 1) >= 0;
}

// RandomNormalLike -> fresh noise each step (its `seed` attribute gives way to kiln.seed).
static bool rewrite_random_normal(rewriter *R, kiln_grad_ctx *c, int index) {
  const kiln_node *n = &c->node;
  return emit_noise(R, c, n->outputs[0], index + 1, kiln_attr_float(n, "mean", 0),
                    kiln_attr_float(n, "scale", 1));
}

// training.noise: each named input leaves the graph's inputs and becomes the output of a
// NormalNoise node placed first.
static bool replace_noise_inputs(rewriter *R, const char *const *names, int n_names) {
  kiln_graph *g = R->g;
  for (int j = 0; j < n_names; j++) {
    int x = kiln_graph_find_tensor(g, names[j]), k = 0;
    while (k < g->n_inputs && g->inputs[k] != x) k++;
    if (k == g->n_inputs) continue;
    memmove(g->inputs + k, g->inputs + k + 1, sizeof(int) * (size_t)(g->n_inputs - k - 1));
    g->n_inputs--;
    g->tensors[x].kind = KILN_TENSOR_VALUE;
    kiln_grad_ctx c = {.g = g, .node = {.name = names[j], .where = "training.noise"}, .d = R->d};
    int64_t base = R->out->noise_salt ? R->out->noise_salt : noise_input_salt;
    if (!emit_noise(R, &c, x, base + j, 0, 1)) return false;
  }
  return true;
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
  if (strcmp(op, "BatchNormalization") == 0) return rewrite_batchnorm(R, &c, index);
  if (R->absorbed[index]) return true;  // a Relu its BatchNormTrain computes
  if (strcmp(op, "RandomNormalLike") == 0) return rewrite_random_normal(R, &c, index);
  if (strcmp(op, "Dropout") == 0) {
    double ratio = dropout_ratio(R, n);
    if (ratio < 0) return false;
    if (ratio > 0) return rewrite_dropout(R, &c, ratio, index + 1);
  }
  keep_node(R->g, n);
  return true;
}

bool kiln_training_mode_rewrite(kiln_graph *g, int step, uint64_t seed, const char *const *noise,
                                int n_noise, kiln_train_mode *out, kiln_diag *d) {
  *out = (kiln_train_mode){
      .seed = -1, .training = -1, .sync_bn = out->sync_bn, .noise_salt = out->noise_salt};
  kiln_node *old = g->nodes;
  int n_old = g->n_nodes;
  rewriter R = {.g = g,
                .d = d,
                .step = step,
                .seed_value = seed,
                .out = out,
                .old = old,
                .n_old = n_old,
                .absorbed = kiln_xcalloc((size_t)n_old + 1, sizeof(bool))};
  g->nodes = NULL;
  g->n_nodes = g->cap_nodes = 0;
  bool ok = replace_noise_inputs(&R, noise, n_noise);
  for (int k = 0; k < n_old && ok; k++)
    ok = old[k].dead ? (keep_node(g, &old[k]), true) : rewrite_node(&R, &old[k], k);
  free(old);
  free(R.absorbed);
  return ok;
}

// ---- BatchNormalization training_mode = 1 in a model (not a training build) ----

// running * momentum + batch * (1 - momentum), reshaped to (C), into the node's output `out`.
static bool running_output(kiln_grad_ctx *c, int running, int batch, int out) {
  kiln_dtype t = c->g->tensors[batch].dtype;
  double momentum = kiln_attr_float(&c->node, "momentum", 0.9);
  int64_t C = c->g->tensors[running].shape.dim[0];
  int kept = kiln_gb_binary(c, "Mul", running, kiln_gb_scalar(c, t, momentum));
  int added = kiln_gb_binary(c, "Mul", batch, kiln_gb_scalar(c, t, 1 - momentum));
  int flat = added < 0 ? -1 : kiln_gb_reshape(c, added, &(kiln_shape){.rank = 1, .dim = {C}});
  int in[2] = {kept, flat};
  return flat >= 0 && kept >= 0 && kiln_gb_op_into(c, "Add", in, 2, NULL, &out, 1) >= 0;
}

// Y from the batch's mean and biased variance (over every axis but 1: BatchNormTrain with the
// flag a constant 1), and the optional running_mean / running_var outputs (ONNX's reference: the
// biased batch variance).
static bool expand_batchnorm_training(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int mu, var_b, one = kiln_gb_scalar(c, c->g->tensors[n->inputs[0]].dtype, 1.0);
  if (!fused_batchnorm(NULL, c, -1, one, &mu, &var_b)) return false;
  if (n->n_outputs > 1 && n->outputs[1] >= 0 && !running_output(c, n->inputs[3], mu, n->outputs[1]))
    return false;
  return n->n_outputs <= 2 || n->outputs[2] < 0 ||
         running_output(c, n->inputs[4], var_b, n->outputs[2]);
}

bool kiln_batchnorm_training_expand(kiln_graph *g, kiln_diag *d) {
  kiln_node *old = g->nodes;
  int n_old = g->n_nodes;
  g->nodes = NULL;
  g->n_nodes = g->cap_nodes = 0;
  bool ok = true;
  for (int k = 0; k < n_old && ok; k++) {
    const kiln_node *n = &old[k];
    bool bn = strcmp(kiln_op_get(n->op)->name, "BatchNormalization") == 0 &&
              kiln_attr_int(n, "training_mode", 0) == 1 && !n->dead;
    kiln_grad_ctx c = {.g = g, .node = *n, .d = d};
    if (bn)
      ok = expand_batchnorm_training(&c);
    else
      keep_node(g, n);
  }
  free(old);
  return ok;
}

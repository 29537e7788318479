// The training graph (docs/training.md §3): one graph computing the forward pass, the loss, the
// gradients (reverse-mode, each op's `grad` rule appending nodes) and the optimizer updates, so
// the passes plan and lower the whole training step like any inference graph.
//
// Order of the nodes, which no pass changes: the forward nodes, the loss (the node producing
// graph output 0 ends the part `eval` runs), the backward nodes, the learning rate, one update
// per trainable param, and the step counter's increment last. Updates write their STATE inputs
// after every node reading them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../frontend.h"
#include "builder.h"
#include "train_mode.h"
#include "training.h"

enum { KILN_MAX_LOSS_TERMS = 64 };  // training.c accepts at most 64 terms

typedef struct trainer {
  kiln_graph *g;
  const kiln_training *t;
  kiln_diag *d;
  kiln_grad_ctx gc;  // builder context for the nodes this file adds (not a rule's)
  bool *trainable;   // per tensor
  bool *needs;       // per tensor: a trainable param flows into it
  int *grad;         // per tensor: its gradient, or -1
  int n_tensors0;    // tensors before the backward pass (the arrays' size)
  int loss;          // the loss tensor (graph output 0)
  // The coefficient of each loss node (the seed of its gradient), and the "tensor" terms' outputs
  // with the constant their gradient starts from (docs/training.md §8).
  int coef_node[KILN_MAX_LOSS_TERMS], n_coefs;
  double coef[KILN_MAX_LOSS_TERMS];
  int seed_tensor[KILN_MAX_LOSS_TERMS], n_seeds;
  double seed_coef[KILN_MAX_LOSS_TERMS];
  int step;              // the step counter (STATE, i64 (1))
  kiln_train_mode mode;  // BatchNormalization's running statistics, dropout's seed
} trainer;

// ---- 1. Batch size ----

static bool rebatch(trainer *T) {
  kiln_graph *g = T->g;
  for (int i = 0; i < g->n_inputs; i++) g->tensors[g->inputs[i]].shape.dim[0] = T->t->batch_size;
  int errors = T->d->errors;
  if (kiln_infer_shapes(g, T->d) && T->d->errors == errors) return true;
  kiln_diag_error(T->d, "training.batch_size",
                  "the model does not run with batch %lld (see the error above); a Reshape with "
                  "a hard-coded batch of 1 needs 0 or -1 in its shape",
                  (long long)T->t->batch_size);
  return false;
}

// ---- 2. Which params train ----

static bool listed(const kiln_training *t, const char *name) {
  for (int i = 0; i < t->n_names; i++)
    if (strcmp(t->names[i], name) == 0) return true;
  return false;
}

// Float weights declared by the model (role weight: never buffers, constants or values folded
// from nodes), minus the frozen ones, become STATE: from here on shape inference never folds the
// nodes reading them.
static void mark_trainable(kiln_graph *g, const kiln_training *t) {
  for (int i = 0; i < g->n_tensors; i++) {
    kiln_tensor *x = &g->tensors[i];
    bool declared = x->where && strncmp(x->where, "params[", 7) == 0;
    if (x->kind != KILN_TENSOR_PARAM || !declared || x->role != KILN_ROLE_WEIGHT ||
        !kiln_dtype_is_float(x->dtype))
      continue;
    bool in_list = listed(t, x->name);
    if (t->names_are_trainable ? in_list : !in_list) x->kind = KILN_TENSOR_STATE;
  }
  for (int i = 0; i < t->n_shared; i++) {  // adversarial: the other net's, written between steps
    kiln_tensor *x = &g->tensors[kiln_graph_find_tensor(g, t->shared[i])];
    x->kind = KILN_TENSOR_STATE;
    x->role = KILN_ROLE_BUFFER;  // not trained by this step
  }
}

// Which tensors a trainable param flows into. Trainable: STATE weights (not the step counter, the
// dropout seed or running statistics, which are STATE buffers).
static void choose_trainable(trainer *T) {
  kiln_graph *g = T->g;
  for (int i = 0; i < g->n_tensors; i++)
    T->needs[i] = T->trainable[i] =
        g->tensors[i].kind == KILN_TENSOR_STATE && g->tensors[i].role == KILN_ROLE_WEIGHT;
  for (int k = 0; k < g->n_nodes; k++) {
    const kiln_node *n = &g->nodes[k];
    bool any = false;
    for (int j = 0; j < n->n_inputs; j++) any |= n->inputs[j] >= 0 && T->needs[n->inputs[j]];
    for (int j = 0; j < n->n_outputs; j++)
      T->needs[n->outputs[j]] = any && kiln_dtype_is_float(g->tensors[n->outputs[j]].dtype);
  }
}

// ---- 3. Loss ----

static int add_input(trainer *T, const char *name, kiln_dtype dtype, const kiln_shape *shape) {
  kiln_graph *g = T->g;
  int id = kiln_graph_add_tensor(g, name, KILN_TENSOR_INPUT, dtype, shape);
  g->tensors[id].where = "training.loss";
  KILN_VEC_PUSH(g->inputs, g->n_inputs, g->cap_inputs, id);
  return id;
}

static int add_target(trainer *T, int output, const kiln_loss_spec *l) {
  if (l->target_input) return kiln_graph_find_tensor(T->g, l->target_input);
  // A computed target (a teacher's soft labels): the loss's gradient goes to its output only
  // (backprop_loss), so none flows into the target: a stop-gradient.
  if (l->target_tensor) return kiln_graph_find_tensor(T->g, l->target_tensor);
  const kiln_tensor *y = &T->g->tensors[output];
  kiln_shape shape = y->shape;
  if (l->has_target_value) {  // adversarial phases: every label is 1 (real) or 0 (fake)
    int64_t numel = kiln_shape_numel(&shape);
    double *values = kiln_xmalloc(sizeof(double) * (size_t)(numel ? numel : 1));
    for (int64_t i = 0; i < numel; i++) values[i] = l->target_value;
    int id = kiln_gb_const(&T->gc, y->dtype, &shape, values);
    free(values);
    return id;
  }
  if (l->kind == KILN_LOSS_CROSS_ENTROPY) shape = (kiln_shape){.rank = 1, .dim = {y->shape.dim[0]}};
  if (l->target_has_shape) shape = l->target_shape;
  return add_input(T, l->target, l->target_dtype, &shape);
}

static const char *const reduction_names[] = {"mean", "sum", "batchmean"};

// The loss node(s): returns the loss tensor before regularization, or -1.
static int build_loss(trainer *T, const kiln_loss_spec *l, int output, int target, int weight) {
  kiln_gb_attr red = KILN_GB_STRING("reduction", reduction_names[l->reduction]);
  if (l->kind == KILN_LOSS_CROSS_ENTROPY) {
    if (T->g->tensors[target].dtype != KILN_I64 && T->g->tensors[target].dtype != KILN_I32) {
      kiln_diag_error(T->d, "training.loss.target.dtype",
                      "cross_entropy takes integer class labels: i64 or i32");
      return -1;
    }
    kiln_gb_attr attrs[] = {red, KILN_GB_END};
    int in[3] = {output, target, weight};
    return kiln_gb_op(&T->gc, "SoftmaxCrossEntropy", in, weight >= 0 ? 3 : 2, attrs, 1);
  }
  kiln_gb_attr attrs[] = {KILN_GB_STRING("kind", kiln_loss_kind_name(l->kind)), red,
                          KILN_GB_FLOAT("delta", l->delta), KILN_GB_FLOAT("clip", l->clip),
                          KILN_GB_END};
  int in[2] = {output, target};
  return kiln_gb_op(&T->gc, "PointwiseLoss", in, 2, attrs, 1);
}

// The factor of a "tensor" term's sum under its reduction: 1/numel (mean), 1 (sum), 1/N.
static double tensor_term_scale(const kiln_loss_spec *l, const kiln_shape *s) {
  if (l->reduction == KILN_REDUCE_SUM) return 1.0;
  if (l->reduction == KILN_REDUCE_BATCHMEAN) return 1.0 / (double)s->dim[0];
  return 1.0 / (double)kiln_shape_numel(s);
}

// A "tensor" term: coef * reduce(output), shape (1); its gradient, the constant coef * scale of
// the output's shape, seeds the output's gradient in backprop_loss.
static int build_tensor_term(trainer *T, const kiln_loss_spec *l, int output) {
  kiln_shape shape = T->g->tensors[output].shape;
  kiln_dtype dtype = T->g->tensors[output].dtype;
  int64_t axes[KILN_MAX_RANK];
  for (int i = 0; i < shape.rank; i++) axes[i] = i;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, shape.rank), KILN_GB_INT("keepdims", 1),
                          KILN_GB_END};
  int sum = kiln_gb_op(&T->gc, "ReduceSum", &output, 1, attrs, 1);
  kiln_shape one = {.rank = 1, .dim = {1}};
  int flat = sum < 0 ? -1 : kiln_gb_reshape(&T->gc, sum, &one);
  double factor = l->coef * tensor_term_scale(l, &shape);
  int term =
      flat < 0 ? -1 : kiln_gb_binary(&T->gc, "Mul", flat, kiln_gb_scalar(&T->gc, dtype, factor));
  if (term < 0 || T->n_seeds == KILN_MAX_LOSS_TERMS) return term;
  T->seed_tensor[T->n_seeds] = output;
  T->seed_coef[T->n_seeds++] = factor;
  return term;
}

// One loss or term: coef * loss(output, target); -1 after reporting.
static int build_term(trainer *T, const kiln_loss_spec *l) {
  kiln_graph *g = T->g;
  int output = kiln_graph_find_tensor(g, l->output);
  const kiln_tensor y_copy = g->tensors[output], *y = &y_copy;  // adding inputs moves g->tensors
  if (!kiln_dtype_is_float(y->dtype)) {
    kiln_diag_error(T->d, "training.loss.output", "'%s' has dtype %s; a loss reads floats", y->name,
                    kiln_dtype_name(y->dtype));
    return -1;
  }
  if (l->is_tensor) return build_tensor_term(T, l, output);
  int target = add_target(T, output, l);
  kiln_shape batch = {.rank = 1, .dim = {y->shape.dim[0]}};
  int weight = l->weight ? add_input(T, l->weight, y->dtype, &batch) : -1;
  int loss = build_loss(T, l, output, target, weight);
  if (loss < 0 || T->n_coefs == KILN_MAX_LOSS_TERMS) return loss;
  T->coef_node[T->n_coefs] = g->tensors[loss].producer;
  T->coef[T->n_coefs++] = l->coef;
  if (l->coef == 1) return loss;
  return kiln_gb_binary(&T->gc, "Mul", loss, kiln_gb_scalar(&T->gc, y->dtype, l->coef));
}

// Adds l1 sum|w| + l2 sum w^2 over trainable params of rank >= 2 (weights, not biases).
static int add_regularization(trainer *T, int loss) {
  const kiln_training *t = T->t;
  if (t->l1 == 0 && t->l2 == 0) return loss;
  kiln_gb_attr attrs[] = {KILN_GB_FLOAT("l1", t->l1), KILN_GB_FLOAT("l2", t->l2), KILN_GB_END};
  for (int i = 0; i < T->n_tensors0 && loss >= 0; i++) {
    if (!T->trainable[i] || T->g->tensors[i].shape.rank < 2) continue;
    int r = kiln_gb_op(&T->gc, "Regularizer", &i, 1, attrs, 1);
    loss = r < 0 ? -1 : kiln_gb_binary(&T->gc, "Add", loss, r);
  }
  return loss;
}

// Appends the loss (the single loss, or the sum of `loss.terms`); makes it graph output 0 (named
// "loss") before the model's outputs.
static bool append_loss(trainer *T) {
  kiln_graph *g = T->g;
  const kiln_training *t = T->t;
  int n = t->n_terms ? t->n_terms : 1;
  const kiln_loss_spec *specs = t->n_terms ? t->terms : &t->loss;
  int loss = -1;
  for (int i = 0; i < n; i++) {
    int term = build_term(T, &specs[i]);
    if (term < 0) return false;
    loss = loss < 0 ? term : kiln_gb_binary(&T->gc, "Add", loss, term);
    if (loss < 0) return false;
  }
  loss = add_regularization(T, loss);
  if (loss < 0) return false;
  if (kiln_graph_find_tensor(g, "loss") < 0) g->tensors[loss].name = "loss";
  g->tensors[loss].is_output = true;
  int *outs = kiln_xmalloc(sizeof(int) * (size_t)(g->n_outputs + 1));
  outs[0] = loss;
  memcpy(outs + 1, g->outputs, sizeof(int) * (size_t)g->n_outputs);
  free(g->outputs);
  g->outputs = outs;
  g->n_outputs++;
  g->cap_outputs = g->n_outputs;
  T->loss = loss;
  return true;
}

// ---- 4. Backward ----

static bool accumulate(trainer *T, int tensor, int dx) {
  if (dx < 0) return true;
  if (T->grad[tensor] < 0) {
    T->grad[tensor] = dx;
    return true;
  }
  T->grad[tensor] = kiln_gb_binary(&T->gc, "Add", T->grad[tensor], dx);  // fan-out
  return T->grad[tensor] >= 0;
}

// Runs node k's gradient rule: dy from its outputs' gradients, dx into its inputs' gradients.
static bool backprop_node(trainer *T, int k) {
  kiln_graph *g = T->g;
  kiln_node n = g->nodes[k];  // a copy: rules append nodes
  int dy[16], dx[16];
  bool need[16], any_dy = false, any_need = false;
  if (n.n_inputs > 16 || n.n_outputs > 16) return true;
  for (int j = 0; j < n.n_outputs; j++) {
    dy[j] = n.outputs[j] < T->n_tensors0 ? T->grad[n.outputs[j]] : -1;
    any_dy |= dy[j] >= 0;
  }
  for (int j = 0; j < n.n_inputs; j++) {
    need[j] = n.inputs[j] >= 0 && T->needs[n.inputs[j]];
    any_need |= need[j];
    dx[j] = -1;
  }
  if (!any_dy || !any_need) return true;
  const kiln_op_def *def = kiln_op_get(n.op);
  if (!def->grad) {
    kiln_diag_error(T->d, n.where,
                    "%s (%s): no gradient rule for %s yet; a trainable param's gradient must flow "
                    "through it (freeze the params before it with training.frozen)",
                    n.name, def->name, def->name);
    return false;
  }
  kiln_grad_ctx c = {.g = g, .node = n, .dy = dy, .need = need, .dx = dx, .d = T->d};
  if (!def->grad(&c)) return false;
  for (int j = 0; j < n.n_inputs; j++)
    if (need[j] && !accumulate(T, n.inputs[j], dx[j])) return false;
  return true;
}

// The coefficient of the loss node k (1 for regularizers).
static double loss_coef(const trainer *T, int k) {
  for (int i = 0; i < T->n_coefs; i++)
    if (T->coef_node[i] == k) return T->coef[i];
  return 1.0;
}

// "tensor" terms: the output's gradient starts as the constant coef * scale, of its shape.
static bool seed_tensor_terms(trainer *T) {
  for (int i = 0; i < T->n_seeds; i++) {
    int x = T->seed_tensor[i];
    if (!T->needs[x]) continue;
    kiln_tensor y = T->g->tensors[x];
    int64_t numel = kiln_shape_numel(&y.shape);
    double *values = kiln_xmalloc(sizeof(double) * (size_t)(numel ? numel : 1));
    for (int64_t j = 0; j < numel; j++) values[j] = T->seed_coef[i];
    int dx = kiln_gb_const(&T->gc, y.dtype, &y.shape, values);
    free(values);
    if (dx < 0 || !accumulate(T, x, dx)) return false;
  }
  return true;
}

// The loss nodes' gradients (and the regularizers'), each seeded with dloss = its coefficient.
static bool backprop_loss(trainer *T, int first_loss_node) {
  kiln_graph *g = T->g;
  int n_nodes = g->n_nodes;
  for (int k = first_loss_node; k < n_nodes; k++) {
    kiln_node n = g->nodes[k];
    const char *op = kiln_op_get(n.op)->name;
    int in[4], dx = -1;
    bool pointwise = strcmp(op, "PointwiseLoss") == 0, ce = strcmp(op, "SoftmaxCrossEntropy") == 0;
    bool reg = strcmp(op, "Regularizer") == 0;
    if (!pointwise && !ce && !reg) continue;  // Adds and Muls of the sum: coefficients below
    if (!T->needs[n.inputs[0]]) continue;
    int seed = kiln_gb_scalar(&T->gc, g->tensors[T->loss].dtype, loss_coef(T, k));
    if (pointwise) {
      in[0] = n.inputs[0], in[1] = n.inputs[1], in[2] = seed;
      dx = kiln_gb_op(&T->gc, "PointwiseLossGrad", in, 3, NULL, 1);
    } else if (ce) {
      in[0] = n.inputs[0], in[1] = n.inputs[1], in[2] = seed;
      in[3] = n.n_inputs > 2 ? n.inputs[2] : -1;
      dx = kiln_gb_op(&T->gc, "SoftmaxCrossEntropyGrad", in, in[3] >= 0 ? 4 : 3, NULL, 1);
    } else {
      in[0] = n.inputs[0], in[1] = seed;
      dx = kiln_gb_op(&T->gc, "RegularizerGrad", in, 2, NULL, 1);
    }
    if (dx < 0) return false;
    // The grad node takes the loss node's attributes (kind, reduction, ...).
    kiln_node *gn = &g->nodes[g->tensors[dx].producer];
    gn->attrs = n.attrs, gn->n_attrs = n.n_attrs;
    if (!kiln_op_get(gn->op)->infer(g, gn, T->d)) return false;
    if (!accumulate(T, n.inputs[0], dx)) return false;
  }
  return seed_tensor_terms(T);
}

static bool backprop(trainer *T, int first_loss_node) {
  if (!backprop_loss(T, first_loss_node)) return false;
  for (int k = first_loss_node - 1; k >= 0; k--)
    if (!backprop_node(T, k)) return false;
  return true;
}

// ---- 5. Clipping, learning rate, updates ----

static int sum_of_squares(trainer *T, int g) {
  const kiln_shape *s = &T->g->tensors[g].shape;
  int64_t axes[KILN_MAX_RANK];
  for (int i = 0; i < s->rank; i++) axes[i] = i;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, s->rank), KILN_GB_INT("keepdims", 1),
                          KILN_GB_END};
  int sq = kiln_gb_binary(&T->gc, "Mul", g, g);
  int sum = sq < 0 ? -1 : kiln_gb_op(&T->gc, "ReduceSum", &sq, 1, attrs, 1);
  kiln_shape one = {.rank = 1, .dim = {1}};
  return sum < 0 ? -1 : kiln_gb_reshape(&T->gc, sum, &one);
}

// training.expose_grads (data-parallel builds): each trainable param's gradient becomes a graph
// output named "<param>.grad", in param order. A gradient tensor that is not a fresh node output
// (or serves two params) is copied by an Identity so that every output is its own buffer.
static bool expose_gradients(trainer *T) {
  kiln_graph *g = T->g;
  for (int p = 0; p < T->n_tensors0 && T->t->expose_grads; p++) {
    if (!T->trainable[p] || T->grad[p] < 0) continue;
    int x = T->grad[p];
    if (g->tensors[x].is_output || g->tensors[x].producer < 0)
      if ((x = T->grad[p] = kiln_gb_unary(&T->gc, "Identity", x)) < 0) return false;
    g->tensors[x].name = kiln_pool_printf(&g->pool, "%s.grad", g->tensors[p].name);
    g->tensors[x].is_output = true;
    KILN_VEC_PUSH(g->outputs, g->n_outputs, g->cap_outputs, x);
  }
  return true;
}

// g <- g * min(1, max_norm / (||all g|| + 1e-6)) for every trainable param's gradient.
static bool clip_gradients(trainer *T) {
  if (T->t->clip_grad_norm <= 0) return true;
  int total = -1;
  for (int i = 0; i < T->n_tensors0; i++) {
    if (!T->trainable[i] || T->grad[i] < 0) continue;
    int sq = sum_of_squares(T, T->grad[i]);
    total = sq < 0 ? -1 : total < 0 ? sq : kiln_gb_binary(&T->gc, "Add", total, sq);
    if (total < 0) return false;
  }
  if (total < 0) return true;
  kiln_gb_attr attrs[] = {KILN_GB_FLOAT("max_norm", T->t->clip_grad_norm), KILN_GB_END};
  int scale = kiln_gb_op(&T->gc, "GradNormScale", &total, 1, attrs, 1);
  for (int i = 0; i < T->n_tensors0 && scale >= 0; i++)
    if (T->trainable[i] && T->grad[i] >= 0)
      if ((T->grad[i] = kiln_gb_binary(&T->gc, "Mul", T->grad[i], scale)) < 0) return false;
  return scale >= 0;
}

// A STATE tensor named "<param>.<what>" like param p, every element `init`.
static int add_state(trainer *T, int p, const char *what, double init) {
  kiln_graph *g = T->g;
  char name[512];
  snprintf(name, sizeof name, "%s.%s", g->tensors[p].name, what);
  kiln_tensor like = g->tensors[p];
  int id = kiln_gb_const(&T->gc, like.dtype, &like.shape, NULL);
  kiln_tensor *s = &g->tensors[id];
  s->name = kiln_pool_strdup(&g->pool, name);
  s->kind = KILN_TENSOR_STATE;
  s->role = KILN_ROLE_BUFFER;  // optimizer state: updated, not learned
  s->where = "training.optimizer";
  for (int64_t i = 0; i < kiln_shape_numel(&like.shape); i++)
    kiln_element_set(s->data, (int)like.dtype, i, init);
  return id;
}

static int add_step_counter(trainer *T) {
  kiln_graph *g = T->g;
  kiln_shape one = {.rank = 1, .dim = {1}};
  int id = kiln_gb_const(&T->gc, KILN_I64, &one, NULL);
  g->tensors[id].name = T->t->step_name ? T->t->step_name : KILN_STEP_TENSOR;
  g->tensors[id].kind = KILN_TENSOR_STATE;
  g->tensors[id].role = KILN_ROLE_BUFFER;
  g->tensors[id].where = "training";
  return id;
}

static int learning_rate(trainer *T) {
  const kiln_training *t = T->t;
  kiln_dtype dtype = KILN_F32;  // the params' (the first trainable one's)
  for (int p = T->n_tensors0 - 1; p >= 0; p--)
    if (T->trainable[p]) dtype = T->g->tensors[p].dtype;
  static const char *const names[] = {"constant", "step", "cosine"};
  kiln_gb_attr attrs[] = {KILN_GB_FLOAT("lr", t->opt.lr),
                          KILN_GB_STRING("schedule", names[t->sched.kind]),
                          KILN_GB_INT("step_size", t->sched.step_size),
                          KILN_GB_FLOAT("gamma", t->sched.gamma),
                          KILN_GB_INT("total_steps", t->sched.total_steps),
                          KILN_GB_FLOAT("min_lr", t->sched.min_lr),
                          KILN_GB_STRING("dtype", kiln_dtype_name(dtype)),
                          KILN_GB_END};
  return kiln_gb_op(&T->gc, "LearningRate", &T->step, 1, attrs, 1);
}

// Adds a node with no outputs (an update) and checks it.
static bool add_side_effect(trainer *T, const char *op, const char *name, const int *in, int n_in,
                            const kiln_gb_attr *attrs) {
  kiln_graph *g = T->g;
  int id = kiln_graph_add_node(g, kiln_op_lookup(op), name, n_in, in, 0, NULL);
  kiln_node *n = &g->nodes[id];
  n->where = "training.optimizer";
  for (const kiln_gb_attr *a = attrs; a && a->name; a++) {
    kiln_attr *dst = kiln_node_add_attr(g, n, a->name, a->type);
    dst->i = a->i, dst->f = a->f;
    if (a->s) dst->s = kiln_pool_strdup(&g->pool, a->s);
  }
  return kiln_op_get(n->op)->infer(g, n, T->d);
}

static bool update_param(trainer *T, int p, int lr) {
  const kiln_training *t = T->t;
  int in[6] = {p, T->grad[p], lr, T->step, -1, -1}, n_in = 4;
  const char *name = kiln_pool_printf(&T->g->pool, "%s.update", T->g->tensors[p].name);
  switch (t->opt.kind) {
    case KILN_OPT_SGD: {
      if (t->opt.momentum > 0) in[n_in++] = add_state(T, p, "momentum", 0);
      kiln_gb_attr a[] = {KILN_GB_FLOAT("momentum", t->opt.momentum),
                          KILN_GB_FLOAT("dampening", t->opt.dampening),
                          KILN_GB_INT("nesterov", t->opt.nesterov),
                          KILN_GB_FLOAT("weight_decay", t->opt.weight_decay), KILN_GB_END};
      return add_side_effect(T, "SGDUpdate", name, in, n_in, a);
    }
    case KILN_OPT_ADAM:
    case KILN_OPT_ADAMW: {
      in[n_in++] = add_state(T, p, "adam_m", 0);
      in[n_in++] = add_state(T, p, "adam_v", 0);
      kiln_gb_attr a[] = {KILN_GB_FLOAT("beta1", t->opt.beta1),
                          KILN_GB_FLOAT("beta2", t->opt.beta2),
                          KILN_GB_FLOAT("eps", t->opt.eps),
                          KILN_GB_FLOAT("weight_decay", t->opt.weight_decay),
                          KILN_GB_INT("decoupled", t->opt.kind == KILN_OPT_ADAMW),
                          KILN_GB_END};
      return add_side_effect(T, "AdamUpdate", name, in, n_in, a);
    }
    case KILN_OPT_RMSPROP: {
      in[n_in++] = add_state(T, p, "rmsprop_square_avg", 0);
      kiln_gb_attr a[] = {KILN_GB_FLOAT("alpha", t->opt.alpha), KILN_GB_FLOAT("eps", t->opt.eps),
                          KILN_GB_FLOAT("weight_decay", t->opt.weight_decay), KILN_GB_END};
      return add_side_effect(T, "RMSpropUpdate", name, in, n_in, a);
    }
    default: {
      in[n_in++] = add_state(T, p, "adagrad_sum", t->opt.initial_accumulator);
      kiln_gb_attr a[] = {KILN_GB_FLOAT("eps", t->opt.eps),
                          KILN_GB_FLOAT("weight_decay", t->opt.weight_decay), KILN_GB_END};
      return add_side_effect(T, "AdagradUpdate", name, in, n_in, a);
    }
  }
}

// training.clip_weights (a WGAN critic's): w = clamp(w, -c, c) right after w's update.
static bool clip_weights(trainer *T, int p) {
  double c = T->t->clip_weights;
  if (c <= 0) return true;
  kiln_gb_attr a[] = {KILN_GB_FLOAT("min", -c), KILN_GB_FLOAT("max", c), KILN_GB_END};
  const char *name = kiln_pool_printf(&T->g->pool, "%s.clip", T->g->tensors[p].name);
  return add_side_effect(T, "WeightClip", name, &p, 1, a);
}

static bool append_updates(trainer *T) {
  int lr = learning_rate(T);
  if (lr < 0) return false;
  for (int p = 0; p < T->n_tensors0; p++) {
    if (!T->trainable[p]) continue;
    if (T->grad[p] < 0) {  // a param the loss does not read: a constant again
      T->g->tensors[p].kind = KILN_TENSOR_PARAM;
      continue;
    }
    if (!update_param(T, p, lr) || !clip_weights(T, p)) return false;
  }
  for (int i = 0; i < T->mode.n_stats; i++) {  // BatchNormalization's running averages
    const kiln_running_stat *s = &T->mode.stats[i];
    kiln_gb_attr a[] = {KILN_GB_FLOAT("momentum", s->momentum), KILN_GB_FLOAT("unbias", s->unbias),
                        KILN_GB_END};
    int in[2] = {s->running, s->batch};
    const char *name = kiln_pool_printf(&T->g->pool, "%s.update", T->g->tensors[s->running].name);
    if (!add_side_effect(T, "RunningStatUpdate", name, in, 2, a)) return false;
  }
  return add_side_effect(T, "StepIncrement", "kiln.step.increment", &T->step, 1, NULL);
}

bool kiln_build_training_graph(kiln_graph *g, const kiln_training *t, kiln_diag *d) {
  if (!t->present) {
    kiln_diag_error(d, NULL, "the model has no `training` section (docs/training.md)");
    return false;
  }
  for (int i = 0; i < t->n_inits; i++)  // training.init: fresh weights for training builds
    g->tensors[kiln_graph_find_tensor(g, t->init_names[i])].data = t->init_data[i];
  trainer T = {.g = g, .t = t, .d = d};
  T.gc = (kiln_grad_ctx){.g = g, .node = {.name = "train", .where = "training"}, .d = d};
  mark_trainable(g, t);
  if (!rebatch(&T)) return false;
  T.step = add_step_counter(&T);
  T.mode.sync_bn = t->sync_bn;        // kept by the rewrite (docs/distributed.md, --sync-bn)
  T.mode.noise_salt = t->noise_salt;  // kept too (adversarial phases draw different noise)
  if (!kiln_training_mode_rewrite(g, T.step, t->seed, t->noise, t->n_noise, &T.mode, d)) {
    free(T.mode.stats);
    return false;
  }
  T.n_tensors0 = g->n_tensors;
  size_t n = (size_t)g->n_tensors + 1;
  T.trainable = kiln_xcalloc(n, sizeof(bool));
  T.needs = kiln_xcalloc(n, sizeof(bool));
  T.grad = kiln_xmalloc(n * sizeof(int));
  for (size_t i = 0; i < n; i++) T.grad[i] = -1;
  choose_trainable(&T);
  int first_loss_node = g->n_nodes;
  bool ok = append_loss(&T);
  if (ok) {
    // Tensors the loss added are not differentiated (n_tensors0 bounds the arrays).
    ok = backprop(&T, first_loss_node) && expose_gradients(&T) && clip_gradients(&T) &&
         append_updates(&T);
  }
  free(T.trainable);
  free(T.needs);
  free(T.grad);
  free(T.mode.stats);
  return ok && d->errors == 0;
}

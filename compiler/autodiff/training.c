// The `training` section of the JSON model (docs/training.md §1): strict checking into a
// kiln_training. Every problem is reported with its JSON path ("training.optimizer.lr: expected a
// number > 0, got -1"), all of them in one run.
#include "training.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../initializers.h"
#include "../ops/op.h"

static const char *const loss_names[KILN_LOSS_COUNT] = {
    "mse", "mae", "huber", "bce", "bce_with_logits", "cross_entropy", "kl_div", "clipped_mse"};

const char *kiln_loss_kind_name(kiln_loss_kind k) {
  return k >= 0 && k < KILN_LOSS_COUNT ? loss_names[k] : "?";
}

typedef struct parser {
  kiln_diag *d;
  kiln_graph *g;
} parser;

static bool known_field(const char *key, const char *const *allowed) {
  for (int i = 0; allowed[i]; i++)
    if (strcmp(allowed[i], key) == 0) return true;
  return false;
}

// Reports every field of obj not in allowed (NULL-terminated).
static void check_fields(parser *P, json_object *obj, const char *path,
                         const char *const *allowed) {
  json_object_object_foreach(obj, key, val) {
    (void)val;
    if (known_field(key, allowed)) continue;
    char list[400] = "";
    for (int i = 0; allowed[i]; i++) {
      if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
      strncat(list, allowed[i], sizeof list - strlen(list) - 1);
    }
    kiln_fe_error(P->d, "%s.%.100s: unknown field; expected one of %s", path, key, list);
  }
}

static json_object *field(json_object *obj, const char *key) {
  json_object *v = NULL;
  return json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

// An optional number in [lo, hi] (open at lo when lo_open); dflt when absent.
static double number(parser *P, json_object *obj, const char *path, const char *key, double dflt,
                     double lo, bool lo_open, double hi) {
  json_object *v = field(obj, key);
  if (!v) return dflt;
  double x;
  char got[96];
  if (!kiln_json_number(v, &x) || x < lo || (lo_open && x == lo) || x > hi) {
    char range[96];
    if (isinf(hi))
      snprintf(range, sizeof range, "%s %g", lo_open ? ">" : ">=", lo);
    else
      snprintf(range, sizeof range, "in %s%g, %g]", lo_open ? "(" : "[", lo, hi);
    kiln_fe_error(P->d, "%s.%s: expected a number %s, got %s", path, key, range,
                  kiln_json_describe(v, got, sizeof got));
    return dflt;
  }
  return x;
}

static int64_t integer(parser *P, json_object *obj, const char *path, const char *key, int64_t dflt,
                       int64_t lo) {
  json_object *v = field(obj, key);
  if (!v) return dflt;
  int64_t x;
  char got[96];
  if (!kiln_json_int64(v, &x) || x < lo) {
    kiln_fe_error(P->d, "%s.%s: expected an integer >= %lld, got %s", path, key, (long long)lo,
                  kiln_json_describe(v, got, sizeof got));
    return dflt;
  }
  return x;
}

static bool boolean(parser *P, json_object *obj, const char *path, const char *key, bool dflt) {
  json_object *v = field(obj, key);
  if (!v) return dflt;
  char got[96];
  if (!json_object_is_type(v, json_type_boolean)) {
    kiln_fe_error(P->d, "%s.%s: expected true or false, got %s", path, key,
                  kiln_json_describe(v, got, sizeof got));
    return dflt;
  }
  return json_object_get_boolean(v);
}

// A string field; NULL if absent (reported when required) or not a non-empty string.
static const char *string(parser *P, json_object *obj, const char *path, const char *key,
                          bool required, const char *what) {
  json_object *v = field(obj, key);
  char got[96];
  if (!v) {
    if (required) kiln_fe_error(P->d, "%s: missing required field '%s' (%s)", path, key, what);
    return NULL;
  }
  const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
  if (!s || !*s || strlen(s) != (size_t)json_object_get_string_len(v)) {
    kiln_fe_error(P->d, "%s.%s: expected %s, got %s", path, key, what,
                  kiln_json_describe(v, got, sizeof got));
    return NULL;
  }
  return kiln_pool_strdup(&P->g->pool, s);
}

// Index of s in names[0..n), or -1 after reporting.
static int choice(parser *P, const char *path, const char *key, const char *s,
                  const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  char list[256] = "";
  for (int i = 0; i < n; i++) {
    if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
    strncat(list, names[i], sizeof list - strlen(list) - 1);
  }
  kiln_fe_error(P->d, "%s.%s: unknown value \"%.60s\"; expected one of %s", path, key, s, list);
  return -1;
}

// A name for a new model input: a C-like name no tensor of the model uses.
static bool check_new_input(parser *P, const char *path, const char *name) {
  if (kiln_graph_find_tensor(P->g, name) >= 0) {
    kiln_fe_error(P->d, "%s: '%s' already names a tensor of the model; the loss needs a new input",
                  path, name);
    return false;
  }
  return true;
}

// `"target": {"input": NAME}`: the loss compares with an existing model input (autoencoders).
static void parse_target_input(parser *P, json_object *v, const char *path, kiln_loss_spec *l) {
  static const char *const fields[] = {"input", NULL};
  check_fields(P, v, path, fields);
  l->target_input = string(P, v, path, "input", true, "the name of a model input");
  int id = l->target_input ? kiln_graph_find_tensor(P->g, l->target_input) : -1;
  if (l->target_input && (id < 0 || P->g->tensors[id].kind != KILN_TENSOR_INPUT))
    kiln_fe_error(P->d, "%s.input: '%s' is not an input of the model", path, l->target_input);
}

// The first node the tensor t is computed from (t's producer and its ancestors) that a training
// build runs in training mode (BatchNormalization, Dropout), or NULL.
static const kiln_node *training_mode_ancestor(const kiln_graph *g, int t) {
  bool *reaches = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(bool));
  const kiln_node *found = NULL;
  reaches[t] = true;
  for (int k = g->n_nodes - 1; k >= 0 && !found; k--) {
    const kiln_node *n = &g->nodes[k];
    bool feeds = false;
    for (int j = 0; j < n->n_outputs; j++) feeds |= n->outputs[j] >= 0 && reaches[n->outputs[j]];
    if (!feeds) continue;
    const char *op = kiln_op_get(n->op)->name;
    if (strcmp(op, "BatchNormalization") == 0 || strcmp(op, "Dropout") == 0) found = n;
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0) reaches[n->inputs[j]] = true;
  }
  free(reaches);
  return found;
}

// `"target": {"tensor": NAME}`: the loss compares with a tensor the model computes (a frozen
// teacher's soft labels, docs/training.md §8); no gradient flows into it.
static void parse_target_tensor(parser *P, json_object *v, const char *path, kiln_loss_spec *l) {
  static const char *const fields[] = {"tensor", NULL};
  check_fields(P, v, path, fields);
  l->target_tensor = string(P, v, path, "tensor", true, "the name of a tensor the model computes");
  if (!l->target_tensor) return;
  int id = kiln_graph_find_tensor(P->g, l->target_tensor);
  const kiln_node *mode = id >= 0 ? training_mode_ancestor(P->g, id) : NULL;
  if (id < 0)
    kiln_fe_error(P->d, "%s.tensor: no tensor named '%s' in the model", path, l->target_tensor);
  else if (P->g->tensors[id].kind == KILN_TENSOR_INPUT)
    kiln_fe_error(P->d, "%s.tensor: '%s' is a model input; write {\"input\": \"%s\"}", path,
                  l->target_tensor, l->target_tensor);
  else if (P->g->tensors[id].producer < 0)
    kiln_fe_error(P->d, "%s.tensor: '%s' is a param, not a tensor the model computes", path,
                  l->target_tensor);
  else if (mode)
    kiln_fe_error(P->d,
                  "%s.tensor: '%s' is computed through %s '%s', which a training build runs in "
                  "training mode; a target (a teacher) must run in inference mode: remove it or "
                  "fold it into the weights",
                  path, l->target_tensor, kiln_op_get(mode->op)->name, mode->name);
}

static void parse_target_shape(parser *P, json_object *shape, const char *path, kiln_loss_spec *l) {
  char got[96];
  size_t n = json_object_is_type(shape, json_type_array) ? json_object_array_length(shape) : 0;
  bool ok = n >= 1 && n <= KILN_MAX_RANK;
  for (size_t i = 0; ok && i < n; i++) {
    int64_t dim;
    ok = kiln_json_int64(json_object_array_get_idx(shape, i), &dim) && dim >= 1;
    l->target_shape.dim[i] = dim;
  }
  if (!ok) {
    kiln_fe_error(P->d, "%s.shape: expected 1 to %d integers >= 1, got %s", path, KILN_MAX_RANK,
                  kiln_json_describe(shape, got, sizeof got));
    return;
  }
  l->target_shape.rank = (int)n;
  l->target_has_shape = true;
}

static void parse_target(parser *P, json_object *loss, const char *lpath, kiln_loss_spec *l) {
  static const char *const fields[] = {"name", "dtype", "shape", NULL};
  char path[96], got[96];
  snprintf(path, sizeof path, "%s.target", lpath);
  json_object *v = field(loss, "target");
  if (!v) {
    kiln_fe_error(
        P->d, "%s: missing required field 'target' ({\"name\", \"dtype\"} or {\"input\"})", lpath);
    return;
  }
  if (!json_object_is_type(v, json_type_object)) {
    kiln_fe_error(P->d, "%s: expected an object {\"name\", \"dtype\"[, \"shape\"]}, got %s", path,
                  kiln_json_describe(v, got, sizeof got));
    return;
  }
  if (field(v, "input")) return parse_target_input(P, v, path, l);
  if (field(v, "tensor")) return parse_target_tensor(P, v, path, l);
  check_fields(P, v, path, fields);
  l->target = string(P, v, path, "name", true, "a tensor name");
  char npath[112];
  snprintf(npath, sizeof npath, "%s.name", path);
  if (l->target) check_new_input(P, npath, l->target);
  const char *dt = string(P, v, path, "dtype", true, "a dtype such as \"f32\" or \"i64\"");
  if (dt && !kiln_dtype_parse(dt, &l->target_dtype))
    kiln_fe_error(P->d, "%s.dtype: unknown dtype \"%s\"", path, dt);
  json_object *shape = field(v, "shape");
  if (shape) parse_target_shape(P, shape, path, l);
}

// A computed target must have the output's shape (both as loaded, batch 1).
static void check_target_tensor_shape(parser *P, const char *path, const kiln_loss_spec *l) {
  int t = kiln_graph_find_tensor(P->g, l->target_tensor);
  int y = l->output ? kiln_graph_find_tensor(P->g, l->output) : -1;
  if (t < 0 || y < 0 || l->kind == KILN_LOSS_CROSS_ENTROPY) return;
  const kiln_shape *ts = &P->g->tensors[t].shape, *ys = &P->g->tensors[y].shape;
  if (kiln_shape_equal(ts, ys)) return;
  char a[128], b[128];
  kiln_fe_error(P->d, "%s.target.tensor: '%s' has shape %s; the output '%s' has %s", path,
                l->target_tensor, kiln_shape_str(ts, a, sizeof a), l->output,
                kiln_shape_str(ys, b, sizeof b));
}

// The kind-specific fields of a loss (delta, clip, per-sample weights).
static void parse_loss_options(parser *P, json_object *loss, const char *path, bool has_kind,
                               kiln_loss_spec *l) {
  if (field(loss, "delta") && l->kind != KILN_LOSS_HUBER)
    kiln_fe_error(P->d, "%s.delta: only the huber loss takes a delta", path);
  l->delta = number(P, loss, path, "delta", 1.0, 0, true, INFINITY);
  if (field(loss, "clip") && l->kind != KILN_LOSS_CLIPPED_MSE)
    kiln_fe_error(P->d, "%s.clip: only the clipped_mse loss takes a clip", path);
  if (!field(loss, "clip") && l->kind == KILN_LOSS_CLIPPED_MSE && has_kind)
    kiln_fe_error(P->d, "%s: missing required field 'clip' (a number > 0) for clipped_mse", path);
  l->clip = number(P, loss, path, "clip", 1.0, 0, true, INFINITY);
  if (l->weight && l->kind != KILN_LOSS_CROSS_ENTROPY && has_kind)
    kiln_fe_error(P->d, "%s.weight: per-sample weights are supported with cross_entropy", path);
}

// One loss: the single `training.loss`, or a term of `training.loss.terms` (in_term: `weight` is
// then the term's coefficient, and kind "tensor" is allowed).
static void parse_loss_spec(parser *P, json_object *loss, const char *path, bool in_term,
                            kiln_loss_spec *l) {
  static const char *const fields[] = {"kind",      "output", "target", "weight",
                                       "reduction", "delta",  "clip",   NULL};
  static const char *const reductions[] = {"mean", "sum", "batchmean"};
  check_fields(P, loss, path, fields);
  l->coef = 1;
  const char *kind = string(P, loss, path, "kind", true, "a loss kind");
  l->is_tensor = in_term && kind && strcmp(kind, "tensor") == 0;
  int k = kind && !l->is_tensor ? choice(P, path, "kind", kind, loss_names, KILN_LOSS_COUNT) : -1;
  l->kind = k >= 0 ? (kiln_loss_kind)k : KILN_LOSS_MSE;
  l->output = string(P, loss, path, "output", true, "the name of a tensor");
  if (l->output && kiln_graph_find_tensor(P->g, l->output) < 0)
    kiln_fe_error(P->d, "%s.output: no tensor named '%s' in the model", path, l->output);
  if (l->is_tensor && field(loss, "target"))
    kiln_fe_error(P->d, "%s.target: a \"tensor\" term has no target", path);
  else if (!l->is_tensor)
    parse_target(P, loss, path, l);
  if (l->target_tensor) check_target_tensor_shape(P, path, l);
  if (in_term) {
    l->coef = number(P, loss, path, "weight", 1.0, 0, false, INFINITY);
  } else {
    l->weight = string(P, loss, path, "weight", false, "the name of a new input");
    if (l->weight) check_new_input(P, "training.loss.weight", l->weight);
    if (l->weight && l->target && strcmp(l->weight, l->target) == 0)
      kiln_fe_error(P->d, "%s.weight: '%s' is also the target's name", path, l->weight);
  }
  const char *red = string(P, loss, path, "reduction", false, "\"mean\", \"sum\" or \"batchmean\"");
  int r = red ? choice(P, path, "reduction", red, reductions, 3) : 0;
  l->reduction = r >= 0 ? (kiln_loss_reduction)r : KILN_REDUCE_MEAN;
  if (l->reduction == KILN_REDUCE_BATCHMEAN && l->kind != KILN_LOSS_KL_DIV && !l->is_tensor)
    kiln_fe_error(P->d, "%s.reduction: \"batchmean\" is for kl_div and tensor terms only", path);
  parse_loss_options(P, loss, path, kind != NULL, l);
}

// Two targets may not name the same new input.
static void check_term_targets(parser *P, const kiln_training *t) {
  for (int i = 0; i < t->n_terms; i++)
    for (int j = 0; j < i; j++)
      if (t->terms[i].target && t->terms[j].target &&
          strcmp(t->terms[i].target, t->terms[j].target) == 0)
        kiln_fe_error(P->d, "training.loss.terms[%d].target.name: '%s' is also terms[%d]'s", i,
                      t->terms[i].target, j);
}

// `loss.terms`: a weighted sum of losses; the first term stands for the loss in t->loss.
static void parse_terms(parser *P, json_object *loss, kiln_training *t) {
  static const char *const fields[] = {"terms", NULL};
  json_object *v = field(loss, "terms");
  char got[96], path[64];
  check_fields(P, loss, "training.loss", fields);
  size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
  if (n < 1 || n > 64) {
    kiln_fe_error(P->d, "training.loss.terms: expected an array of 1 to 64 objects, got %s",
                  kiln_json_describe(v, got, sizeof got));
    return;
  }
  t->terms = kiln_pool_alloc(&P->g->pool, sizeof(kiln_loss_spec) * n);
  memset(t->terms, 0, sizeof(kiln_loss_spec) * n);
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    snprintf(path, sizeof path, "training.loss.terms[%zu]", i);
    if (!json_object_is_type(e, json_type_object)) {
      kiln_fe_error(P->d, "%s: expected an object {\"kind\", \"output\", ...}, got %s", path,
                    kiln_json_describe(e, got, sizeof got));
      continue;
    }
    parse_loss_spec(P, e, path, true, &t->terms[t->n_terms++]);
  }
  check_term_targets(P, t);
  if (t->n_terms > 0) t->loss = t->terms[0];
}

static void parse_loss(parser *P, json_object *tr, kiln_training *t) {
  json_object *loss = field(tr, "loss");
  char got[96];
  if (!loss) {
    kiln_fe_error(P->d, "training: missing required field 'loss' (an object)");
    return;
  }
  if (!json_object_is_type(loss, json_type_object)) {
    kiln_fe_error(P->d, "training.loss: expected an object, got %s",
                  kiln_json_describe(loss, got, sizeof got));
    return;
  }
  if (field(loss, "terms")) return parse_terms(P, loss, t);
  parse_loss_spec(P, loss, "training.loss", false, &t->loss);
}

// `noise`: names of float model inputs drawn from N(0, 1) afresh every training step.
static void parse_noise(parser *P, json_object *tr, kiln_training *t) {
  json_object *v = field(tr, "noise");
  char got[96];
  if (!v) return;
  size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
  if (!json_object_is_type(v, json_type_array)) {
    kiln_fe_error(P->d, "training.noise: expected an array of input names, got %s",
                  kiln_json_describe(v, got, sizeof got));
    return;
  }
  t->noise = kiln_pool_alloc(&P->g->pool, sizeof(char *) * (n + 1));
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
    int id = s ? kiln_graph_find_tensor(P->g, s) : -1;
    if (id < 0 || P->g->tensors[id].kind != KILN_TENSOR_INPUT ||
        !kiln_dtype_is_float(P->g->tensors[id].dtype))
      kiln_fe_error(P->d, "training.noise[%zu]: expected the name of a float model input, got %s",
                    i, kiln_json_describe(e, got, sizeof got));
    else
      t->noise[t->n_noise++] = kiln_pool_strdup(&P->g->pool, s);
  }
}

// An optimizer object at `path` into *opt.
static void parse_optimizer_object(parser *P, json_object *o, const char *path,
                                   kiln_optimizer_spec *opt) {
  static const char *const kinds[] = {"sgd", "adam", "adamw", "adagrad", "rmsprop"};
  static const char *const sgd[] = {"kind",      "lr",           "momentum", "nesterov",
                                    "dampening", "weight_decay", NULL};
  static const char *const adam[] = {"kind", "lr", "beta1", "beta2", "eps", "weight_decay", NULL};
  static const char *const adagrad[] = {
      "kind", "lr", "eps", "weight_decay", "initial_accumulator_value", NULL};
  static const char *const rmsprop[] = {"kind", "lr", "alpha", "eps", "weight_decay", NULL};
  char got[96];
  if (!json_object_is_type(o, json_type_object)) {
    kiln_fe_error(P->d, "%s: expected an object, got %s", path,
                  kiln_json_describe(o, got, sizeof got));
    return;
  }
  const char *kind =
      string(P, o, path, "kind", true, "\"sgd\", \"adam\", \"adamw\", \"adagrad\" or \"rmsprop\"");
  int k = kind ? choice(P, path, "kind", kind, kinds, 5) : -1;
  if (k < 0) return;
  opt->kind = (kiln_opt_kind)k;
  const char *const *fields = k == KILN_OPT_SGD       ? sgd
                              : k == KILN_OPT_ADAGRAD ? adagrad
                              : k == KILN_OPT_RMSPROP ? rmsprop
                                                      : adam;
  check_fields(P, o, path, fields);
  if (!field(o, "lr")) kiln_fe_error(P->d, "%s: missing required field 'lr' (a number > 0)", path);
  opt->lr = number(P, o, path, "lr", 0.01, 0, true, INFINITY);
  opt->momentum = number(P, o, path, "momentum", 0, 0, false, 1);
  opt->dampening = number(P, o, path, "dampening", 0, 0, false, 1);
  opt->nesterov = boolean(P, o, path, "nesterov", false);
  if (opt->nesterov && (opt->momentum <= 0 || opt->dampening != 0))
    kiln_fe_error(P->d, "%s.nesterov: needs a momentum > 0 and dampening 0", path);
  opt->beta1 = number(P, o, path, "beta1", 0.9, 0, false, 0.999999);
  opt->beta2 = number(P, o, path, "beta2", 0.999, 0, false, 0.999999999);
  opt->eps = number(P, o, path, "eps", k == KILN_OPT_ADAGRAD ? 1e-10 : 1e-8, 0, false, 1);
  opt->alpha = number(P, o, path, "alpha", 0.99, 0, false, 1);
  opt->weight_decay =
      number(P, o, path, "weight_decay", k == KILN_OPT_ADAMW ? 0.01 : 0, 0, false, INFINITY);
  opt->initial_accumulator = number(P, o, path, "initial_accumulator_value", 0, 0, false, INFINITY);
}

static void parse_optimizer(parser *P, json_object *tr, kiln_training *t) {
  json_object *o = field(tr, "optimizer");
  if (!o) {
    kiln_fe_error(P->d, "training: missing required field 'optimizer' (an object)");
    return;
  }
  parse_optimizer_object(P, o, "training.optimizer", &t->opt);
}

static void parse_schedule(parser *P, json_object *tr, kiln_training *t) {
  static const char *const kinds[] = {"step", "cosine"};
  static const char *const step[] = {"kind", "step_size", "gamma", NULL};
  static const char *const cosine[] = {"kind", "total_steps", "min_lr", NULL};
  const char *path = "training.lr_schedule";
  json_object *s = field(tr, "lr_schedule");
  char got[96];
  t->sched.kind = KILN_SCHED_CONSTANT;
  t->sched.step_size = t->sched.total_steps = 1;
  t->sched.gamma = 0.1;
  if (!s) return;
  if (!json_object_is_type(s, json_type_object)) {
    kiln_fe_error(P->d, "%s: expected an object, got %s", path,
                  kiln_json_describe(s, got, sizeof got));
    return;
  }
  const char *kind = string(P, s, path, "kind", true, "\"step\" or \"cosine\"");
  int k = kind ? choice(P, path, "kind", kind, kinds, 2) : -1;
  if (k < 0) return;
  t->sched.kind = k == 0 ? KILN_SCHED_STEP : KILN_SCHED_COSINE;
  check_fields(P, s, path, k == 0 ? step : cosine);
  const char *need = k == 0 ? "step_size" : "total_steps";
  if (!field(s, need))
    kiln_fe_error(P->d, "%s: missing required field '%s' (an integer >= 1)", path, need);
  t->sched.step_size = integer(P, s, path, "step_size", 1, 1);
  t->sched.total_steps = integer(P, s, path, "total_steps", 1, 1);
  t->sched.gamma = number(P, s, path, "gamma", 0.1, 0, true, INFINITY);
  t->sched.min_lr = number(P, s, path, "min_lr", 0, 0, false, INFINITY);
}

static void parse_regularization(parser *P, json_object *tr, kiln_training *t) {
  static const char *const fields[] = {"l1", "l2", NULL};
  json_object *r = field(tr, "regularization");
  char got[96];
  if (!r) return;
  if (!json_object_is_type(r, json_type_object)) {
    kiln_fe_error(P->d, "training.regularization: expected an object {\"l1\", \"l2\"}, got %s",
                  kiln_json_describe(r, got, sizeof got));
    return;
  }
  check_fields(P, r, "training.regularization", fields);
  t->l1 = number(P, r, "training.regularization", "l1", 0, 0, false, INFINITY);
  t->l2 = number(P, r, "training.regularization", "l2", 0, 0, false, INFINITY);
}

// `frozen` or `trainable`: names of float params.
static void parse_names(parser *P, json_object *tr, kiln_training *t) {
  json_object *frozen = field(tr, "frozen"), *trainable = field(tr, "trainable");
  char got[96];
  if (frozen && trainable) {
    kiln_fe_error(P->d, "training: give at most one of 'frozen' and 'trainable'");
    return;
  }
  json_object *v = frozen ? frozen : trainable;
  const char *path = frozen ? "training.frozen" : "training.trainable";
  if (!v) return;
  if (!json_object_is_type(v, json_type_array)) {
    kiln_fe_error(P->d, "%s: expected an array of param names, got %s", path,
                  kiln_json_describe(v, got, sizeof got));
    return;
  }
  int n = (int)json_object_array_length(v);
  t->names = kiln_pool_alloc(&P->g->pool, sizeof(char *) * (size_t)(n + 1));
  t->names_are_trainable = trainable != NULL;
  for (int i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
    int id = s ? kiln_graph_find_tensor(P->g, s) : -1;
    if (!s) {
      kiln_fe_error(P->d, "%s[%d]: expected a param name, got %s", path, i,
                    kiln_json_describe(e, got, sizeof got));
    } else if (id < 0 || P->g->tensors[id].kind != KILN_TENSOR_PARAM ||
               !kiln_dtype_is_float(P->g->tensors[id].dtype)) {
      kiln_fe_error(P->d, "%s[%d]: '%.100s' is not a float param of the model", path, i, s);
    } else if (trainable && P->g->tensors[id].role != KILN_ROLE_WEIGHT) {
      kiln_fe_error(P->d, "%s[%d]: '%.100s' is a %s, not a weight; only weights are trained", path,
                    i, s, P->g->tensors[id].role == KILN_ROLE_BUFFER ? "buffer" : "constant");
    } else {
      t->names[t->n_names++] = kiln_pool_strdup(&P->g->pool, s);
    }
  }
}

// `init`: {"param": {init spec as in params[i].init}, ...}, applied by training builds only (an
// inference build keeps the model's weights).
static void parse_inits(parser *P, json_object *tr, kiln_training *t) {
  json_object *v = field(tr, "init");
  char got[96];
  if (!v) return;
  if (!json_object_is_type(v, json_type_object)) {
    kiln_fe_error(P->d, "training.init: expected an object {\"param\": {init}, ...}, got %s",
                  kiln_json_describe(v, got, sizeof got));
    return;
  }
  int n = json_object_object_length(v);
  t->init_names = kiln_pool_alloc(&P->g->pool, sizeof(char *) * (size_t)(n + 1));
  t->init_data = kiln_pool_alloc(&P->g->pool, sizeof(void *) * (size_t)(n + 1));
  json_object_object_foreach(v, name, spec) {
    char path[200];
    snprintf(path, sizeof path, "training.init.%.100s", name);
    int id = kiln_graph_find_tensor(P->g, name);
    const kiln_tensor *p = id >= 0 ? &P->g->tensors[id] : NULL;
    if (!p || p->kind != KILN_TENSOR_PARAM || !kiln_dtype_is_float(p->dtype)) {
      kiln_fe_error(P->d, "%s: '%.100s' is not a float param of the model", path, name);
      continue;
    }
    kiln_init_spec s;
    if (!kiln_init_parse(spec, path, p->dtype, &p->shape, &s, P->d)) continue;
    size_t bytes = (size_t)kiln_shape_numel(&p->shape) * kiln_dtype_size(p->dtype);
    void *data = kiln_pool_alloc(&P->g->pool, bytes ? bytes : 1);
    kiln_init_fill(&s, p->dtype, &p->shape, data);
    t->init_names[t->n_inits] = kiln_pool_strdup(&P->g->pool, name);
    t->init_data[t->n_inits++] = data;
  }
}

// ---- `augment` and `normalize`: the trainer's spec string (runtime/augment.h) ----

typedef struct aug_kind {
  const char *kind, *key;  // the parameter: required unless it has a default
  bool integer, has_default, lo_open;
  double lo, hi, dflt;
} aug_kind;

static const aug_kind aug_kinds[] = {
    {"random_crop", "padding", true, false, false, 1, 1 << 20, 0},
    {"hflip", "p", false, true, false, 0, 1, 0.5},
    {"translate", "max_pixels", true, false, false, 1, 1 << 20, 0},
    {"gaussian_noise", "std", false, false, true, 0, INFINITY, 0},
    {"cutout", "size", true, false, false, 1, 1 << 20, 0},
};
enum { AUG_KINDS = sizeof aug_kinds / sizeof aug_kinds[0], AUG_MAX_STEPS = 16, AUG_MAX_CH = 64 };

// The model's one data input's dims (N, C, H, W) etc., or NULL when it has several inputs.
static const kiln_shape *data_input_shape(const kiln_graph *g) {
  return g->n_inputs == 1 ? &g->tensors[g->inputs[0]].shape : NULL;
}

static void append(char *buf, size_t size, const char *fmt, double v) {
  size_t n = strlen(buf);
  if (n < size) snprintf(buf + n, size - n, fmt, v);
}

static void append_text(char *buf, size_t size, const char *text) {
  strncat(buf, text, size - strlen(buf) - 1);
}

// One element of `augment`: {"kind": K, PARAM: V}; appends "K PARAM=V; " to spec.
static void parse_aug_step(parser *P, json_object *e, const char *path, char *spec, size_t size) {
  char got[96];
  if (!json_object_is_type(e, json_type_object)) {
    kiln_fe_error(P->d, "%s: expected an object {\"kind\", ...}, got %s", path,
                  kiln_json_describe(e, got, sizeof got));
    return;
  }
  static const char *names[AUG_KINDS];
  for (int k = 0; k < AUG_KINDS; k++) names[k] = aug_kinds[k].kind;
  const char *kind = string(P, e, path, "kind", true, "an augmentation kind");
  int k = kind ? choice(P, path, "kind", kind, names, AUG_KINDS) : -1;
  if (k < 0) return;
  const aug_kind *a = &aug_kinds[k];
  const char *fields[] = {"kind", a->key, NULL};
  check_fields(P, e, path, fields);
  if (!a->has_default && !field(e, a->key))
    kiln_fe_error(P->d, "%s: missing required field '%s' for %s", path, a->key, a->kind);
  double v = a->integer ? (double)integer(P, e, path, a->key, 1, (int64_t)a->lo)
                        : number(P, e, path, a->key, a->dflt, a->lo, a->lo_open, a->hi);
  const kiln_shape *x = data_input_shape(P->g);
  if (!x || x->rank < 3 || x->rank > 4)
    kiln_fe_error(P->d,
                  "%s: %s needs one image input of shape (N, C, H, W) or (N, H, W); the model "
                  "has %d inputs%s",
                  path, a->kind, P->g->n_inputs, x ? " of another rank" : "");
  append_text(spec, size, a->kind);
  append_text(spec, size, " ");
  append_text(spec, size, a->key);
  append(spec, size, "=%.15g; ", v);
}

static void parse_augment(parser *P, json_object *tr, char *spec, size_t size) {
  json_object *v = field(tr, "augment");
  char got[96], path[64];
  if (!v) return;
  size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
  if (!json_object_is_type(v, json_type_array) || n > AUG_MAX_STEPS) {
    kiln_fe_error(P->d, "training.augment: expected an array of at most %d objects, got %s",
                  AUG_MAX_STEPS, kiln_json_describe(v, got, sizeof got));
    return;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(path, sizeof path, "training.augment[%zu]", i);
    parse_aug_step(P, json_object_array_get_idx(v, i), path, spec, size);
  }
}

// `normalize.mean` / `normalize.std`: 1 or C numbers; appends "a,b,c" to spec; the count or -1.
static int parse_channel_list(parser *P, json_object *obj, const char *key, bool positive,
                              char *spec, size_t size) {
  json_object *v = field(obj, key);
  char got[96];
  size_t n = v && json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
  bool ok = n >= 1 && n <= AUG_MAX_CH;
  for (size_t i = 0; ok && i < n; i++) {
    double x;
    ok = kiln_json_number(json_object_array_get_idx(v, i), &x) && isfinite(x) &&
         (!positive || x > 0);
    append(spec, size, i ? ",%.15g" : "%.15g", x);
  }
  if (!ok) {
    kiln_fe_error(P->d, "training.normalize.%s: expected an array of 1 to %d numbers%s, got %s",
                  key, AUG_MAX_CH, positive ? " > 0" : "",
                  v ? kiln_json_describe(v, got, sizeof got) : "nothing");
    return -1;
  }
  return (int)n;
}

static void parse_normalize(parser *P, json_object *tr, char *spec, size_t size) {
  static const char *const fields[] = {"mean", "std", NULL};
  json_object *v = field(tr, "normalize");
  char got[96];
  if (!v) return;
  if (!json_object_is_type(v, json_type_object)) {
    kiln_fe_error(
        P->d, "training.normalize: expected an object {\"mean\": [...], \"std\": [...]}, got %s",
        kiln_json_describe(v, got, sizeof got));
    return;
  }
  check_fields(P, v, "training.normalize", fields);
  append_text(spec, size, "normalize mean=");
  int n_mean = parse_channel_list(P, v, "mean", false, spec, size);
  append_text(spec, size, " std=");
  int n_std = parse_channel_list(P, v, "std", true, spec, size);
  const kiln_shape *x = data_input_shape(P->g);
  int64_t channels = x && x->rank >= 4 ? x->dim[1] : 1;
  if (n_mean > 0 && n_std > 0 && n_mean != n_std)
    kiln_fe_error(P->d, "training.normalize: mean has %d numbers, std %d", n_mean, n_std);
  else if (n_mean > 1 && (!x || n_mean != channels))
    kiln_fe_error(P->d,
                  "training.normalize.mean: %d numbers; the data input has %lld channels (give 1 "
                  "or one per channel)",
                  n_mean, (long long)channels);
}

// ---- `adversarial` (docs/training.md §8) ----

// A float weight param of the model named `name`, or -1.
static int weight_param(const kiln_graph *g, const char *name) {
  int id = kiln_graph_find_tensor(g, name);
  if (id < 0 || g->tensors[id].kind != KILN_TENSOR_PARAM ||
      g->tensors[id].role != KILN_ROLE_WEIGHT || !kiln_dtype_is_float(g->tensors[id].dtype))
    return -1;
  return id;
}

// Appends every float weight param whose name starts with prefix; their count.
static int add_params_with_prefix(parser *P, const char *prefix, size_t len, kiln_adv_net *net) {
  int found = 0;
  for (int i = 0; i < P->g->n_tensors; i++) {
    const char *name = P->g->tensors[i].name;
    if (!name || strncmp(name, prefix, len) != 0 || weight_param(P->g, name) != i) continue;
    net->params[net->n_params++] = name;
    found++;
  }
  return found;
}

// `params`: names of float weight params, or prefixes ending in '*' ("g.*").
static void parse_adv_params(parser *P, json_object *v, const char *path, kiln_adv_net *net) {
  char got[96];
  size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
  if (n == 0) {
    kiln_fe_error(P->d,
                  "%s.params: expected a non-empty array of param names (or \"prefix*\"), "
                  "got %s",
                  path, v ? kiln_json_describe(v, got, sizeof got) : "nothing");
    return;
  }
  net->params = kiln_pool_alloc(&P->g->pool, sizeof(char *) * (size_t)(P->g->n_tensors + 1));
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
    size_t len = s ? strlen(s) : 0;
    if (len > 1 && s[len - 1] == '*') {
      if (add_params_with_prefix(P, s, len - 1, net) == 0)
        kiln_fe_error(P->d, "%s.params[%zu]: no float weight param starts with '%.*s'", path, i,
                      (int)(len - 1), s);
    } else if (s && weight_param(P->g, s) >= 0) {
      net->params[net->n_params++] = kiln_pool_strdup(&P->g->pool, s);
    } else {
      kiln_fe_error(P->d, "%s.params[%zu]: expected the name of a float weight param, got %s", path,
                    i, kiln_json_describe(e, got, sizeof got));
    }
  }
}

// `generator` / `discriminator`: {"params": [...], "optimizer": {...}}.
static void parse_adv_net(parser *P, json_object *adv, const char *key, kiln_adv_net *net) {
  static const char *const fields[] = {"params", "optimizer", NULL};
  char path[64], opath[80], got[96];
  snprintf(path, sizeof path, "training.adversarial.%s", key);
  json_object *v = field(adv, key);
  if (!v || !json_object_is_type(v, json_type_object)) {
    kiln_fe_error(P->d, "%s: expected an object {\"params\", \"optimizer\"}, got %s", path,
                  v ? kiln_json_describe(v, got, sizeof got) : "nothing");
    return;
  }
  check_fields(P, v, path, fields);
  parse_adv_params(P, field(v, "params"), path, net);
  snprintf(opath, sizeof opath, "%s.optimizer", path);
  if (!field(v, "optimizer"))
    kiln_fe_error(P->d, "%s: missing required field 'optimizer' (an object)", path);
  else
    parse_optimizer_object(P, field(v, "optimizer"), opath, &net->opt);
}

// A required tensor name of the model; `input`: a float model input.
static const char *adv_tensor(parser *P, json_object *adv, const char *key, bool input) {
  const char *path = "training.adversarial";
  const char *s = string(P, adv, path, key, true, input ? "a model input" : "a tensor name");
  int id = s ? kiln_graph_find_tensor(P->g, s) : -1;
  if (s && (id < 0 || (input && P->g->tensors[id].kind != KILN_TENSOR_INPUT) ||
            !kiln_dtype_is_float(P->g->tensors[id].dtype))) {
    kiln_fe_error(P->d, "%s.%s: '%s' is not a float %s of the model", path, key, s,
                  input ? "input" : "tensor");
    return NULL;
  }
  return s;
}

// A score D(.): shape (N) or (N, 1).
static void check_score(parser *P, const char *key, const char *name) {
  int id = name ? kiln_graph_find_tensor(P->g, name) : -1;
  const kiln_shape *s = id >= 0 ? &P->g->tensors[id].shape : NULL;
  if (s && !(s->rank == 1 || (s->rank == 2 && s->dim[1] == 1)))
    kiln_fe_error(P->d,
                  "training.adversarial.%s: '%s' must have shape (N) or (N, 1): one score "
                  "a sample",
                  key, name);
}

static void check_disjoint(parser *P, const kiln_adversarial *a) {
  for (int i = 0; i < a->g.n_params; i++)
    for (int j = 0; j < a->d.n_params; j++)
      if (strcmp(a->g.params[i], a->d.params[j]) == 0)
        kiln_fe_error(P->d,
                      "training.adversarial.discriminator.params: '%s' is also a generator "
                      "param",
                      a->d.params[j]);
}

bool kiln_adversarial_parse(json_object *adv, kiln_graph *g, kiln_training *t, kiln_diag *d) {
  static const char *const fields[] = {"kind",      "noise",         "fake",     "d_real", "d_fake",
                                       "generator", "discriminator", "n_critic", "clip",   NULL};
  static const char *const kinds[] = {"gan", "wgan"};
  parser P = {.d = d, .g = g};
  const char *path = "training.adversarial";
  kiln_adversarial *a = &t->adv;
  char got[96];
  int errors0 = d->errors;
  if (!json_object_is_type(adv, json_type_object)) {
    kiln_fe_error(d, "%s: expected an object, got %s", path,
                  kiln_json_describe(adv, got, sizeof got));
    return false;
  }
  check_fields(&P, adv, path, fields);
  a->present = true;
  const char *kind = string(&P, adv, path, "kind", true, "\"gan\" or \"wgan\"");
  int k = kind ? choice(&P, path, "kind", kind, kinds, 2) : 0;
  a->kind = k == 1 ? KILN_ADV_WGAN : KILN_ADV_GAN;
  a->noise = adv_tensor(&P, adv, "noise", true);
  a->fake = adv_tensor(&P, adv, "fake", false);
  a->d_real = adv_tensor(&P, adv, "d_real", false);
  a->d_fake = adv_tensor(&P, adv, "d_fake", false);
  check_score(&P, "d_real", a->d_real);
  check_score(&P, "d_fake", a->d_fake);
  parse_adv_net(&P, adv, "generator", &a->g);
  parse_adv_net(&P, adv, "discriminator", &a->d);
  check_disjoint(&P, a);
  a->n_critic = integer(&P, adv, path, "n_critic", a->kind == KILN_ADV_WGAN ? 5 : 1, 1);
  if (field(adv, "clip") && a->kind != KILN_ADV_WGAN)
    kiln_fe_error(d, "%s.clip: weight clipping is for \"kind\": \"wgan\"", path);
  a->clip = number(&P, adv, path, "clip", a->kind == KILN_ADV_WGAN ? 0.01 : 0, 0, true, INFINITY);
  if (g->n_inputs != 2)
    kiln_fe_error(d, "%s: the model must have two inputs, the noise and the data; it has %d", path,
                  g->n_inputs);
  return d->errors == errors0;
}

// With `adversarial`, the phases make the loss, the optimizer and the noise (adversarial.c).
static void check_adversarial_fields(parser *P, json_object *tr) {
  static const char *const not_with[] = {"loss", "optimizer", "noise", "frozen", "trainable", NULL};
  for (int i = 0; not_with[i]; i++)
    if (field(tr, not_with[i]))
      kiln_fe_error(P->d,
                    "training.%s: not with training.adversarial (each phase has its own: see "
                    "adversarial.generator / .discriminator)",
                    not_with[i]);
}

bool kiln_training_parse(json_object *tr, kiln_graph *g, kiln_training *out, kiln_diag *d) {
  static const char *const fields[] = {
      "batch_size",     "loss",      "optimizer", "lr_schedule", "regularization",
      "clip_grad_norm", "frozen",    "trainable", "seed",        "init",
      "augment",        "normalize", "noise",     "adversarial", NULL};
  memset(out, 0, sizeof(*out));
  if (!tr || json_object_object_length(tr) == 0) return true;
  int errors0 = d->errors;
  parser P = {.d = d, .g = g};
  out->present = true;
  check_fields(&P, tr, "training", fields);
  if (!field(tr, "batch_size"))
    kiln_fe_error(d, "training: missing required field 'batch_size' (an integer >= 1)");
  out->batch_size = integer(&P, tr, "training", "batch_size", 1, 1);
  if (field(tr, "adversarial")) {
    check_adversarial_fields(&P, tr);
    kiln_adversarial_parse(field(tr, "adversarial"), g, out, d);
  } else {
    parse_loss(&P, tr, out);
    parse_noise(&P, tr, out);
    parse_optimizer(&P, tr, out);
  }
  parse_schedule(&P, tr, out);
  parse_regularization(&P, tr, out);
  out->clip_grad_norm = number(&P, tr, "training", "clip_grad_norm", 0, 0, true, INFINITY);
  parse_names(&P, tr, out);
  parse_inits(&P, tr, out);
  out->seed = (uint64_t)integer(&P, tr, "training", "seed", 0, 0);
  char spec[4096] = "";
  parse_augment(&P, tr, spec, sizeof spec);
  parse_normalize(&P, tr, spec, sizeof spec);
  if (spec[0]) out->augment = kiln_pool_strdup(&g->pool, spec);
  return d->errors == errors0;
}

// The machinery RNN, LSTM and GRU share (recurrent.h): attributes (direction, hidden_size,
// activations with their alpha/beta, clip, layout), the shape checks of every input, the
// reference driver over directions, batch elements and time steps, and the loop-IR skeleton:
//
//   for dir, b:                         scratch holds the state vectors, (D, B, H) each
//     h = initial_h or 0 (c likewise)
//     for s < len[b]:  t = s, or len[b] - 1 - s running backwards
//       <the op's step: new h into scratch>
//       h = new h; Y[t][dir][b] = new h
//     Y[t][dir][b] = 0 for t >= len[b];  Y_h[dir][b] = h;  Y_c[dir][b] = c
//
// Every (dir, b) owns its slices of the state, and every store indexes them by dir and b, so the
// schedule pass may run directions or batch elements in parallel; the time loop stays sequential
// (the state stores do not depend on it).
#include "recurrent.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- Attributes ----

typedef struct act_name {
  const char *name;
  kiln_act_kind kind;
  bool alpha, beta;  // which of activation_alpha / activation_beta it takes
  double alpha0, beta0;
} act_name;

static const act_name act_names[] = {
    {"Sigmoid", KILN_ACT_SIGMOID, false, false, 0, 0},
    {"Tanh", KILN_ACT_TANH, false, false, 0, 0},
    {"Relu", KILN_ACT_RELU, false, false, 0, 0},
    {"HardSigmoid", KILN_ACT_HARD_SIGMOID, true, true, 0.2, 0.5},
    {"LeakyRelu", KILN_ACT_LEAKY_RELU, true, false, 0.01, 0},
};
enum { N_ACT_NAMES = sizeof act_names / sizeof act_names[0] };

static const act_name *find_act(const char *s, size_t len) {
  for (int i = 0; i < N_ACT_NAMES; i++)
    if (strlen(act_names[i].name) == len && strncasecmp(act_names[i].name, s, len) == 0)
      return &act_names[i];
  return NULL;
}

// Splits "Sigmoid, Tanh,Tanh" into activation descriptions; returns the count or -1 after
// reporting.
static int parse_act_list(const kiln_node *n, kiln_diag *d, const char *text, const act_name **out,
                          int max) {
  int count = 0;
  for (const char *p = text;;) {
    while (isspace((unsigned char)*p)) p++;
    size_t len = strcspn(p, ",");
    size_t trimmed = len;
    while (trimmed && isspace((unsigned char)p[trimmed - 1])) trimmed--;
    const act_name *a = find_act(p, trimmed);
    if (!a) {
      kiln_op_error(d, n,
                    "attrs.activations: unsupported activation '%.*s'; expected Sigmoid, Tanh, "
                    "Relu, HardSigmoid or LeakyRelu",
                    (int)trimmed, p);
      return -1;
    }
    if (count == max) {
      kiln_op_error(d, n, "attrs.activations: more than %d activations in \"%s\"", max, text);
      return -1;
    }
    out[count++] = a;
    if (!p[len]) return count;
    p += len + 1;
  }
}

// Gives each listed activation its alpha and beta: activation_alpha / activation_beta are
// consumed in order by the activations that take them (as onnxruntime reads them).
static bool assign_alpha_beta(const kiln_node *n, kiln_diag *d, const act_name **names, int count,
                              kiln_act *acts) {
  const kiln_attr *alpha = kiln_node_attr(n, "activation_alpha");
  const kiln_attr *beta = kiln_node_attr(n, "activation_beta");
  int na = 0, nb = 0;
  for (int i = 0; i < count; i++) {
    acts[i] = (kiln_act){names[i]->kind, names[i]->alpha0, names[i]->beta0};
    if (names[i]->alpha && alpha && na < alpha->count) acts[i].alpha = alpha->floats[na];
    if (names[i]->beta && beta && nb < beta->count) acts[i].beta = beta->floats[nb];
    na += names[i]->alpha;
    nb += names[i]->beta;
  }
  if (alpha && alpha->count != na) {
    kiln_op_error(d, n,
                  "attrs.activation_alpha: expected %d values (one per HardSigmoid or LeakyRelu "
                  "in attrs.activations), got %d",
                  na, alpha->count);
    return false;
  }
  if (beta && beta->count != nb) {
    kiln_op_error(d, n,
                  "attrs.activation_beta: expected %d values (one per HardSigmoid in "
                  "attrs.activations), got %d",
                  nb, beta->count);
    return false;
  }
  return true;
}

// activations: a string of comma-separated names, n_acts of them (used for both directions) or
// D * n_acts (forward's, then reverse's).
static bool read_activations(const kiln_node *n, kiln_diag *d, const kiln_rnn_spec *spec,
                             kiln_rnn *r) {
  const char *text = kiln_attr_string(n, "activations", NULL);
  if (!text && (kiln_node_attr(n, "activation_alpha") || kiln_node_attr(n, "activation_beta"))) {
    kiln_op_error(d, n,
                  "attrs.activation_alpha/activation_beta: given without attrs.activations; the "
                  "default activations (%s) take no alpha or beta",
                  spec->default_acts);
    return false;
  }
  const act_name *names[2 * KILN_RNN_MAX_ACTS];
  if (!text) text = spec->default_acts;
  int count = parse_act_list(n, d, text, names, 2 * spec->n_acts);
  if (count < 0) return false;
  if (count != spec->n_acts && count != r->D * spec->n_acts) {
    kiln_op_error(d, n, "attrs.activations: expected %d names%s, got %d in \"%s\"", spec->n_acts,
                  r->D == 2 ? " (or twice as many: forward's, then reverse's)" : "", count, text);
    return false;
  }
  kiln_act acts[2 * KILN_RNN_MAX_ACTS];
  if (!assign_alpha_beta(n, d, names, count, acts)) return false;
  for (int dir = 0; dir < 2; dir++)
    for (int k = 0; k < spec->n_acts; k++)
      r->acts[dir][k] = acts[count == spec->n_acts ? k : dir * spec->n_acts + k];
  return true;
}

static bool read_direction(const kiln_node *n, kiln_diag *d, kiln_rnn *r) {
  static const char *const names[] = {"forward", "reverse", "bidirectional"};
  const char *s = kiln_attr_string(n, "direction", "forward");
  for (int i = 0; i < 3; i++)
    if (strcmp(s, names[i]) == 0) {
      r->direction = i;
      r->D = i == KILN_RNN_BIDIRECTIONAL ? 2 : 1;
      return true;
    }
  kiln_op_error(d, n,
                "attrs.direction: expected \"forward\", \"reverse\" or \"bidirectional\", got "
                "\"%s\"",
                s);
  return false;
}

static bool read_clip(const kiln_node *n, kiln_diag *d, kiln_rnn *r) {
  r->has_clip = kiln_node_attr(n, "clip") != NULL;
  r->clip = kiln_attr_float(n, "clip", INFINITY);
  if (r->has_clip && !(r->clip > 0)) {
    kiln_op_error(d, n, "attrs.clip: expected a positive threshold, got %g", r->clip);
    return false;
  }
  return true;
}

bool kiln_rnn_resolve(const kiln_node *n, const kiln_rnn_spec *spec, const kiln_shape *x,
                      kiln_diag *d, kiln_rnn *r) {
  *r = (kiln_rnn){.T = x->dim[0], .B = x->dim[1], .I = x->dim[2], .G = spec->gates};
  int64_t layout, input_forget = 0;
  if (!kiln_op_read_int(n, d, "layout", 0, 0, 1, &layout)) return false;
  if (layout != 0) {
    kiln_op_error(d, n,
                  "attrs.layout: layout 1 (batch-major X and Y) is not supported; use 0 "
                  "(X: (seq_length, batch, input_size))");
    return false;
  }
  if (spec->has_cell && !kiln_op_read_int(n, d, "input_forget", 0, 0, 1, &input_forget))
    return false;
  if (input_forget) {
    kiln_op_error(d, n, "attrs.input_forget: 1 (coupled input and forget gates) is not supported");
    return false;
  }
  return kiln_op_read_int(n, d, "hidden_size", 0, 1, INT32_MAX, &r->H) && read_direction(n, d, r) &&
         read_clip(n, d, r) && read_activations(n, d, spec, r);
}

// ---- Shape inference ----

// Optional inputs present must have inputs[0]'s float dtype.
static bool check_dtype(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i) {
  const kiln_tensor *t = kiln_in(g, n, i), *x = kiln_in(g, n, 0);
  if (!t || t->dtype == x->dtype) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like inputs[0] (%s), got %s", i, t->name,
                kiln_dtype_name(x->dtype), x->name, kiln_dtype_name(t->dtype));
  return false;
}

static bool check_shape(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                        const char *what, const kiln_shape *want) {
  const kiln_tensor *t = kiln_in(g, n, i);
  if (!t || kiln_shape_equal(&t->shape, want)) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected shape %s, %s, got %s", i, t->name,
                kiln_shape_text(want).text, what, kiln_shape_text(&t->shape).text);
  return false;
}

// sequence_lens: a constant (B) of integers in [1, T].
static bool check_seq_lens(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                           const kiln_rnn *r) {
  const kiln_tensor *t = kiln_in(g, n, KILN_RNN_SEQ_LENS);
  if (!t) return true;
  const int i = KILN_RNN_SEQ_LENS;
  if (t->kind != KILN_TENSOR_PARAM) {
    kiln_op_error(d, n, "inputs[%d] (%s, sequence_lens): must be a param (a constant), not a %s", i,
                  t->name, t->kind == KILN_TENSOR_INPUT ? "model input" : "computed value");
    return false;
  }
  if (t->dtype != KILN_I32 && t->dtype != KILN_I64) {
    kiln_op_error(d, n, "inputs[%d] (%s, sequence_lens): expected dtype i32 or i64, got %s", i,
                  t->name, kiln_dtype_name(t->dtype));
    return false;
  }
  kiln_shape want = {.rank = 1, .dim = {r->B}};
  if (!check_shape(g, n, d, i, "sequence_lens (batch)", &want)) return false;
  for (int64_t b = 0; b < r->B; b++) {
    double len = kiln_tensor_get(t, b);
    if (len < 1 || len > (double)r->T) {
      kiln_op_error(d, n,
                    "inputs[%d] (%s, sequence_lens): element %lld is %lld; expected 1 to %lld "
                    "(seq_length)",
                    i, t->name, (long long)b, (long long)len, (long long)r->T);
      return false;
    }
  }
  return true;
}

static bool check_weights(const kiln_graph *g, const kiln_node *n, kiln_diag *d, const kiln_rnn *r,
                          const kiln_rnn_spec *spec) {
  int64_t D = r->D, GH = r->G * r->H;
  kiln_shape w = {3, {D, GH, r->I}}, rr = {3, {D, GH, r->H}}, bias = {2, {D, 2 * GH}};
  kiln_shape state = {3, {D, r->B, r->H}}, p = {2, {D, 3 * r->H}};
  char w_what[96], r_what[96], b_what[96];
  snprintf(w_what, sizeof w_what, "W (directions, %d * hidden_size, input_size)", (int)r->G);
  snprintf(r_what, sizeof r_what, "R (directions, %d * hidden_size, hidden_size)", (int)r->G);
  snprintf(b_what, sizeof b_what, "B (directions, %d * hidden_size)", 2 * (int)r->G);
  bool ok = check_shape(g, n, d, KILN_RNN_W, w_what, &w) &&
            check_shape(g, n, d, KILN_RNN_R, r_what, &rr) &&
            check_shape(g, n, d, KILN_RNN_B, b_what, &bias) &&
            check_shape(g, n, d, KILN_RNN_INITIAL_H, "initial_h (directions, batch, hidden_size)",
                        &state);
  if (ok && spec->has_cell)
    ok = check_shape(g, n, d, KILN_RNN_INITIAL_C, "initial_c (directions, batch, hidden_size)",
                     &state) &&
         check_shape(g, n, d, KILN_RNN_P, "P (directions, 3 * hidden_size)", &p);
  return ok;
}

bool kiln_rnn_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, const kiln_rnn_spec *spec) {
  if (!kiln_op_check_float_inputs(g, n, 3, d)) return false;
  for (int i = KILN_RNN_B; i < n->n_inputs; i++)
    if (i != KILN_RNN_SEQ_LENS && !check_dtype(g, n, d, i)) return false;
  const kiln_tensor *x = kiln_in(g, n, KILN_RNN_X);
  if (x->shape.rank != 3) {
    kiln_op_error(d, n,
                  "inputs[0] (%s): expected X of shape (seq_length, batch, input_size), got %s",
                  x->name, kiln_shape_text(&x->shape).text);
    return false;
  }
  kiln_rnn r;
  if (!kiln_rnn_resolve(n, spec, &x->shape, d, &r) || !check_weights(g, n, d, &r, spec) ||
      !check_seq_lens(g, n, d, &r))
    return false;
  kiln_shape y = {4, {r.T, r.D, r.B, r.H}}, state = {3, {r.D, r.B, r.H}};
  for (int i = 0; i < n->n_outputs; i++)  // Y, Y_h[, Y_c]
    kiln_op_set_output(g, n, i, x->dtype, i == KILN_RNN_Y ? &y : &state);
  return true;
}

int64_t kiln_rnn_flops(const kiln_graph *g, const kiln_node *n, const kiln_rnn_spec *spec) {
  kiln_rnn r;
  if (!kiln_rnn_resolve(n, spec, &kiln_in(g, n, KILN_RNN_X)->shape, NULL, &r)) return 0;
  int64_t per_step = 2 * r.G * r.H * (r.I + r.H) + 4 * r.G * r.H;
  return r.D * r.B * r.T * per_step;
}

// ---- Reference ----

double kiln_act_eval(const kiln_act *a, double x) {
  switch (a->kind) {
    case KILN_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case KILN_ACT_TANH: return tanh(x);
    case KILN_ACT_RELU: return x > 0 ? x : 0;
    case KILN_ACT_HARD_SIGMOID: return fmax(0, fmin(1, a->alpha * x + a->beta));
    case KILN_ACT_LEAKY_RELU: return x >= 0 ? x : a->alpha * x;
  }
  return x;
}

double kiln_rnn_clip(const kiln_rnn *r, double x) {
  return r->has_clip ? fmin(fmax(x, -r->clip), r->clip) : x;
}

double kiln_rnn_dot_x(const kiln_rnn_step *s, int g, int64_t j) {
  const double *w = s->W + (g * s->r->H + j) * s->r->I;
  double sum = 0;
  for (int64_t k = 0; k < s->r->I; k++) sum += w[k] * s->x[k];
  return sum;
}

double kiln_rnn_dot_h(const kiln_rnn_step *s, int g, int64_t j, const double *h) {
  const double *w = s->R + (g * s->r->H + j) * s->r->H;
  double sum = 0;
  for (int64_t k = 0; k < s->r->H; k++) sum += w[k] * h[k];
  return sum;
}

static bool runs_backward(const kiln_rnn *r, int64_t dir) {
  return r->direction == KILN_RNN_REVERSE || (r->direction == KILN_RNN_BIDIRECTIONAL && dir == 1);
}

// Input i's data at flat offset `at`, or `zeros` when the input is absent.
static const double *input_or(const kiln_node *n, const kiln_eval_tensor *in, int i, int64_t at,
                              const double *zeros) {
  return kiln_has_input(n, i) ? in[i].data + at : zeros;
}

// One direction of one batch element: the whole sequence.
typedef struct eval_seq {
  const kiln_node *n;
  const kiln_rnn_spec *spec;
  const kiln_eval_tensor *in;
  kiln_eval_tensor *out;
  kiln_rnn_step step;
  double *h, *c, *zeros;
} eval_seq;

static void eval_sequence(eval_seq *e, int64_t dir, int64_t b, kiln_rnn_step_eval step) {
  const kiln_rnn *r = e->step.r;
  int64_t H = r->H, state_at = (dir * r->B + b) * H;
  int64_t len =
      kiln_has_input(e->n, KILN_RNN_SEQ_LENS) ? (int64_t)e->in[KILN_RNN_SEQ_LENS].data[b] : r->T;
  memcpy(e->h, input_or(e->n, e->in, KILN_RNN_INITIAL_H, state_at, e->zeros), sizeof(double) * H);
  if (e->spec->has_cell)
    memcpy(e->c, input_or(e->n, e->in, KILN_RNN_INITIAL_C, state_at, e->zeros), sizeof(double) * H);
  double *y = e->n->n_outputs > KILN_RNN_Y ? e->out[KILN_RNN_Y].data : NULL;
  for (int64_t s = 0; s < len; s++) {
    int64_t t = runs_backward(r, dir) ? len - 1 - s : s;
    e->step.x = e->in[KILN_RNN_X].data + (t * r->B + b) * r->I;
    step(e->n, &e->step);
    memcpy(e->h, e->step.h_new, sizeof(double) * H);
    if (y) memcpy(y + ((t * r->D + dir) * r->B + b) * H, e->h, sizeof(double) * H);
  }
  for (int64_t t = len; y && t < r->T; t++)  // past the sequence's end
    memset(y + ((t * r->D + dir) * r->B + b) * H, 0, sizeof(double) * H);
  if (e->n->n_outputs > KILN_RNN_Y_H)
    memcpy(e->out[KILN_RNN_Y_H].data + state_at, e->h, sizeof(double) * H);
  if (e->n->n_outputs > KILN_RNN_Y_C)
    memcpy(e->out[KILN_RNN_Y_C].data + state_at, e->c, sizeof(double) * H);
}

void kiln_rnn_eval(const kiln_node *n, const kiln_rnn_spec *spec, const kiln_eval_tensor *in,
                   kiln_eval_tensor *out, kiln_rnn_step_eval step) {
  kiln_rnn r;
  if (!kiln_rnn_resolve(n, spec, in[KILN_RNN_X].shape, NULL, &r)) return;
  int64_t H = r.H, GH = r.G * H;
  // zeros stand in for an absent B (2 * G * H), P (3 * H) or initial state (H)
  double *zeros = kiln_xcalloc((size_t)(2 * GH + 3 * H), sizeof(double));
  double *h_new = kiln_xcalloc((size_t)H, sizeof(double));
  eval_seq e = {.n = n, .spec = spec, .in = in, .out = out, .zeros = zeros};
  e.h = kiln_xcalloc((size_t)H, sizeof(double));
  e.c = kiln_xcalloc((size_t)H, sizeof(double));
  for (int64_t dir = 0; dir < r.D; dir++) {
    const double *bias = input_or(n, in, KILN_RNN_B, dir * 2 * GH, zeros);
    e.step = (kiln_rnn_step){
        .r = &r,
        .acts = r.acts[dir],
        .W = in[KILN_RNN_W].data + dir * GH * r.I,
        .R = in[KILN_RNN_R].data + dir * GH * H,
        .Wb = bias,
        .Rb = bias + GH,
        .P = spec->has_cell ? input_or(n, in, KILN_RNN_P, dir * 3 * H, zeros) : zeros,
        .h = e.h,
        .c = e.c,
        .h_new = h_new,
    };
    for (int64_t b = 0; b < r.B; b++) eval_sequence(&e, dir, b, step);
  }
  free(zeros);
  free(h_new);
  free(e.h);
  free(e.c);
}

// ---- Lowering ----

kiln_lexpr *kiln_rnn_state_index(const kiln_rnn_lowering *L, int region, kiln_lexpr *j) {
  kiln_lb *b = L->b;
  kiln_lexpr *plane = lx_madd(b, lx_int(b, region), L->r.D, lx_var(b, L->dir));
  return lx_madd(b, lx_madd(b, plane, L->r.B, lx_var(b, L->batch)), L->r.H, j);
}

static kiln_lexpr *state_load(const kiln_rnn_lowering *L, int region, int j) {
  return lx_load(L->b, L->scratch, kiln_rnn_state_index(L, region, lx_var(L->b, j)));
}

// Flat index of (dir, batch, j) in a (D, B, H) tensor.
static kiln_lexpr *dbh_index(const kiln_rnn_lowering *L, int j) {
  kiln_lb *b = L->b;
  kiln_lexpr *db = lx_madd(b, lx_var(b, L->dir), L->r.B, lx_var(b, L->batch));
  return lx_madd(b, db, L->r.H, lx_var(b, j));
}

// Row g*H + j of this direction's (G*H, cols) matrix, element k.
static kiln_lexpr *weight_index(const kiln_rnn_lowering *L, int g, int j, int k, int64_t cols) {
  kiln_lb *b = L->b;
  kiln_lexpr *mat = lx_madd(b, lx_var(b, L->dir), L->r.G, lx_int(b, g));
  return lx_madd(b, lx_madd(b, mat, L->r.H, lx_var(b, j)), cols, lx_var(b, k));
}

// B[dir][which * G*H + g*H + j]: which 0 is Wb, 1 Rb.
static kiln_lexpr *bias_load(const kiln_rnn_lowering *L, int which, int g, int j) {
  kiln_lb *b = L->b;
  int64_t GH = L->r.G * L->r.H;
  kiln_lexpr *at = lx_madd(b, lx_var(b, L->dir), 2 * GH, lx_int(b, which * GH + g * L->r.H));
  return lx_load(b, kiln_in_buf(L->c, KILN_RNN_B), lx_add(b, at, lx_var(b, j)));
}

// acc += sum_k M[dir][g*H + j][k] * v[k] for the input (v = X[t][b]) or a state region.
static void lower_dot(const kiln_rnn_lowering *L, int acc, int g, int j, int h_region) {
  kiln_lb *b = L->b;
  bool input = h_region < 0;
  int64_t cols = input ? L->r.I : L->r.H;
  int k = kiln_lb_for_n(b, "k", cols);
  kiln_lexpr *w = lx_load(b, kiln_in_buf(L->c, input ? KILN_RNN_W : KILN_RNN_R),
                          weight_index(L, g, j, k, cols));
  kiln_lexpr *v;
  if (input) {
    kiln_lexpr *row = lx_madd(b, lx_var(b, L->time), L->r.B, lx_var(b, L->batch));
    v = lx_load(b, kiln_in_buf(L->c, KILN_RNN_X), lx_madd(b, row, L->r.I, lx_var(b, k)));
  } else {
    v = lx_load(b, L->scratch, kiln_rnn_state_index(L, h_region, lx_var(b, k)));
  }
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), lx_bin(b, LB_MUL, w, v)));
  kiln_lb_end_for(b);
}

int kiln_rnn_lower_gate(const kiln_rnn_lowering *L, const char *name, int g, int j,
                        kiln_gate_terms terms) {
  kiln_lb *b = L->b;
  bool has_b = kiln_has_input(L->c->node, KILN_RNN_B);
  kiln_lexpr *init = lx_float(b, L->t, 0);
  if (has_b && terms.wb) init = bias_load(L, 0, g, j);
  if (has_b && terms.rb)
    init = terms.wb ? lx_bin(b, LB_ADD, init, bias_load(L, 1, g, j)) : bias_load(L, 1, g, j);
  int acc = kiln_lb_decl(b, name, L->t, init);
  if (terms.x) lower_dot(L, acc, g, j, -1);
  if (terms.h_region >= 0) lower_dot(L, acc, g, j, terms.h_region);
  return acc;
}

void kiln_rnn_lower_clip(const kiln_rnn_lowering *L, int var) {
  if (!L->r.has_clip) return;
  kiln_lb *b = L->b;
  kiln_lexpr *lo = lx_bin(b, LB_MAX, lx_var(b, var), lx_float(b, L->t, -L->r.clip));
  kiln_lb_assign(b, var, lx_bin(b, LB_MIN, lo, lx_float(b, L->t, L->r.clip)));
}

static kiln_lexpr *act_lx(kiln_lb *b, kiln_dtype t, const kiln_act *a, int var) {
  switch (a->kind) {
    case KILN_ACT_SIGMOID: return lx_unary(b, LU_SIGMOID, lx_var(b, var));
    case KILN_ACT_TANH: return lx_unary(b, LU_TANH, lx_var(b, var));
    case KILN_ACT_RELU: return lx_bin(b, LB_MAX, lx_var(b, var), lx_float(b, t, 0));
    case KILN_ACT_HARD_SIGMOID: {
      kiln_lexpr *lin =
          lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, lx_float(b, t, a->alpha), lx_var(b, var)),
                 lx_float(b, t, a->beta));
      kiln_lexpr *hi = lx_bin(b, LB_MIN, lin, lx_float(b, t, 1));
      return lx_bin(b, LB_MAX, hi, lx_float(b, t, 0));
    }
    case KILN_ACT_LEAKY_RELU: {
      kiln_lexpr *neg = lx_bin(b, LB_LT, lx_var(b, var), lx_float(b, t, 0));
      kiln_lexpr *scaled = lx_bin(b, LB_MUL, lx_float(b, t, a->alpha), lx_var(b, var));
      return lx_select(b, neg, scaled, lx_var(b, var));
    }
  }
  return lx_var(b, var);
}

static bool same_act(const kiln_act *a, const kiln_act *b) {
  return a->kind == b->kind && a->alpha == b->alpha && a->beta == b->beta;
}

kiln_lexpr *kiln_rnn_lower_act(const kiln_rnn_lowering *L, int k, int var) {
  kiln_lb *b = L->b;
  const kiln_act *fwd = &L->r.acts[0][k], *rev = &L->r.acts[1][k];
  if (L->r.D == 1 || same_act(fwd, rev)) return act_lx(b, L->t, fwd, var);
  kiln_lexpr *is_fwd = lx_bin(b, LB_EQ, lx_var(b, L->dir), lx_int(b, 0));
  return lx_select(b, is_fwd, act_lx(b, L->t, fwd, var), act_lx(b, L->t, rev, var));
}

kiln_lexpr *kiln_rnn_lower_peephole(const kiln_rnn_lowering *L, int p, int j) {
  if (!kiln_has_input(L->c->node, KILN_RNN_P)) return NULL;
  kiln_lb *b = L->b;
  kiln_lexpr *at = lx_madd(b, lx_var(b, L->dir), 3 * L->r.H, lx_int(b, p * L->r.H));
  return lx_load(b, kiln_in_buf(L->c, KILN_RNN_P), lx_add(b, at, lx_var(b, j)));
}

// True when sequence_lens is absent or every length is T: the time loops have constant bounds.
static bool full_lengths(const kiln_lower_ctx *c, int64_t T) {
  const kiln_tensor *lens = kiln_in(c->g, c->node, KILN_RNN_SEQ_LENS);
  for (int64_t b = 0; lens && b < kiln_shape_numel(&lens->shape); b++)
    if (kiln_tensor_get(lens, b) != (double)T) return false;
  return true;
}

// state[region][dir][b][:] = initial (input i) or 0.
static void lower_init_state(const kiln_rnn_lowering *L, int region, int input) {
  kiln_lb *b = L->b;
  int j = kiln_lb_for_n(b, "j", L->r.H);
  kiln_lexpr *v = kiln_has_input(L->c->node, input)
                      ? lx_load(b, kiln_in_buf(L->c, input), dbh_index(L, j))
                      : lx_float(b, L->t, 0);
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, region, lx_var(b, j)), v);
  kiln_lb_end_for(b);
}

static kiln_lexpr *y_index(const kiln_rnn_lowering *L, kiln_lexpr *t, int j) {
  kiln_lb *b = L->b;
  kiln_lexpr *td = lx_madd(b, t, L->r.D, lx_var(b, L->dir));
  return lx_madd(b, lx_madd(b, td, L->r.B, lx_var(b, L->batch)), L->r.H, lx_var(b, j));
}

// h = new h; Y[t][dir][b][:] = new h.
static void lower_commit(const kiln_rnn_lowering *L) {
  kiln_lb *b = L->b;
  int j = kiln_lb_for_n(b, "j", L->r.H);
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_H, lx_var(b, j)),
                state_load(L, KILN_RNN_STATE_NEW, j));
  if (L->c->node->n_outputs > KILN_RNN_Y)
    kiln_lb_store(b, kiln_out_buf(L->c, KILN_RNN_Y), y_index(L, lx_var(b, L->time), j),
                  state_load(L, KILN_RNN_STATE_NEW, j));
  kiln_lb_end_for(b);
}

// out[dir][b][:] = state[region][dir][b][:].
static void lower_final_state(const kiln_rnn_lowering *L, int output, int region) {
  if (L->c->node->n_outputs <= output) return;
  kiln_lb *b = L->b;
  int j = kiln_lb_for_n(b, "j", L->r.H);
  kiln_lb_store(b, kiln_out_buf(L->c, output), dbh_index(L, j), state_load(L, region, j));
  kiln_lb_end_for(b);
}

// The length of batch element b's sequence: a constant T, or the local `len` (var >= 0).
static kiln_lexpr *len_expr(const kiln_rnn_lowering *L, int len_var) {
  return len_var >= 0 ? lx_var(L->b, len_var) : lx_int(L->b, L->r.T);
}

// t = s forward, len - 1 - s backward; bidirectional picks by direction.
static kiln_lexpr *time_expr(const kiln_rnn_lowering *L, int s, int len_var) {
  kiln_lb *b = L->b;
  kiln_lexpr *back =
      lx_bin(b, LB_SUB, lx_add(b, len_expr(L, len_var), lx_int(b, -1)), lx_var(b, s));
  if (L->r.direction == KILN_RNN_REVERSE) return back;
  if (L->r.direction == KILN_RNN_FORWARD) return lx_var(b, s);
  return lx_select(b, lx_bin(b, LB_EQ, lx_var(b, L->dir), lx_int(b, 0)), lx_var(b, s), back);
}

static void lower_sequence(kiln_rnn_lowering *L, const kiln_rnn_spec *spec,
                           kiln_rnn_step_lower step) {
  kiln_lb *b = L->b;
  const kiln_lower_ctx *c = L->c;
  lower_init_state(L, KILN_RNN_STATE_H, KILN_RNN_INITIAL_H);
  if (spec->has_cell) lower_init_state(L, KILN_RNN_STATE_AUX, KILN_RNN_INITIAL_C);
  int len = -1;
  if (!full_lengths(c, L->r.T)) {
    kiln_lexpr *at = lx_load(b, kiln_in_buf(c, KILN_RNN_SEQ_LENS), lx_var(b, L->batch));
    len = kiln_lb_decl(b, "len", KILN_I64, lx_cast(b, KILN_I64, at));
  }
  int s = kiln_lb_for(b, "s", lx_int(b, 0), len_expr(L, len));
  L->time = kiln_lb_decl(b, "t", KILN_I64, time_expr(L, s, len));
  step(L);
  lower_commit(L);
  kiln_lb_end_for(b);
  if (len >= 0 && c->node->n_outputs > KILN_RNN_Y) {  // zeros past the sequence's end
    int t = kiln_lb_for(b, "t", len_expr(L, len), lx_int(b, L->r.T));
    int j = kiln_lb_for_n(b, "j", L->r.H);
    kiln_lb_store(b, kiln_out_buf(c, KILN_RNN_Y), y_index(L, lx_var(b, t), j),
                  lx_float(b, L->t, 0));
    kiln_lb_end_for(b);
    kiln_lb_end_for(b);
  }
  lower_final_state(L, KILN_RNN_Y_H, KILN_RNN_STATE_H);
  if (spec->has_cell) lower_final_state(L, KILN_RNN_Y_C, KILN_RNN_STATE_AUX);
}

void kiln_rnn_lower(const kiln_lower_ctx *c, const kiln_rnn_spec *spec, kiln_rnn_step_lower step) {
  const kiln_tensor *x = kiln_lower_in(c, KILN_RNN_X);
  kiln_rnn_lowering L = {.c = c, .b = c->b, .t = x->dtype};
  kiln_rnn_resolve(c->node, spec, &x->shape, NULL, &L.r);
  static const char *const dirs[] = {"forward", "reverse", "bidirectional"};
  kiln_lb_comment(c->b, "%s %s: %s, hidden %lld, %s -> %s", spec->op, c->node->name,
                  kiln_describe(x).text, (long long)L.r.H, dirs[L.r.direction],
                  kiln_describe(kiln_lower_out(c, 0)).text);
  // scratch: (regions, D, B, H) state vectors; each (dir, b) owns its own slices
  L.scratch = kiln_lower_scratch(c, L.t, spec->scratch_regions * L.r.D * L.r.B * L.r.H);
  L.dir = kiln_lb_for_n(c->b, "dir", L.r.D);
  L.batch = kiln_lb_for_n(c->b, "b", L.r.B);
  lower_sequence(&L, spec, step);
  kiln_lb_end_for(c->b);
  kiln_lb_end_for(c->b);
}

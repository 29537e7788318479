// The gradient rule of RNN, LSTM and GRU (docs/training.md): backpropagation through time by
// recomputation. The rule rebuilds the node's forward pass from graph ops unrolled over the time
// steps (Slice, MatMul, Transpose, Add, Mul, Sub, the activations, Clip, Concat), seeds that
// copy's outputs with the node's output gradients and differentiates it with the ops' own rules
// (kiln_gb_differentiate). Per direction d, time step t (backwards for reverse):
//   pre = X[t] W_d^T + H R_d^T + Wb_d + Rb_d            (B, G*H), then split into the gates
// and the op's gate equations (lstm.c, gru.c, rnn.c). Y stacks the H of every step (T, D, B, H);
// Y_h / Y_c are the last states. Not differentiable (an error naming the node): sequence_lens.
#include <stdlib.h>

#include "../../autodiff/builder.h"
#include "recurrent.h"

typedef struct unroll {
  kiln_grad_ctx *c;
  const kiln_rnn_spec *spec;
  kiln_rnn r;
  kiln_dtype t;
  int dir;  // the direction being built
} unroll;

static int input_of(const kiln_grad_ctx *c, int i) {
  return i < c->node.n_inputs ? c->node.inputs[i] : -1;
}

// x[d] with the leading (D) axis dropped.
static int direction_part(unroll *u, int x) {
  if (x < 0) return -1;
  kiln_shape s = u->c->g->tensors[x].shape;
  int part = kiln_gb_slice(u->c, x, 0, u->dir, u->dir + 1);
  kiln_shape rest = {.rank = s.rank - 1};
  for (int i = 1; i < s.rank; i++) rest.dim[i - 1] = s.dim[i];
  return part < 0 ? -1 : kiln_gb_reshape(u->c, part, &rest);
}

static int transposed(unroll *u, int m) {
  static const int64_t perm[2] = {1, 0};
  kiln_gb_attr attrs[] = {KILN_GB_INTS("perm", perm, 2), KILN_GB_END};
  return m < 0 ? -1 : kiln_gb_op(u->c, "Transpose", &m, 1, attrs, 1);
}

// Gate g's block of H along `axis`.
static int gate(unroll *u, int x, int axis, int g) {
  return x < 0 ? -1 : kiln_gb_slice(u->c, x, axis, g * u->r.H, (g + 1) * u->r.H);
}

static int binary(unroll *u, const char *op, int a, int b) {
  return a < 0 || b < 0 ? -1 : kiln_gb_binary(u->c, op, a, b);
}

// Activation k (f, g, h) of this direction applied to the clipped v (clip only for f and g).
static int activation(unroll *u, int k, int v, bool clip) {
  if (v < 0) return -1;
  kiln_grad_ctx *c = u->c;
  if (clip && u->r.has_clip) {
    kiln_gb_attr a[] = {KILN_GB_FLOAT("min", -u->r.clip), KILN_GB_FLOAT("max", u->r.clip),
                        KILN_GB_END};
    if ((v = kiln_gb_op(c, "Clip", &v, 1, a, 1)) < 0) return -1;
  }
  const kiln_act *act = &u->r.acts[u->dir][k];
  switch (act->kind) {
    case KILN_ACT_SIGMOID: return kiln_gb_unary(c, "Sigmoid", v);
    case KILN_ACT_TANH: return kiln_gb_unary(c, "Tanh", v);
    case KILN_ACT_RELU: return kiln_gb_unary(c, "Relu", v);
    case KILN_ACT_LEAKY_RELU: {
      kiln_gb_attr a[] = {KILN_GB_FLOAT("alpha", act->alpha), KILN_GB_END};
      return kiln_gb_op(c, "LeakyRelu", &v, 1, a, 1);
    }
    default: {
      kiln_gb_attr a[] = {KILN_GB_FLOAT("alpha", act->alpha), KILN_GB_FLOAT("beta", act->beta),
                          KILN_GB_END};
      return kiln_gb_op(c, "HardSigmoid", &v, 1, a, 1);
    }
  }
}

// The initial state of this direction (B, H), zeros when the input is absent.
static int initial_state(unroll *u, int input) {
  if (input >= 0) return direction_part(u, input);
  kiln_shape s = {.rank = 2, .dim = {u->r.B, u->r.H}};
  return kiln_gb_const(u->c, u->t, &s, NULL);
}

// Per direction: W_d^T, R_d^T, the summed biases, P_d.
typedef struct dir_weights {
  int xw;       // X W_d^T: (T, B, G*H)
  int rt;       // R_d^T: (H, G*H)
  int wb, rb;   // (G*H) each, or -1 without B
  int p;        // (3H) or -1
  int h, cell;  // the running state (B, H)
} dir_weights;

static bool direction_weights(unroll *u, dir_weights *w) {
  kiln_grad_ctx *c = u->c;
  int64_t GH = u->r.G * u->r.H;
  w->xw = binary(u, "MatMul", input_of(c, KILN_RNN_X),
                 transposed(u, direction_part(u, input_of(c, KILN_RNN_W))));
  w->rt = transposed(u, direction_part(u, input_of(c, KILN_RNN_R)));
  int bias = direction_part(u, input_of(c, KILN_RNN_B));
  w->wb = bias < 0 ? -1 : kiln_gb_slice(c, bias, 0, 0, GH);
  w->rb = bias < 0 ? -1 : kiln_gb_slice(c, bias, 0, GH, 2 * GH);
  w->p = u->spec->has_cell ? direction_part(u, input_of(c, KILN_RNN_P)) : -1;
  w->h = initial_state(u, input_of(c, KILN_RNN_INITIAL_H));
  w->cell = u->spec->has_cell ? initial_state(u, input_of(c, KILN_RNN_INITIAL_C)) : -1;
  return w->xw >= 0 && w->rt >= 0 && w->h >= 0 && (!u->spec->has_cell || w->cell >= 0);
}

// X[t] W^T for step t: (B, G*H).
static int input_term(unroll *u, const dir_weights *w, int64_t t) {
  kiln_shape s = {.rank = 2, .dim = {u->r.B, u->r.G * u->r.H}};
  int x = kiln_gb_slice(u->c, w->xw, 0, t, t + 1);
  return x < 0 ? -1 : kiln_gb_reshape(u->c, x, &s);
}

static int with_bias(unroll *u, int v, const dir_weights *w) {
  if (w->wb < 0 || v < 0) return v;
  return binary(u, "Add", v, binary(u, "Add", w->wb, w->rb));
}

// + P[p] * cell when the node has peepholes.
static int peephole(unroll *u, const dir_weights *w, int pre, int p, int cell) {
  if (w->p < 0 || pre < 0) return pre;
  return binary(u, "Add", pre, binary(u, "Mul", gate(u, w->p, 0, p), cell));
}

enum { LSTM_I, LSTM_O, LSTM_F, LSTM_C };

static bool lstm_step(unroll *u, dir_weights *w, int64_t t) {
  int pre =
      with_bias(u, binary(u, "Add", input_term(u, w, t), binary(u, "MatMul", w->h, w->rt)), w);
  int i = activation(u, 0, peephole(u, w, gate(u, pre, 1, LSTM_I), 0, w->cell), true);
  int f = activation(u, 0, peephole(u, w, gate(u, pre, 1, LSTM_F), 2, w->cell), true);
  int g = activation(u, 1, gate(u, pre, 1, LSTM_C), true);
  w->cell = binary(u, "Add", binary(u, "Mul", f, w->cell), binary(u, "Mul", i, g));
  int o = activation(u, 0, peephole(u, w, gate(u, pre, 1, LSTM_O), 1, w->cell), true);
  w->h = binary(u, "Mul", o, activation(u, 2, w->cell, false));
  return w->h >= 0;
}

static bool rnn_step(unroll *u, dir_weights *w, int64_t t) {
  int pre =
      with_bias(u, binary(u, "Add", input_term(u, w, t), binary(u, "MatMul", w->h, w->rt)), w);
  w->h = activation(u, 0, pre, true);
  return w->h >= 0;
}

enum { GRU_Z, GRU_R, GRU_H };

// Gate g's bias Wb_g (+ Rb_g when both), or -1 without B.
static int gate_bias(unroll *u, const dir_weights *w, int g, bool both) {
  if (w->wb < 0) return -1;
  int b = gate(u, w->wb, 0, g);
  return both ? binary(u, "Add", b, gate(u, w->rb, 0, g)) : b;
}

static int plus_opt(unroll *u, int a, int b) { return b < 0 ? a : binary(u, "Add", a, b); }

static bool gru_step(unroll *u, dir_weights *w, int64_t t) {
  int x = input_term(u, w, t), hr = binary(u, "MatMul", w->h, w->rt);
  int z = activation(u, 0,
                     plus_opt(u, binary(u, "Add", gate(u, x, 1, GRU_Z), gate(u, hr, 1, GRU_Z)),
                              gate_bias(u, w, GRU_Z, true)),
                     true);
  int r = activation(u, 0,
                     plus_opt(u, binary(u, "Add", gate(u, x, 1, GRU_R), gate(u, hr, 1, GRU_R)),
                              gate_bias(u, w, GRU_R, true)),
                     true);
  int rec;  // the recurrent term of h~
  if (kiln_attr_int(&u->c->node, "linear_before_reset", 0)) {
    int rb = w->rb < 0 ? -1 : gate(u, w->rb, 0, GRU_H);
    rec = binary(u, "Mul", r, plus_opt(u, gate(u, hr, 1, GRU_H), rb));
  } else {
    int rh_t = gate(u, w->rt, 1, GRU_H);  // R_h^T: (H, H)
    int rb = w->rb < 0 ? -1 : gate(u, w->rb, 0, GRU_H);
    rec = plus_opt(u, binary(u, "MatMul", binary(u, "Mul", r, w->h), rh_t), rb);
  }
  int wb = w->wb < 0 ? -1 : gate(u, w->wb, 0, GRU_H);
  int cand = activation(u, 1, plus_opt(u, binary(u, "Add", gate(u, x, 1, GRU_H), rec), wb), true);
  // H' = h~ + z * (H - h~)
  w->h = binary(u, "Add", cand, binary(u, "Mul", z, binary(u, "Sub", w->h, cand)));
  return w->h >= 0;
}

// Concat of parts[0..n) along axis, in groups (the autodiff handles nodes of <= 16 inputs).
static int concat(unroll *u, const int *parts, int n, int64_t axis) {
  if (n == 1) return parts[0];
  kiln_gb_attr a[] = {KILN_GB_INT("axis", axis), KILN_GB_END};
  if (n <= 8) return kiln_gb_op(u->c, "Concat", parts, n, a, 1);
  int halves[2] = {concat(u, parts, n / 2, axis), concat(u, parts + n / 2, n - n / 2, axis)};
  return halves[0] < 0 || halves[1] < 0 ? -1 : kiln_gb_op(u->c, "Concat", halves, 2, a, 1);
}

static int with_leading_ones(unroll *u, int x, int ones) {
  kiln_shape s = {.rank = 2 + ones};
  for (int i = 0; i < ones; i++) s.dim[i] = 1;
  s.dim[ones] = u->r.B, s.dim[ones + 1] = u->r.H;
  return x < 0 ? -1 : kiln_gb_reshape(u->c, x, &s);
}

// The unrolled outputs Y (T, D, B, H), Y_h and Y_c (D, B, H).
typedef struct unrolled {
  int y, y_h, y_c;
} unrolled;

static bool build_direction(unroll *u, int *ys, int *hs, int *cs) {
  dir_weights w;
  if (!direction_weights(u, &w)) return false;
  bool reverse = u->r.direction == KILN_RNN_REVERSE || u->dir == 1;
  for (int64_t s = 0; s < u->r.T; s++) {
    int64_t t = reverse ? u->r.T - 1 - s : s;
    bool ok = u->spec->gates == 4   ? lstm_step(u, &w, t)
              : u->spec->gates == 3 ? gru_step(u, &w, t)
                                    : rnn_step(u, &w, t);
    if (!ok || (ys[t] = with_leading_ones(u, w.h, 2)) < 0) return false;
  }
  *hs = with_leading_ones(u, w.h, 1);
  *cs = u->spec->has_cell ? with_leading_ones(u, w.cell, 1) : -1;
  return *hs >= 0;
}

static bool build_unrolled(unroll *u, unrolled *out) {
  int64_t T = u->r.T;
  int *ys = kiln_xcalloc((size_t)T + 1, sizeof(int)), y_dir[2], h_dir[2], c_dir[2];
  bool ok = true;
  for (u->dir = 0; u->dir < u->r.D && ok; u->dir++) {
    ok = build_direction(u, ys, &h_dir[u->dir], &c_dir[u->dir]);
    if (ok) ok = (y_dir[u->dir] = concat(u, ys, (int)T, 0)) >= 0;
  }
  free(ys);
  if (!ok) return false;
  out->y = concat(u, y_dir, (int)u->r.D, 1);
  out->y_h = concat(u, h_dir, (int)u->r.D, 0);
  out->y_c = u->spec->has_cell ? concat(u, c_dir, (int)u->r.D, 0) : -1;
  return out->y >= 0 && out->y_h >= 0;
}

bool kiln_rnn_grad(kiln_grad_ctx *c, const kiln_rnn_spec *spec) {
  const kiln_node *n = &c->node;
  if (input_of(c, KILN_RNN_SEQ_LENS) >= 0) {
    kiln_op_error(c->d, n, "no gradient with sequence_lens yet; train on sequences of full length");
    return false;
  }
  unroll u = {.c = c, .spec = spec};
  const kiln_tensor *x = &c->g->tensors[n->inputs[KILN_RNN_X]];
  u.t = x->dtype;
  kiln_shape xs = x->shape;
  if (!kiln_rnn_resolve(n, spec, &xs, c->d, &u.r)) return false;
  int first = c->g->n_nodes;
  unrolled out;
  if (!build_unrolled(&u, &out)) return false;
  int last = c->g->n_nodes;
  int seed[3] = {out.y, out.y_h, out.y_c}, seed_grad[3] = {-1, -1, -1};
  for (int j = 0; j < n->n_outputs && j < 3; j++) seed_grad[j] = n->outputs[j] >= 0 ? c->dy[j] : -1;
  int wrt[8], wrt_grad[8], n_wrt = n->n_inputs < 8 ? n->n_inputs : 8;
  for (int j = 0; j < n_wrt; j++) wrt[j] = c->need[j] ? n->inputs[j] : -1;
  if (!kiln_gb_differentiate(c, first, last, seed, seed_grad, 3, wrt, wrt_grad, n_wrt))
    return false;
  for (int j = 0; j < n_wrt; j++)
    if (c->need[j]) c->dx[j] = wrt_grad[j];
  return true;
}

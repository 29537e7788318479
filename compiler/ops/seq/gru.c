// GRU (ONNX opset 14), gates in ONNX order z, r, h (PyTorch stores r, z, n); f Sigmoid, g Tanh by
// default:
//   z = f(X W_z^T + H R_z^T + Wb_z + Rb_z)      r = f(X W_r^T + H R_r^T + Wb_r + Rb_r)
//   linear_before_reset = 0:  h~ = g(X W_h^T + (r * H) R_h^T + Rb_h + Wb_h)
//   linear_before_reset = 1:  h~ = g(X W_h^T + r * (H R_h^T + Rb_h) + Wb_h)    (PyTorch's GRU)
//   H' = (1 - z) * h~ + z * H
//   X: (T, B, I)   W: (D, 3H, I)   R: (D, 3H, H)   B: (D, 6H)   Y: (T, D, B, H)   Y_h: (D, B, H)
#include <stdlib.h>

#include "recurrent.h"

static const kiln_attr_spec attrs[] = {
    {"activation_alpha", KILN_ATTR_FLOATS, false},
    {"activation_beta", KILN_ATTR_FLOATS, false},
    {"activations", KILN_ATTR_STRING, false},
    {"clip", KILN_ATTR_FLOAT, false},
    {"direction", KILN_ATTR_STRING, false},
    {"hidden_size", KILN_ATTR_INT, true},
    {"layout", KILN_ATTR_INT, false},
    {"linear_before_reset", KILN_ATTR_INT, false},
    {0},
};

enum { GATE_Z, GATE_R, GATE_H };  // rows of W, R and B, in blocks of H
enum { ACT_F, ACT_G };

static const kiln_rnn_spec spec = {
    .op = "GRU",
    .gates = 3,
    .n_acts = 2,
    .default_acts = "Sigmoid,Tanh",
    .scratch_regions = 3,  // h, new h, r * h (KILN_RNN_STATE_AUX; linear_before_reset = 0)
};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t lbr;
  return kiln_op_read_int(n, d, "linear_before_reset", 0, 0, 1, &lbr) &&
         kiln_rnn_infer(g, n, d, &spec);
}

// f or g of the clipped pre-activation.
static double act(const kiln_rnn_step *s, int k, double pre) {
  return kiln_act_eval(&s->acts[k], kiln_rnn_clip(s->r, pre));
}

static void step_eval(const kiln_node *n, const kiln_rnn_step *s) {
  int64_t H = s->r->H;
  bool lbr = kiln_attr_int(n, "linear_before_reset", 0) != 0;
  double *rh = kiln_xcalloc((size_t)H, sizeof(double));  // r * H, for linear_before_reset = 0
  for (int64_t j = 0; j < H; j++) {
    double pre = kiln_rnn_dot_x(s, GATE_R, j) + kiln_rnn_dot_h(s, GATE_R, j, s->h) +
                 s->Wb[GATE_R * H + j] + s->Rb[GATE_R * H + j];
    rh[j] = act(s, ACT_F, pre) * s->h[j];
  }
  for (int64_t j = 0; j < H; j++) {
    double z = act(s, ACT_F,
                   kiln_rnn_dot_x(s, GATE_Z, j) + kiln_rnn_dot_h(s, GATE_Z, j, s->h) +
                       s->Wb[GATE_Z * H + j] + s->Rb[GATE_Z * H + j]);
    double r = act(s, ACT_F,
                   kiln_rnn_dot_x(s, GATE_R, j) + kiln_rnn_dot_h(s, GATE_R, j, s->h) +
                       s->Wb[GATE_R * H + j] + s->Rb[GATE_R * H + j]);
    double pre = kiln_rnn_dot_x(s, GATE_H, j) + s->Wb[GATE_H * H + j];
    if (lbr)
      pre += r * (kiln_rnn_dot_h(s, GATE_H, j, s->h) + s->Rb[GATE_H * H + j]);
    else
      pre += kiln_rnn_dot_h(s, GATE_H, j, rh) + s->Rb[GATE_H * H + j];
    s->h_new[j] = (1 - z) * act(s, ACT_G, pre) + z * s->h[j];
  }
  free(rh);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_rnn_eval(n, &spec, in, out, step_eval);
}

static const kiln_gate_terms all_terms = {
    .wb = true, .rb = true, .x = true, .h_region = KILN_RNN_STATE_H};

// Declares `name` = f(clip(pre-activation of gate g)) for unit j.
static int sigmoid_gate(const kiln_rnn_lowering *L, const char *name, int g, int j) {
  int pre = kiln_rnn_lower_gate(L, "pre", g, j, all_terms);
  kiln_rnn_lower_clip(L, pre);
  return kiln_lb_decl(L->b, name, L->t, kiln_rnn_lower_act(L, ACT_F, pre));
}

// linear_before_reset = 0 needs r * H for every unit before any h~: a first pass stores it.
static void lower_reset_state(const kiln_rnn_lowering *L) {
  kiln_lb *b = L->b;
  int j = kiln_lb_for_n(b, "j", L->r.H);
  int r = sigmoid_gate(L, "r", GATE_R, j);
  kiln_lexpr *h = lx_load(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_H, lx_var(b, j)));
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_AUX, lx_var(b, j)),
                lx_bin(b, LB_MUL, lx_var(b, r), h));
  kiln_lb_end_for(b);
}

// The pre-activation of h~ for unit j (clipped), as a local.
static int candidate_pre(const kiln_rnn_lowering *L, int j, bool lbr) {
  kiln_lb *b = L->b;
  if (!lbr) {
    kiln_gate_terms t = {.wb = true, .rb = true, .x = true, .h_region = KILN_RNN_STATE_AUX};
    int pre = kiln_rnn_lower_gate(L, "pre_h", GATE_H, j, t);
    kiln_rnn_lower_clip(L, pre);
    return pre;
  }
  int r = sigmoid_gate(L, "r", GATE_R, j);
  kiln_gate_terms xt = {.wb = true, .x = true, .h_region = -1};
  kiln_gate_terms ht = {.rb = true, .h_region = KILN_RNN_STATE_H};
  int pre = kiln_rnn_lower_gate(L, "pre_h", GATE_H, j, xt);
  int rec = kiln_rnn_lower_gate(L, "rec_h", GATE_H, j, ht);
  kiln_lb_assign(
      b, pre, lx_bin(b, LB_ADD, lx_var(b, pre), lx_bin(b, LB_MUL, lx_var(b, r), lx_var(b, rec))));
  kiln_rnn_lower_clip(L, pre);
  return pre;
}

static void step_lower(const kiln_rnn_lowering *L) {
  kiln_lb *b = L->b;
  kiln_dtype t = L->t;
  bool lbr = kiln_attr_int(L->c->node, "linear_before_reset", 0) != 0;
  if (!lbr) lower_reset_state(L);
  int j = kiln_lb_for_n(b, "j", L->r.H);
  int z = sigmoid_gate(L, "z", GATE_Z, j);
  int pre = candidate_pre(L, j, lbr);
  int cand = kiln_lb_decl(b, "h_cand", t, kiln_rnn_lower_act(L, ACT_G, pre));
  // new h = (1 - z) * h~ + z * h
  kiln_lexpr *h = lx_load(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_H, lx_var(b, j)));
  kiln_lexpr *keep = lx_bin(b, LB_SUB, lx_float(b, t, 1), lx_var(b, z));
  kiln_lexpr *v = lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, keep, lx_var(b, cand)),
                         lx_bin(b, LB_MUL, lx_var(b, z), h));
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_NEW, lx_var(b, j)), v);
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) { kiln_rnn_lower(c, &spec, step_lower); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_rnn_flops(g, n, &spec);
}

static bool grad(kiln_grad_ctx *c) { return kiln_rnn_grad(c, &spec); }

const kiln_op_def kiln_op_GRU = {
    .name = "GRU",
    .min_inputs = 3,
    .max_inputs = 6,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Three dot products of I + H terms per unit and step, then sigmoid/tanh; the f32 rounding of
    // PyTorch and of the generated code feeds back through H over T steps. Measured worst case
    // over the goldens (up to T 6, H 24): 2.4e-7 absolute; 2e-6 leaves room for longer sums.
    .tol = {2e-6, 2e-6},
    .grad = grad,
};

// LSTM (ONNX opset 14), gates in ONNX order i, o, f, c (PyTorch stores i, f, g, o), peepholes
// P = [Pi, Po, Pf]; f Sigmoid, g and h Tanh by default:
//   i = f(X W_i^T + H R_i^T + Pi * C + Wb_i + Rb_i)     f_t = f(... _f ... + Pf * C ...)
//   c = g(X W_c^T + H R_c^T + Wb_c + Rb_c)              C' = f_t * C + i * c
//   o = f(X W_o^T + H R_o^T + Po * C' + Wb_o + Rb_o)    H' = o * h(C')
// `clip` bounds the gate pre-activations (the arguments of f and g), not the cell state C'.
//   X: (T, B, I)   W: (D, 4H, I)   R: (D, 4H, H)   B: (D, 8H)   P: (D, 3H)
//   Y: (T, D, B, H)   Y_h, Y_c: (D, B, H)
#include "recurrent.h"

static const kiln_attr_spec attrs[] = {
    {"activation_alpha", KILN_ATTR_FLOATS, false},
    {"activation_beta", KILN_ATTR_FLOATS, false},
    {"activations", KILN_ATTR_STRING, false},
    {"clip", KILN_ATTR_FLOAT, false},
    {"direction", KILN_ATTR_STRING, false},
    {"hidden_size", KILN_ATTR_INT, true},
    {"input_forget", KILN_ATTR_INT, false},
    {"layout", KILN_ATTR_INT, false},
    {0},
};

enum { GATE_I, GATE_O, GATE_F, GATE_C };  // rows of W, R and B, in blocks of H
enum { PEEP_I, PEEP_O, PEEP_F };          // P's blocks
enum { ACT_F, ACT_G, ACT_H };

static const kiln_rnn_spec spec = {
    .op = "LSTM",
    .gates = 4,
    .n_acts = 3,
    .default_acts = "Sigmoid,Tanh,Tanh",
    .has_cell = true,
    .scratch_regions = 3,  // h, new h, cell state (KILN_RNN_STATE_AUX)
};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_rnn_infer(g, n, d, &spec);
}

// Pre-activation of gate g for unit j, with the peephole term peep * c when peep >= 0.
static double gate_eval(const kiln_rnn_step *s, int g, int64_t j, int peep, double c) {
  int64_t H = s->r->H;
  double pre =
      kiln_rnn_dot_x(s, g, j) + kiln_rnn_dot_h(s, g, j, s->h) + s->Wb[g * H + j] + s->Rb[g * H + j];
  if (peep >= 0) pre += s->P[peep * H + j] * c;
  return kiln_act_eval(&s->acts[g == GATE_C ? ACT_G : ACT_F], kiln_rnn_clip(s->r, pre));
}

static void step_eval(const kiln_node *n, const kiln_rnn_step *s) {
  (void)n;
  for (int64_t j = 0; j < s->r->H; j++) {
    double c_prev = s->c[j];
    double i = gate_eval(s, GATE_I, j, PEEP_I, c_prev);
    double f = gate_eval(s, GATE_F, j, PEEP_F, c_prev);
    double c = gate_eval(s, GATE_C, j, -1, 0);
    s->c[j] = f * c_prev + i * c;
    double o = gate_eval(s, GATE_O, j, PEEP_O, s->c[j]);
    s->h_new[j] = o * kiln_act_eval(&s->acts[ACT_H], s->c[j]);
  }
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_rnn_eval(n, &spec, in, out, step_eval);
}

// Declares `name` = act(clip(pre-activation of gate g [+ P[peep] * c])) for unit j.
static int gate_lower(const kiln_rnn_lowering *L, const char *name, int g, int j, int peep, int c) {
  kiln_lb *b = L->b;
  kiln_gate_terms all = {.wb = true, .rb = true, .x = true, .h_region = KILN_RNN_STATE_H};
  int pre = kiln_rnn_lower_gate(L, "pre", g, j, all);
  kiln_lexpr *p = peep >= 0 ? kiln_rnn_lower_peephole(L, peep, j) : NULL;
  if (p)
    kiln_lb_assign(b, pre, lx_bin(b, LB_ADD, lx_var(b, pre), lx_bin(b, LB_MUL, p, lx_var(b, c))));
  kiln_rnn_lower_clip(L, pre);
  return kiln_lb_decl(b, name, L->t, kiln_rnn_lower_act(L, g == GATE_C ? ACT_G : ACT_F, pre));
}

static void step_lower(const kiln_rnn_lowering *L) {
  kiln_lb *b = L->b;
  kiln_dtype t = L->t;
  int j = kiln_lb_for_n(b, "j", L->r.H);
  int c_prev = kiln_lb_decl(
      b, "c_prev", t,
      lx_load(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_AUX, lx_var(b, j))));
  int i = gate_lower(L, "i", GATE_I, j, PEEP_I, c_prev);
  int f = gate_lower(L, "f", GATE_F, j, PEEP_F, c_prev);
  int c = gate_lower(L, "c", GATE_C, j, -1, -1);
  // c_new = f * c_prev + i * c
  kiln_lexpr *kept = lx_bin(b, LB_MUL, lx_var(b, f), lx_var(b, c_prev));
  int c_new = kiln_lb_decl(b, "c_new", t,
                           lx_bin(b, LB_ADD, kept, lx_bin(b, LB_MUL, lx_var(b, i), lx_var(b, c))));
  int o = gate_lower(L, "o", GATE_O, j, PEEP_O, c_new);
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_AUX, lx_var(b, j)),
                lx_var(b, c_new));
  kiln_lb_store(b, L->scratch, kiln_rnn_state_index(L, KILN_RNN_STATE_NEW, lx_var(b, j)),
                lx_bin(b, LB_MUL, lx_var(b, o), kiln_rnn_lower_act(L, ACT_H, c_new)));
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) { kiln_rnn_lower(c, &spec, step_lower); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_rnn_flops(g, n, &spec);
}

static bool grad(kiln_grad_ctx *c) { return kiln_rnn_grad(c, &spec); }

const kiln_op_def kiln_op_LSTM = {
    .name = "LSTM",
    .min_inputs = 3,
    .max_inputs = 8,
    .min_outputs = 1,
    .max_outputs = 3,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Four dot products of I + H terms per unit and step, then sigmoid/tanh; the f32 rounding of
    // PyTorch and of the generated code feeds back through H and C over T steps, and the cell
    // state is unbounded (hence the relative term). Measured worst case over the goldens (up to
    // T 8, H 32): 2.4e-7 absolute; 2e-6 leaves room for longer sums.
    .tol = {2e-6, 2e-6},
    .grad = grad,
};

// Shared machinery of the recurrent ops RNN, LSTM and GRU (recurrent.c): attribute and shape
// checks, activation functions, the reference driver that walks directions, batch elements and
// time steps, and the loop-IR skeleton around one time step. Each op file supplies only its gate
// equations (one step, for eval and for lower).
//
// Shapes (ONNX, layout 0): D directions (2 if bidirectional), G gates (RNN 1, GRU 3, LSTM 4),
//   X: (T, B, I)   W: (D, G*H, I)   R: (D, G*H, H)   B: (D, 2*G*H) = [Wb, Rb]
//   sequence_lens: (B)   initial_h, initial_c: (D, B, H)   P: (D, 3*H) = [Pi, Po, Pf]
//   Y: (T, D, B, H)   Y_h, Y_c: (D, B, H)
#ifndef KILN_OPS_SEQ_RECURRENT_H
#define KILN_OPS_SEQ_RECURRENT_H

#include "../op_internal.h"

// Input and output positions shared by the three ops (LSTM adds initial_c and P).
enum {
  KILN_RNN_X,
  KILN_RNN_W,
  KILN_RNN_R,
  KILN_RNN_B,
  KILN_RNN_SEQ_LENS,
  KILN_RNN_INITIAL_H,
  KILN_RNN_INITIAL_C,
  KILN_RNN_P,
};
enum { KILN_RNN_Y, KILN_RNN_Y_H, KILN_RNN_Y_C };

typedef enum {
  KILN_ACT_SIGMOID,
  KILN_ACT_TANH,
  KILN_ACT_RELU,
  KILN_ACT_HARD_SIGMOID,  // max(0, min(1, alpha * x + beta)); alpha 0.2, beta 0.5
  KILN_ACT_LEAKY_RELU,    // x >= 0 ? x : alpha * x; alpha 0.01
} kiln_act_kind;

typedef struct kiln_act {
  kiln_act_kind kind;
  double alpha, beta;
} kiln_act;

enum { KILN_RNN_MAX_ACTS = 3 };  // f, g, h (LSTM); RNN has one, GRU two

// What distinguishes the three ops to the shared code.
typedef struct kiln_rnn_spec {
  const char *op;
  int gates;                 // G
  int n_acts;                // activations per direction
  const char *default_acts;  // "Sigmoid,Tanh,Tanh"
  bool has_cell;             // LSTM: initial_c, P, Y_c, input_forget
  int scratch_regions;       // state vectors of (D, B, H) the lowering keeps in scratch memory
} kiln_rnn_spec;

enum { KILN_RNN_FORWARD, KILN_RNN_REVERSE, KILN_RNN_BIDIRECTIONAL };

// A node's configuration, resolved from its attributes and input shape.
typedef struct kiln_rnn {
  int64_t T, B, I, H, D, G;
  int direction;  // KILN_RNN_FORWARD ...
  bool has_clip;
  double clip;
  kiln_act acts[2][KILN_RNN_MAX_ACTS];  // [direction][f, g, h]
} kiln_rnn;

// Reads and checks the attributes against x's shape (T, B, I). d may be NULL (eval, lower: infer
// has checked). Returns false after reporting.
bool kiln_rnn_resolve(const kiln_node *n, const kiln_rnn_spec *spec, const kiln_shape *x,
                      kiln_diag *d, kiln_rnn *r);
// Checks every input's dtype and shape, then sets the outputs the node lists.
bool kiln_rnn_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, const kiln_rnn_spec *spec);
// D * B * T steps of G gates over (I + H) inputs: 2 * G * H * (I + H) each, plus the elementwise
// work (about 4 per gate and unit).
int64_t kiln_rnn_flops(const kiln_graph *g, const kiln_node *n, const kiln_rnn_spec *spec);

// ---- Reference (eval) ----

double kiln_act_eval(const kiln_act *a, double x);
// x clipped to [-clip, clip] when the node has `clip`.
double kiln_rnn_clip(const kiln_rnn *r, double x);

// One time step of one direction and batch element, as the ops' equations see it. Absent bias,
// peepholes and initial states read as zeros.
typedef struct kiln_rnn_step {
  const kiln_rnn *r;
  const kiln_act *acts;           // this direction's f, g, h
  const double *W, *R, *Wb, *Rb;  // this direction's (G*H, I), (G*H, H), (G*H), (G*H)
  const double *P;                // (3*H): Pi, Po, Pf
  const double *x;                // (I): X[t][b]
  const double *h;                // (H): the previous hidden state
  double *c;                      // (H): the cell state, updated in place (LSTM)
  double *h_new;                  // (H): the new hidden state
} kiln_rnn_step;
typedef void (*kiln_rnn_step_eval)(const kiln_node *n, const kiln_rnn_step *s);

// sum_k W[g*H + j][k] * x[k] and sum_k R[g*H + j][k] * h[k].
double kiln_rnn_dot_x(const kiln_rnn_step *s, int g, int64_t j);
double kiln_rnn_dot_h(const kiln_rnn_step *s, int g, int64_t j, const double *h);

// Runs the recurrence: per direction and batch element, the state starts at initial_h/_c (or 0);
// time runs forward or backward over the first sequence_lens[b] steps; Y holds each step's new
// hidden state and zeros past the sequence's end; Y_h and Y_c the last states.
void kiln_rnn_eval(const kiln_node *n, const kiln_rnn_spec *spec, const kiln_eval_tensor *in,
                   kiln_eval_tensor *out, kiln_rnn_step_eval step);

// ---- Lowering ----

// Scratch regions of (D, B, H) each, in a kernel scratch buffer (kiln_lower_scratch): the hidden
// state, the new hidden state of the step, and AUX (LSTM's cell state, GRU's r * H).
enum { KILN_RNN_STATE_H, KILN_RNN_STATE_NEW, KILN_RNN_STATE_AUX };

typedef struct kiln_rnn_lowering {
  const kiln_lower_ctx *c;
  kiln_lb *b;
  kiln_rnn r;
  kiln_dtype t;
  int scratch;           // buffer
  int dir, batch, time;  // loop variables: direction, batch element; time is the i64 local t
} kiln_rnn_lowering;
// Emits the step: reads the state region KILN_RNN_STATE_H (and AUX for LSTM's cell), writes the
// new hidden state to KILN_RNN_STATE_NEW; the skeleton copies it back and into Y.
typedef void (*kiln_rnn_step_lower)(const kiln_rnn_lowering *L);

void kiln_rnn_lower(const kiln_lower_ctx *c, const kiln_rnn_spec *spec, kiln_rnn_step_lower step);

// Index of state region `region` at unit j: ((region * D + dir) * B + batch) * H + j.
kiln_lexpr *kiln_rnn_state_index(const kiln_rnn_lowering *L, int region, kiln_lexpr *j);
// The terms of one gate pre-activation for unit j of gate g.
typedef struct kiln_gate_terms {
  bool wb, rb;   // + Wb[g*H + j], + Rb[g*H + j] (when the node has B)
  bool x;        // + sum_k W[d][g*H + j][k] * X[t][b][k]
  int h_region;  // + sum_k R[d][g*H + j][k] * state[h_region][k]; -1 for none
} kiln_gate_terms;
// Declares local `name` and accumulates the terms into it (each sum a reduction loop over k).
// Returns the local.
int kiln_rnn_lower_gate(const kiln_rnn_lowering *L, const char *name, int g, int j,
                        kiln_gate_terms terms);
// var = clip(var), when the node has `clip`.
void kiln_rnn_lower_clip(const kiln_rnn_lowering *L, int var);
// Activation k (f, g, h) of this direction applied to local `var` (a fresh expression).
kiln_lexpr *kiln_rnn_lower_act(const kiln_rnn_lowering *L, int k, int var);
// P[d][p*H + j] (p: 0 i, 1 o, 2 f); NULL without P.
kiln_lexpr *kiln_rnn_lower_peephole(const kiln_rnn_lowering *L, int p, int j);

// ---- Gradient (recurrent_grad.c) ----

// The gradient rule of the three ops: the node recomputed from graph ops unrolled over time, then
// differentiated by the ops' own rules (backpropagation through time). Returns false after
// reporting.
bool kiln_rnn_grad(kiln_grad_ctx *c, const kiln_rnn_spec *spec);

#endif

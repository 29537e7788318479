// Elu: y = x if x >= 0 else alpha * (exp(x) - 1), elementwise; alpha defaults to 1.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{"alpha", KILN_ATTR_FLOAT, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static double elu(const kiln_node *n, double x) {
  return x >= 0 ? x : kiln_attr_float(n, "alpha", 1.0) * (exp(x) - 1);
}

// x < 0 ? alpha * (exp(x) - 1) : x
static kiln_lexpr *elu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *negative = lx_bin(b, LB_LT, kiln_lx_clone(b, x), lx_float(b, t, 0));
  kiln_lexpr *em1 = lx_bin(b, LB_SUB, lx_unary(b, LU_EXP, kiln_lx_clone(b, x)), lx_float(b, t, 1));
  kiln_lexpr *scaled = lx_bin(b, LB_MUL, lx_float(b, t, kiln_attr_float(n, "alpha", 1.0)), em1);
  return lx_select(b, negative, scaled, x);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, elu);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, elu_lx); }

// Gradient (docs/training.md): dx = x < 0 ? dy (y + alpha) : dy (alpha exp(x) = y + alpha there).
static bool elu_grad(kiln_grad_ctx *c) {
  int x = kiln_gc_x(c, 0), dy = c->dy[0];
  int negative = kiln_gc_scalar_op(c, "Less", x, 0);
  int slope = kiln_gc_scalar_op(c, "Add", kiln_gc_y(c), kiln_attr_float(&c->node, "alpha", 1.0));
  int scaled = kiln_gc_binary(c, "Mul", dy, slope);
  if (negative < 0 || scaled < 0) return false;
  int in[3] = {negative, scaled, dy};
  c->dx[0] = kiln_gb_op(c, "Where", in, 3, NULL, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Elu = {
    .name = "Elu",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    // exp(x) - 1 in f32 cancels near x = 0: up to an ulp of 1 (1.2e-7) times alpha absolute;
    // elsewhere expf's 1-2 ulp.
    .tol = {2.5e-7, 4e-7},
    .grad = elu_grad,
};

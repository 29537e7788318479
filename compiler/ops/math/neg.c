// Neg: y = -x, elementwise, for floats and signed integers (i8, i32, i64; -INT_MIN is undefined, as
// in C).
#include "../op_internal.h"
#include "../train/grad_compose.h"

static const unsigned dtypes =
    KILN_DT_FLOAT | KILN_DT(KILN_I8) | KILN_DT(KILN_I32) | KILN_DT(KILN_I64);

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, dtypes, true, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape and dtype as x
  return true;
}

static double neg(const kiln_node *n, double x) {
  (void)n;
  return -x;
}

static kiln_lexpr *neg_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  (void)n, (void)t;
  return lx_unary(b, LU_NEG, x);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, neg);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, neg_lx); }

// Gradient (docs/training.md): dx = -dy.
static bool neg_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gc_unary(c, "Neg", c->dy[0]);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Neg = {
    .name = "Neg",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_unary_attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 0},  // exact
    .grad = neg_grad,
};

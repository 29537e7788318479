// Where: y = cond ? x : y elementwise, the three inputs broadcast together (numpy rules); cond is
// bool, x and y share any one dtype, which the output takes.
#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT(KILN_BOOL), true, d)) return false;
  if (!kiln_op_check_dtypes(g, n, 1, 2, KILN_DT_ANY, true, d)) return false;
  kiln_shape out;
  if (!kiln_broadcast_inputs(g, n, d, &out)) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 1)->dtype, &out);
  return true;
}

static double where_ref(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] != 0 ? v[1] : v[2];
}

static kiln_lexpr *where_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                            int count) {
  (void)n, (void)t, (void)count;
  return lx_select(b, v[0], v[1], v[2]);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, where_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, where_lx); }

// Gradient (docs/training.md): dx = where(cond, dy, 0), dy_else = where(cond, 0, dy) (written
// where(not cond, dy, 0)), each summed over the axes its input was broadcast along. cond gets none.
static bool where_grad(kiln_grad_ctx *c) {
  int cond = kiln_gc_x(c, 0), dy = c->dy[0];
  if (dy < 0) return true;
  for (int i = 1; i < 3; i++) {
    if (!c->need[i]) continue;
    int picked = i == 1 ? cond : kiln_gc_unary(c, "Not", cond);
    int d = kiln_gc_where_else(c, picked, dy, 0);
    kiln_shape s = c->g->tensors[kiln_gc_x(c, i)].shape;  // a copy: adding nodes moves tensors
    if (d < 0 || (c->dx[i] = kiln_gb_sum_to(c, d, &s)) < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_Where = {
    .name = "Where",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // exact: a selection
    .grad = where_grad,
};

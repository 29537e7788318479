// LRN (ONNX): local response normalization across channels.
//   square_sum[n, c, s] = sum of x[n, i, s]^2 for i in [c - floor((size - 1) / 2),
//                                                     c + ceil((size - 1) / 2)] within [0, C)
//   y = x / (bias + alpha / size * square_sum)^beta
//   x: (N, C, D1, ..., Dk), k >= 0, viewed as (N, C, S)   y: like x
// Attributes: size (required, >= 1), alpha (1e-4), beta (0.75), bias (1.0). For an even size the
// window has one more channel after c than before (PyTorch's LocalResponseNorm has it the other
// way round; the golden script accounts for that).
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"alpha", KILN_ATTR_FLOAT, false},
    {"beta", KILN_ATTR_FLOAT, false},
    {"bias", KILN_ATTR_FLOAT, false},
    {"size", KILN_ATTR_INT, true},
    {0},
};

typedef struct lrn_params {
  int64_t size, before, after;  // the window is [c - before, c + after]
  double alpha, beta, bias;
} lrn_params;

static lrn_params params_of(const kiln_node *n) {
  lrn_params p = {.size = kiln_attr_int(n, "size", 1),
                  .alpha = kiln_attr_float(n, "alpha", 1e-4),
                  .beta = kiln_attr_float(n, "beta", 0.75),
                  .bias = kiln_attr_float(n, "bias", 1.0)};
  p.before = (p.size - 1) / 2;
  p.after = p.size / 2;  // ceil((size - 1) / 2)
  return p;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t size;
  if (!kiln_op_read_int(n, d, "size", 1, 1, INT64_MAX, &size)) return false;
  if (x->shape.rank < 2) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 2 dimensions (N, C, ...), got %s",
                  x->name, kiln_shape_text(&x->shape).text);
    return false;
  }
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: like x
  return true;
}

static int64_t spatial(const kiln_shape *x) {
  int64_t s = 1;
  for (int i = 2; i < x->rank; i++) s *= x->dim[i];
  return s;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  lrn_params p = params_of(n);
  const kiln_shape *xs = in[0].shape;
  int64_t N = xs->dim[0], C = xs->dim[1], S = spatial(xs);
  const double *x = in[0].data;
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t s = 0; s < S; s++) {
        double square_sum = 0;
        for (int64_t i = c - p.before; i <= c + p.after; i++) {
          if (i < 0 || i >= C) continue;
          double v = x[(b * C + i) * S + s];
          square_sum += v * v;
        }
        int64_t at = (b * C + c) * S + s;
        out->data[at] = x[at] / pow(p.bias + p.alpha / (double)p.size * square_sum, p.beta);
      }
}

// x[(n * C + ch) * S + s]
static kiln_lexpr *at(kiln_lb *b, int buf, int64_t C, int64_t S, int n, kiln_lexpr *ch, int s) {
  return lx_load(b, buf, lx_madd(b, lx_madd(b, lx_var(b, n), C, ch), S, lx_var(b, s)));
}

// base^beta, by square roots for the usual exponents (vectorizable, within 2 ulp), else pow.
static kiln_lexpr *power(kiln_lb *b, kiln_dtype t, int base, double beta) {
  if (beta == 1) return lx_var(b, base);
  if (beta == 0.5) return lx_unary(b, LU_SQRT, lx_var(b, base));
  if (beta == 0.75) {  // sqrt(v) * sqrt(sqrt(v))
    kiln_lexpr *root = lx_unary(b, LU_SQRT, lx_var(b, base));
    return lx_bin(b, LB_MUL, root, lx_unary(b, LU_SQRT, lx_unary(b, LU_SQRT, lx_var(b, base))));
  }
  return lx_bin(b, LB_POW, lx_var(b, base), lx_float(b, t, beta));
}

// For n, c: for s (vectorized): square_sum over the window's `size` channels, a fully unrolled
// loop whose channels outside [0, C) read a clamped, valid channel and add 0 instead (the same
// sum, in the same order, as the clamped window), then y = x / (bias + alpha/size*sum)^beta.
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  lrn_params p = params_of(c->node);
  int64_t C = x->shape.dim[1], S = spatial(&x->shape);
  kiln_dtype t = y->dtype;
  int xb = kiln_in_buf(c, 0);
  kiln_lb_comment(b, "LRN %s: %s, size %lld (channels c-%lld..c+%lld) -> %s", c->node->name,
                  kiln_describe(x).text, (long long)p.size, (long long)p.before, (long long)p.after,
                  kiln_describe(y).text);
  int n = kiln_lb_for_n(b, "n", x->shape.dim[0]);
  int ch = kiln_lb_for_n(b, "c", C);
  int s = kiln_lb_for_n(b, "s", S);
  int sum = kiln_lb_decl(b, "square_sum", t, lx_float(b, t, 0));
  int j = kiln_lb_for_n(b, "j", p.size);
  kiln_lb_unroll(b, (int)p.size);
  // channel c - before + j; valid when inside [0, C)
  int i = kiln_lb_decl(b, "i", KILN_I64,
                       lx_add(b, lx_var(b, ch), lx_add(b, lx_var(b, j), lx_int(b, -p.before))));
  kiln_lexpr *valid = lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, 0), lx_var(b, i)),
                             lx_bin(b, LB_LT, lx_var(b, i), lx_int(b, C)));
  kiln_lexpr *clamped =
      lx_bin(b, LB_MIN, lx_int(b, C - 1), lx_bin(b, LB_MAX, lx_int(b, 0), lx_var(b, i)));
  int v = kiln_lb_decl(b, "v", t, at(b, xb, C, S, n, clamped, s));
  kiln_lexpr *sq =
      lx_select(b, valid, lx_bin(b, LB_MUL, lx_var(b, v), lx_var(b, v)), lx_float(b, t, 0));
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), sq));
  kiln_lb_end_for(b);  // j
  // y = x / (bias + alpha / size * square_sum)^beta
  kiln_lexpr *scaled = lx_bin(b, LB_MUL, lx_float(b, t, p.alpha / (double)p.size), lx_var(b, sum));
  int base = kiln_lb_decl(b, "base", t, lx_bin(b, LB_ADD, lx_float(b, t, p.bias), scaled));
  kiln_lexpr *den = power(b, t, base, p.beta);
  kiln_lexpr *val = lx_bin(b, LB_DIV, at(b, xb, C, S, n, lx_var(b, ch), s), den);
  kiln_lb_store(b, kiln_out_buf(c, 0),
                lx_madd(b, lx_madd(b, lx_var(b, n), C, lx_var(b, ch)), S, lx_var(b, s)), val);
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // s, c, n
}

// Per element: size multiply-adds, then a multiply, an add, pow and a divide.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return (2 * kiln_attr_int(n, "size", 1) + 4) * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_LRN = {
    .name = "LRN",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // A short f32 sum of squares, then powf (within a few ulp; square roots for beta 0.5 and
    // 0.75, within 2 ulp) and a divide: ~1e-6 relative.
    .tol = {1e-6, 4e-6},
};

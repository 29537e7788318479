// QLinearConcat (Kiln's own op set; onnxruntime's com.microsoft op of that name): Concat of
// quantized tensors along `axis` (required), each requantized to the output's scale and zero point,
//   y = saturate(round_half_even((x_i - x_i_zp) * m_i) + y_zp),  m_i = f32(x_i_scale / y_scale)
// the product in f64, the rounding and saturation QLinearConv's requantize. An input already at
// y's scale and zero point (m_i = 1) is copied unchanged. Inputs y_scale, y_zero_point, then one
// triple x_i, x_i_scale, x_i_zero_point per tensor (1 to 16), all required, one value each.
//   x_i: i8/u8, one rank, equal dims but along axis   y: the concatenation, y_zero_point's dtype
#include "qgraph.h"

enum { Y_SCALE, Y_ZP, FIRST, MAX_PARTS = 16 };
static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, true}, {0}};

static int parts(const kiln_node *n) { return (n->n_inputs - FIRST) / 3; }
static int part_input(int i) { return FIRST + 3 * i; }

// Checks the triples' count and the shapes; sets *out to the concatenation's shape.
static bool check_shapes(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t axis,
                         kiln_shape *out) {
  *out = kiln_in(g, n, FIRST)->shape;
  out->dim[axis] = 0;
  for (int i = 0; i < parts(n); i++) {
    const kiln_tensor *x = kiln_in(g, n, part_input(i));
    bool same = x->shape.rank == out->rank;
    for (int k = 0; same && k < out->rank; k++) same = k == axis || x->shape.dim[k] == out->dim[k];
    if (!same) {
      kiln_op_error(
          d, n, "inputs[%d] (%s): expected the shape of inputs[%d] but along axis %lld, got %s",
          part_input(i), x->name, FIRST, (long long)axis, kiln_shape_text(&x->shape).text);
      return false;
    }
    out->dim[axis] += x->shape.dim[axis];
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if ((n->n_inputs - FIRST) % 3 != 0 || parts(n) > MAX_PARTS) {
    kiln_op_error(d, n,
                  "inputs: expected y_scale, y_zero_point and 1 to %d triples (x, x_scale, "
                  "x_zero_point), got %d inputs",
                  MAX_PARTS, n->n_inputs);
    return false;
  }
  if (!kiln_qgraph_check_output(g, n, d, Y_SCALE)) return false;
  for (int i = 0; i < parts(n); i++)
    if (!kiln_qgraph_check_operand(g, n, d, part_input(i), "x")) return false;
  int64_t axis;
  kiln_shape out;  // out: the inputs' shape, their sum along axis
  if (!kiln_op_check_axis(n, d, "attrs.axis", kiln_attr_int(n, "axis", 0),
                          kiln_in(g, n, FIRST)->shape.rank, &axis) ||
      !check_shapes(g, n, d, axis, &out))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);
  return true;
}

static int normalized_axis(const kiln_node *n, int rank) {
  int64_t axis = kiln_attr_int(n, "axis", 0);
  return (int)(axis < 0 ? axis + rank : axis);
}

// Each input's rows (outer, its axis * inner) land at column `offset` of y's rows.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int axis = normalized_axis(n, out->shape->rank);
  kiln_axis_view yv = kiln_axis_view_of(out->shape, axis);
  int64_t offset = 0;
  for (int i = 0; i < parts(n); i++) {
    int x = part_input(i);
    double m = kiln_qgraph_ratio_ref(in, x + 1, Y_SCALE);
    int64_t cols = in[x].shape->dim[axis] * yv.inner;
    for (int64_t o = 0; o < yv.outer; o++)
      for (int64_t j = 0; j < cols; j++) {
        double v = in[x].data[o * cols + j] - in[x + 2].data[0];
        out->data[o * yv.axis * yv.inner + offset + j] =
            kiln_quant_requantize_ref(v, m, in[Y_ZP].data[0], out->dtype);
      }
    offset += cols;
  }
}

//   for each input i: m, x_zp locals;
//     for o, j: y[o][offset_i + j] = requantize(x_i[o][j] - x_zp, m, y_zp)
static void lower_part(const kiln_lower_ctx *c, int i, int64_t offset, int y_zp) {
  kiln_lb *b = c->b;
  const kiln_shape *ys = &kiln_lower_out(c, 0)->shape;
  int x = part_input(i), axis = normalized_axis(c->node, ys->rank);
  kiln_axis_view yv = kiln_axis_view_of(ys, axis);
  int64_t cols = kiln_lower_in(c, x)->shape.dim[axis] * yv.inner;
  int m = kiln_qgraph_ratio_var(c, "m", x + 1, Y_SCALE);
  int x_zp = kiln_qgraph_zp_var(c, "x_zp", x + 2);
  int o = kiln_lb_for_n(b, "o", yv.outer), j = kiln_lb_for_n(b, "j", cols);
  kiln_lexpr *xv = lx_load(b, kiln_in_buf(c, x), lx_madd(b, lx_var(b, o), cols, lx_var(b, j)));
  kiln_lexpr *q = kiln_quant_requantize_lx(b, kiln_qgraph_centered(b, xv, x_zp), lx_var(b, m),
                                           lx_var(b, y_zp), kiln_lower_out(c, 0)->dtype);
  kiln_lexpr *at = lx_add(b, lx_int(b, offset), lx_var(b, j));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, lx_var(b, o), yv.axis * yv.inner, at), q);
  kiln_lb_end_for(b);  // j
  kiln_lb_end_for(b);  // o
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "QLinearConcat %s: %d inputs -> %s", c->node->name, parts(c->node),
                  kiln_describe(y).text);
  int y_zp = kiln_qgraph_zp_var(c, "y_zp", Y_ZP);
  int axis = normalized_axis(c->node, y->shape.rank);
  int64_t inner = kiln_axis_view_of(&y->shape, axis).inner, offset = 0;
  for (int i = 0; i < parts(c->node); i++) {
    lower_part(c, i, offset, y_zp);
    offset += kiln_lower_in(c, part_input(i))->shape.dim[axis] * inner;
  }
}

const kiln_op_def kiln_op_QLinearConcat = {
    .name = "QLinearConcat",
    .min_inputs = FIRST + 3,
    .max_inputs = FIRST + 3 * MAX_PARTS,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    // Exact: the same f32 ratio, f64 product and rounding in both.
    .tol = {0, 0},
};

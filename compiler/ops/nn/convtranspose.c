// ConvTranspose (ONNX; 1-D, 2-D or 3-D): the transpose (gradient) of Conv. Each input element
// scatters x[n][ic][ih][iw] * w[ic][ocg][kh][kw] into the output at
//   oh = ih * stride - pad_begin + kh * dilation   (likewise ow), kept when 0 <= oh < OH,
// plus the bias B[oc] everywhere.
//   x: (N, C, H, W)   w: (C, M / group, kH, kW)   B: (M), optional   y: (N, M, OH, OW)
// (1-D drops H, 3-D adds a leading D to every spatial part.)
// Input channel ic belongs to group g = ic / (C / group) and feeds output channels
// oc = g * (M / group) + ocg. Output size along an axis (ONNX):
//   OH = stride * (H - 1) + output_padding + (kH - 1) * dilation + 1 - pad_begin - pad_end
// With output_shape (or auto_pad SAME_UPPER / SAME_LOWER, whose output is H * stride), the pads
// are derived: total = stride * (H - 1) + output_padding + (kH - 1) * dilation + 1 - OH, split as
// pad_begin = floor(total / 2) (SAME_UPPER) or total - floor(total / 2) (otherwise). A negative
// total (an output larger than the transpose covers) gives negative pads, as in ONNX's reference:
// the output positions no input element reaches hold just the bias.
#include <string.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, false},
    {"output_padding", KILN_ATTR_INTS, false},
    {"output_shape", KILN_ATTR_INTS, false},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

typedef struct ct_geom {
  int rank;  // spatial axes, 1..3
  int64_t in[KILN_MAX_SPATIAL], kernel[KILN_MAX_SPATIAL], stride[KILN_MAX_SPATIAL];
  int64_t dilation[KILN_MAX_SPATIAL], out_pad[KILN_MAX_SPATIAL];
  int64_t pad_begin[KILN_MAX_SPATIAL], pad_end[KILN_MAX_SPATIAL];  // negative: output extended
  int64_t out[KILN_MAX_SPATIAL];
} ct_geom;

typedef enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID } pad_mode;

static bool read_pad_mode(const kiln_node *n, kiln_diag *d, pad_mode *mode) {
  static const char *const names[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
  const char *s = kiln_attr_string(n, "auto_pad", "NOTSET");
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) {
      *mode = (pad_mode)i;
      return true;
    }
  kiln_op_error(d, n,
                "attrs.auto_pad: expected NOTSET, SAME_UPPER, SAME_LOWER or VALID, got \"%s\"", s);
  return false;
}

// The extent the transpose covers before padding is removed.
static int64_t natural_size(const ct_geom *g, int axis) {
  return g->stride[axis] * (g->in[axis] - 1) + g->out_pad[axis] +
         (g->kernel[axis] - 1) * g->dilation[axis] + 1;
}

// floor(a / 2), also for a < 0.
static int64_t floor_half(int64_t a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }

// Pads for a requested output size `want` along axis.
static void pads_for_output(pad_mode mode, int axis, int64_t want, ct_geom *g) {
  int64_t total = natural_size(g, axis) - want;
  g->pad_begin[axis] = mode == PAD_SAME_UPPER ? floor_half(total) : total - floor_half(total);
  g->pad_end[axis] = total - g->pad_begin[axis];
  g->out[axis] = want;
}

static bool read_geom_attrs(const kiln_node *n, kiln_diag *d, int64_t *pads, int64_t *out_shape,
                            bool *has_out_shape, pad_mode *mode, ct_geom *g) {
  int r = g->rank;
  bool ok = kiln_op_read_ints(n, d, "strides", r, KILN_INTS_POSITIVE, g->stride);
  ok &= kiln_op_read_ints(n, d, "dilations", r, KILN_INTS_POSITIVE, g->dilation);
  ok &= kiln_op_read_ints(n, d, "output_padding", r, KILN_INTS_NONNEGATIVE, g->out_pad);
  ok &= kiln_op_read_ints(n, d, "pads", 2 * r, KILN_INTS_NONNEGATIVE, pads);
  ok &= kiln_op_read_ints(n, d, "output_shape", r, KILN_INTS_POSITIVE, out_shape);
  ok &= read_pad_mode(n, d, mode);
  *has_out_shape = kiln_node_attr(n, "output_shape") != NULL;
  bool any_pad = false;
  for (int i = 0; i < 2 * r; i++) any_pad |= pads[i] != 0;
  if (ok && *mode != PAD_NOTSET && any_pad) {
    kiln_op_error(d, n, "attrs.pads: must be absent or zero when auto_pad is %s",
                  kiln_attr_string(n, "auto_pad", ""));
    return false;
  }
  return ok;
}

// Resolves strides, dilations, pads, output_padding, output_shape and auto_pad for `rank`
// spatial axes of input size in[] and kernel[]. d may be NULL (after infer has checked).
static bool resolve(const kiln_node *n, kiln_diag *d, int rank, const int64_t *in,
                    const int64_t *kernel, ct_geom *g) {
  *g = (ct_geom){.rank = rank};
  for (int i = 0; i < rank; i++) {
    g->in[i] = in[i], g->kernel[i] = kernel[i];
    g->stride[i] = g->dilation[i] = 1;
  }
  int64_t pads[2 * KILN_MAX_SPATIAL] = {0}, out_shape[KILN_MAX_SPATIAL] = {0};
  bool has_out_shape;
  pad_mode mode;
  if (!read_geom_attrs(n, d, pads, out_shape, &has_out_shape, &mode, g)) return false;
  for (int axis = 0; axis < rank; axis++) {
    if (has_out_shape || mode == PAD_SAME_UPPER || mode == PAD_SAME_LOWER) {
      pads_for_output(mode, axis, has_out_shape ? out_shape[axis] : in[axis] * g->stride[axis], g);
      continue;
    }
    if (mode == PAD_NOTSET) g->pad_begin[axis] = pads[axis], g->pad_end[axis] = pads[axis + rank];
    g->out[axis] = natural_size(g, axis) - g->pad_begin[axis] - g->pad_end[axis];
    if (g->out[axis] < 1) {
      kiln_op_error(d, n, "attrs.pads: they remove all %lld output positions along %s",
                    (long long)natural_size(g, axis), kiln_spatial_axis_name(rank, axis));
      return false;
    }
  }
  return true;
}

// x and w: (N, C, spatial...) and (C, M/group, kernel...), 1 to 3 spatial axes, equal ranks.
static bool check_ranks(const kiln_node *n, kiln_diag *d, const kiln_tensor *x,
                        const kiln_tensor *w) {
  if (x->shape.rank < 3 || x->shape.rank > 2 + KILN_MAX_SPATIAL) {
    kiln_op_error(d, n,
                  "inputs[0] (%s): expected a 3-D, 4-D or 5-D tensor (N, C and 1 to 3 spatial "
                  "axes), got %s",
                  x->name, kiln_shape_text(&x->shape).text);
    return false;
  }
  if (w->shape.rank == x->shape.rank) return true;
  kiln_op_error(d, n,
                "inputs[1] (%s): expected a %d-D tensor (C, M/group and the %d kernel axes, as x "
                "%s), got %s",
                w->name, x->shape.rank, x->shape.rank - 2, kiln_shape_text(&x->shape).text,
                kiln_shape_text(&w->shape).text);
  return false;
}

// w against x and group, the bias against the output channels, kernel_shape against w.
static bool check_weights(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t group) {
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1), *bias = kiln_in(g, n, 2);
  int64_t C = x->shape.dim[1], M = w->shape.dim[1] * group;
  if (w->shape.dim[0] != C || C % group != 0) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): expected dim 0 = %lld (the input channels) divisible by "
                  "group %lld, got %s",
                  w->name, (long long)C, (long long)group, kiln_shape_text(&w->shape).text);
    return false;
  }
  if (bias && (bias->shape.rank != 1 || bias->shape.dim[0] != M)) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): expected shape (%lld) (one bias per output channel, "
                  "w.shape[1] * group), got %s",
                  bias->name, (long long)M, kiln_shape_text(&bias->shape).text);
    return false;
  }
  int rank = w->shape.rank - 2;
  int64_t kernel[KILN_MAX_SPATIAL];
  bool present, same = true;
  if (!kiln_window_kernel_attr_nd(n, d, rank, false, kernel, &present)) return false;
  for (int i = 0; present && i < rank; i++) same &= kernel[i] == w->shape.dim[2 + i];
  if (present && !same) {
    char want[64], got[64];
    kiln_op_error(d, n, "attrs.kernel_shape: expected %s (the dims of %s), got %s",
                  kiln_ints_str(&w->shape.dim[2], rank, want, sizeof want), kiln_describe(w).text,
                  kiln_ints_str(kernel, rank, got, sizeof got));
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int nin = kiln_in(g, n, 2) ? 3 : 2;
  if (!kiln_op_check_float_inputs(g, n, nin, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  if (!check_ranks(n, d, x, w)) return false;
  int64_t group;
  if (!kiln_op_read_int(n, d, "group", 1, 1, INT64_MAX, &group)) return false;
  if (!check_weights(g, n, d, group)) return false;
  ct_geom geom;
  int rank = x->shape.rank - 2;
  if (!resolve(n, d, rank, &x->shape.dim[2], &w->shape.dim[2], &geom)) return false;
  kiln_shape out = x->shape;  // out: (N, M, OD..., OH, OW)
  out.dim[1] = w->shape.dim[1] * group;
  for (int i = 0; i < rank; i++) out.dim[2 + i] = geom.out[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static ct_geom geom_of(const kiln_node *n, const kiln_shape *x, const kiln_shape *w) {
  ct_geom g;
  resolve(n, NULL, x->rank - 2, &x->dim[2], &w->dim[2], &g);
  return g;
}

static int64_t product(const int64_t *v, int count) {
  int64_t p = 1;
  for (int i = 0; i < count; i++) p *= v[i];
  return p;
}

// Where input position i (flat over g->in) meets kernel tap t (flat over g->kernel): the flat
// output position, or false when the pads cut it off.
static bool scatter_target(const ct_geom *g, int64_t i, int64_t t, int64_t *at) {
  int64_t pos[KILN_MAX_SPATIAL];
  for (int a = g->rank - 1; a >= 0; a--) {
    pos[a] = i % g->in[a] * g->stride[a] - g->pad_begin[a] + t % g->kernel[a] * g->dilation[a];
    if (pos[a] < 0 || pos[a] >= g->out[a]) return false;
    i /= g->in[a], t /= g->kernel[a];
  }
  *at = 0;
  for (int a = 0; a < g->rank; a++) *at = *at * g->out[a] + pos[a];
  return true;
}

// The reference: the scatter form, straight from the definition.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data, *w = in[1].data;
  const double *bias = kiln_has_input(n, 2) ? in[2].data : NULL;
  double *y = out->data;
  int64_t N = in[0].shape->dim[0], C = in[0].shape->dim[1], MG = in[1].shape->dim[1];
  int64_t group = kiln_attr_int(n, "group", 1), CG = C / group, M = MG * group;
  ct_geom g = geom_of(n, in[0].shape, in[1].shape);
  int64_t in_size = product(g.in, g.rank), out_size = product(g.out, g.rank);
  int64_t taps = product(g.kernel, g.rank), at;
  for (int64_t i = 0; i < N * M * out_size; i++) y[i] = bias ? bias[i / out_size % M] : 0;
  for (int64_t b = 0; b < N; b++)
    for (int64_t ic = 0; ic < C; ic++)
      for (int64_t i = 0; i < in_size; i++)
        for (int64_t ocg = 0; ocg < MG; ocg++)
          for (int64_t t = 0; t < taps; t++) {
            if (!scatter_target(&g, i, t, &at)) continue;  // cut by the pads
            int64_t oc = ic / CG * MG + ocg;
            y[(b * M + oc) * out_size + at] +=
                x[(b * C + ic) * in_size + i] * w[(ic * MG + ocg) * taps + t];
          }
}

// t = o + pad_begin - k * dilation: the output position relative to the input grid. It comes from
// input position t / stride when t is a multiple of stride and 0 <= t / stride < in.
static kiln_lexpr *grid_pos(kiln_lb *b, const ct_geom *g, int axis, int o, int k) {
  kiln_lexpr *t = lx_add(b, lx_var(b, o), lx_int(b, g->pad_begin[axis]));
  return lx_bin(b, LB_SUB, t, lx_mul(b, lx_var(b, k), lx_int(b, g->dilation[axis])));
}

// The condition that grid position variable t lands on an input element.
static kiln_lexpr *on_input(kiln_lb *b, const ct_geom *g, int axis, int t) {
  int64_t s = g->stride[axis];
  kiln_lexpr *inside = lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, 0), lx_var(b, t)),
                              lx_bin(b, LB_LT, lx_var(b, t), lx_int(b, g->in[axis] * s)));
  if (s == 1) return inside;
  kiln_lexpr *aligned =
      lx_bin(b, LB_EQ, lx_bin(b, LB_MOD, lx_var(b, t), lx_int(b, s)), lx_int(b, 0));
  return lx_bin(b, LB_AND, inside, aligned);
}

static kiln_lexpr *input_index(kiln_lb *b, const ct_geom *g, int axis, int t) {
  return lx_bin(b, LB_DIV, lx_var(b, t), lx_int(b, g->stride[axis]));
}

// Input channel (oc / (M / group)) * (C / group) + icg; just icg without groups.
static kiln_lexpr *input_channel(kiln_lb *b, int64_t group, int oc, int64_t MG, int icg,
                                 int64_t CG) {
  if (group == 1) return lx_var(b, icg);
  kiln_lexpr *g = lx_bin(b, LB_DIV, lx_var(b, oc), lx_int(b, MG));
  return lx_add(b, lx_mul(b, g, lx_int(b, CG)), lx_var(b, icg));
}

// The lowering gathers instead: each output element sums the window elements that reach it, so
// every store is to one's own element (parallel over n and oc).
//   for n, oc, o...: acc = bias[oc] (or 0)
//     for icg, k[0]: t[0] = o[0] + pad_begin - k[0] * dilation; if t[0] lands on an input element:
//       ... for k[r-1] (likewise): acc += x[n][ic][t / stride ...] * w[ic][ocg][k...]
//     y[n][oc][o...] = acc
typedef struct ct_vars {
  int n, oc, icg, acc;
  int o[KILN_MAX_SPATIAL], k[KILN_MAX_SPATIAL], t[KILN_MAX_SPATIAL];
} ct_vars;

// The kernel loops, each with its grid position and the test that it lands on the input.
static void open_taps(kiln_lb *b, const ct_geom *g, const kiln_shape *w, ct_vars *v) {
  static const char *const k_names[] = {"kd", "kh", "kw"}, *const t_names[] = {"td", "th", "tw"};
  int first = KILN_MAX_SPATIAL - g->rank;
  for (int i = 0; i < g->rank; i++) {
    v->k[i] = kiln_lb_for_n(b, k_names[first + i], w->dim[2 + i]);
    v->t[i] = kiln_lb_decl(b, t_names[first + i], KILN_I64, grid_pos(b, g, i, v->o[i], v->k[i]));
    kiln_lb_if(b, on_input(b, g, i, v->t[i]));
  }
}

// acc += x[n][ic][t / stride ...] * w[ic][ocg][k...]
static void accumulate(const kiln_lower_ctx *c, const ct_geom *g, const ct_vars *v) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1);
  int64_t group = kiln_attr_int(c->node, "group", 1), CG = x->shape.dim[1] / group;
  int64_t MG = w->shape.dim[1];
  kiln_lexpr *pos[KILN_MAX_SPATIAL], *taps[KILN_MAX_SPATIAL];
  for (int i = 0; i < g->rank; i++) {
    pos[i] = input_index(b, g, i, v->t[i]);
    taps[i] = lx_var(b, v->k[i]);
  }
  kiln_lexpr *xi = kiln_lx_ncx(b, lx_var(b, v->n), input_channel(b, group, v->oc, MG, v->icg, CG),
                               &x->shape, pos);
  kiln_lexpr *ocg = lx_var(b, v->oc);
  if (group > 1) ocg = lx_bin(b, LB_MOD, ocg, lx_int(b, MG));
  kiln_lexpr *wi =
      kiln_lx_ncx(b, input_channel(b, group, v->oc, MG, v->icg, CG), ocg, &w->shape, taps);
  kiln_lexpr *prod =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 0), xi), lx_load(b, kiln_in_buf(c, 1), wi));
  kiln_lb_assign(b, v->acc, lx_bin(b, LB_ADD, lx_var(b, v->acc), prod));
}

static void lower(const kiln_lower_ctx *c) {
  static const char *const o_names[] = {"od", "oh", "ow"};
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  bool has_bias = kiln_has_input(c->node, 2);
  ct_geom g = geom_of(c->node, &x->shape, &w->shape);
  kiln_lb_comment(b, "ConvTranspose %s: %s *T %s%s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(w).text, has_bias ? " + bias" : "", kiln_describe(y).text);
  int64_t group = kiln_attr_int(c->node, "group", 1);
  kiln_dtype t = y->dtype;
  ct_vars v;
  v.n = kiln_lb_for_n(b, "n", x->shape.dim[0]);
  v.oc = kiln_lb_for_n(b, "oc", y->shape.dim[1]);
  for (int i = 0; i < g.rank; i++)
    v.o[i] = kiln_lb_for_n(b, o_names[KILN_MAX_SPATIAL - g.rank + i], g.out[i]);
  kiln_lexpr *init = has_bias ? lx_load(b, kiln_in_buf(c, 2), lx_var(b, v.oc)) : lx_float(b, t, 0);
  v.acc = kiln_lb_decl(b, "acc", t, init);
  v.icg = kiln_lb_for_n(b, "icg", x->shape.dim[1] / group);
  open_taps(b, &g, &w->shape, &v);
  accumulate(c, &g, &v);
  for (int i = 0; i < g.rank; i++) {
    kiln_lb_end_if(b);
    kiln_lb_end_for(b);  // a kernel loop
  }
  kiln_lb_end_for(b);  // icg
  kiln_lexpr *pos[KILN_MAX_SPATIAL];
  for (int i = 0; i < g.rank; i++) pos[i] = lx_var(b, v.o[i]);
  kiln_lexpr *yi = kiln_lx_ncx(b, lx_var(b, v.n), lx_var(b, v.oc), &y->shape, pos);
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, lx_var(b, v.acc));
  for (int i = 0; i < g.rank + 2; i++) kiln_lb_end_for(b);  // the output loops, oc, n
}

// 2 * N * C * H * W * (M / group) * kH * kW: every input element meets every kernel element.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *w = &kiln_in(g, n, 1)->shape;
  return 2 * kiln_shape_numel(&kiln_in(g, n, 0)->shape) * (kiln_shape_numel(w) / w->dim[0]);
}

// Gradient (docs/training.md). ConvTranspose is the input-gradient of a Conv taking y back to x
// with the same weights, strides, dilations, group and (resolved) pads, so:
//   dx = Conv(dy, w)                  w read as that Conv's (C, M/group, kH, kW) weights
//   dw = ConvGradFilter(dy, x)        that Conv's filter gradient, with dy as its input
//   dB = dy summed over (N, OH, OW)
// (output_padding < stride, as ONNX requires, makes the Conv's output exactly (H, W)). The Conv
// rejects negative pads (an output_shape beyond the transpose's reach); ConvGradFilter is 2-D.
static bool grad(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int x = n->inputs[0], w = n->inputs[1], dy = c->dy[0];
  if (dy < 0) return true;
  if (!kiln_window_grad_is_2d(c, 0)) return false;
  kiln_shape xs = c->g->tensors[x].shape, ws = c->g->tensors[w].shape;
  ct_geom geom = geom_of(n, &xs, &ws);
  int r = geom.rank;
  int64_t pads[2 * KILN_MAX_SPATIAL];
  for (int i = 0; i < r; i++) pads[i] = geom.pad_begin[i], pads[r + i] = geom.pad_end[i];
  kiln_gb_attr attrs[] = {KILN_GB_INTS("strides", geom.stride, r),
                          KILN_GB_INTS("dilations", geom.dilation, r),
                          KILN_GB_INTS("pads", pads, 2 * r),
                          KILN_GB_INT("group", kiln_attr_int(n, "group", 1)),
                          KILN_GB_INTS("kernel_shape", &ws.dim[2], r),
                          KILN_GB_END};
  if (c->need[0]) {
    int in[2] = {dy, w};
    if ((c->dx[0] = kiln_gb_op(c, "Conv", in, 2, attrs, 1)) < 0) return false;
  }
  if (c->need[1]) {
    int in[2] = {dy, x};
    if ((c->dx[1] = kiln_gb_op(c, "ConvGradFilter", in, 2, attrs, 1)) < 0) return false;
  }
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && c->need[2]) {
    static const int64_t axes[4] = {0, 2, 3, 4};  // N and the spatial axes
    kiln_gb_attr sum[] = {KILN_GB_INTS("axes", axes, xs.rank - 1), KILN_GB_INT("keepdims", 0),
                          KILN_GB_END};
    if ((c->dx[2] = kiln_gb_op(c, "ReduceSum", &dy, 1, sum, 1)) < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_ConvTranspose = {
    .name = "ConvTranspose",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},  // as Conv: f32 sums of at most C/group * kH * kW products
    .grad = grad,
};

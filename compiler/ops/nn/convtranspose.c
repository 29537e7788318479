// ConvTranspose (2-D, ONNX): the transpose (gradient) of Conv. Each input element scatters
// x[n][ic][ih][iw] * w[ic][ocg][kh][kw] into the output at
//   oh = ih * stride - pad_begin + kh * dilation   (likewise ow), kept when 0 <= oh < OH,
// plus the bias B[oc] everywhere.
//   x: (N, C, H, W)   w: (C, M / group, kH, kW)   B: (M), optional   y: (N, M, OH, OW)
// Input channel ic belongs to group g = ic / (C / group) and feeds output channels
// oc = g * (M / group) + ocg. Output size along an axis (ONNX):
//   OH = stride * (H - 1) + output_padding + (kH - 1) * dilation + 1 - pad_begin - pad_end
// With output_shape (or auto_pad SAME_UPPER / SAME_LOWER, whose output is H * stride), the pads
// are derived: total = stride * (H - 1) + output_padding + (kH - 1) * dilation + 1 - OH, split as
// pad_begin = total / 2 (SAME_UPPER) or total - total / 2 (otherwise). A negative total (an
// output larger than the transpose covers) is rejected.
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
  int64_t in[2], kernel[2], stride[2], dilation[2], out_pad[2];
  int64_t pad_begin[2], pad_end[2];
  int64_t out[2];
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

// Pads for a requested output size `want` along axis.
static bool pads_for_output(const kiln_node *n, kiln_diag *d, pad_mode mode, int axis, int64_t want,
                            ct_geom *g) {
  int64_t total = natural_size(g, axis) - want;
  if (total < 0) {
    kiln_op_error(d, n,
                  "attrs.%s: an output size of %lld along %s exceeds the %lld the transpose "
                  "covers (use output_padding to extend it)",
                  mode == PAD_NOTSET ? "output_shape" : "auto_pad", (long long)want,
                  axis == 0 ? "H" : "W", (long long)natural_size(g, axis));
    return false;
  }
  g->pad_begin[axis] = mode == PAD_SAME_UPPER ? total / 2 : total - total / 2;
  g->pad_end[axis] = total - g->pad_begin[axis];
  g->out[axis] = want;
  return true;
}

static bool read_geom_attrs(const kiln_node *n, kiln_diag *d, int64_t pads[4], int64_t out_shape[2],
                            bool *has_out_shape, pad_mode *mode, ct_geom *g) {
  bool ok = kiln_op_read_ints(n, d, "strides", 2, KILN_INTS_POSITIVE, g->stride);
  ok &= kiln_op_read_ints(n, d, "dilations", 2, KILN_INTS_POSITIVE, g->dilation);
  ok &= kiln_op_read_ints(n, d, "output_padding", 2, KILN_INTS_NONNEGATIVE, g->out_pad);
  ok &= kiln_op_read_ints(n, d, "pads", 4, KILN_INTS_NONNEGATIVE, pads);
  ok &= kiln_op_read_ints(n, d, "output_shape", 2, KILN_INTS_POSITIVE, out_shape);
  ok &= read_pad_mode(n, d, mode);
  *has_out_shape = kiln_node_attr(n, "output_shape") != NULL;
  if (ok && *mode != PAD_NOTSET && (pads[0] || pads[1] || pads[2] || pads[3])) {
    kiln_op_error(d, n, "attrs.pads: must be absent or zero when auto_pad is %s",
                  kiln_attr_string(n, "auto_pad", ""));
    return false;
  }
  return ok;
}

// Resolves strides, dilations, pads, output_padding, output_shape and auto_pad for spatial input
// size in[2] and kernel[2]. d may be NULL (after infer has checked).
static bool resolve(const kiln_node *n, kiln_diag *d, const int64_t in[2], const int64_t kernel[2],
                    ct_geom *g) {
  *g = (ct_geom){
      .in = {in[0], in[1]}, .kernel = {kernel[0], kernel[1]}, .stride = {1, 1}, .dilation = {1, 1}};
  int64_t pads[4] = {0, 0, 0, 0}, out_shape[2] = {0, 0};
  bool has_out_shape;
  pad_mode mode;
  if (!read_geom_attrs(n, d, pads, out_shape, &has_out_shape, &mode, g)) return false;
  for (int axis = 0; axis < 2; axis++) {
    if (has_out_shape || mode == PAD_SAME_UPPER || mode == PAD_SAME_LOWER) {
      int64_t want = has_out_shape ? out_shape[axis] : in[axis] * g->stride[axis];
      if (!pads_for_output(n, d, mode, axis, want, g)) return false;
      continue;
    }
    if (mode == PAD_NOTSET) g->pad_begin[axis] = pads[axis], g->pad_end[axis] = pads[axis + 2];
    g->out[axis] = natural_size(g, axis) - g->pad_begin[axis] - g->pad_end[axis];
    if (g->out[axis] < 1) {
      kiln_op_error(d, n, "attrs.pads: they remove all %lld output positions along %s",
                    (long long)natural_size(g, axis), axis == 0 ? "H" : "W");
      return false;
    }
  }
  return true;
}

static bool check_rank4(const kiln_node *n, kiln_diag *d, int i, const kiln_tensor *t,
                        const char *layout) {
  if (t->shape.rank == 4) return true;
  kiln_op_error(d, n,
                "inputs[%d] (%s): expected a 4-D tensor %s (only 2-D ConvTranspose is "
                "supported), got %s",
                i, t->name, layout, kiln_shape_text(&t->shape).text);
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
  int64_t kernel[2];
  bool present;
  if (!kiln_window_kernel_attr(n, d, false, kernel, &present)) return false;
  if (present && (kernel[0] != w->shape.dim[2] || kernel[1] != w->shape.dim[3])) {
    char got[64];
    kiln_op_error(d, n, "attrs.kernel_shape: expected [%lld, %lld] (the dims of %s), got %s",
                  (long long)w->shape.dim[2], (long long)w->shape.dim[3], kiln_describe(w).text,
                  kiln_ints_str(kernel, 2, got, sizeof got));
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int nin = kiln_in(g, n, 2) ? 3 : 2;
  if (!kiln_op_check_float_inputs(g, n, nin, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  if (!check_rank4(n, d, 0, x, "(N, C, H, W)") || !check_rank4(n, d, 1, w, "(C, M/group, kH, kW)"))
    return false;
  int64_t group;
  if (!kiln_op_read_int(n, d, "group", 1, 1, INT64_MAX, &group)) return false;
  if (!check_weights(g, n, d, group)) return false;
  ct_geom geom;
  if (!resolve(n, d, &x->shape.dim[2], &w->shape.dim[2], &geom)) return false;
  // out: (N, M, OH, OW)
  kiln_shape out = {.rank = 4,
                    .dim = {x->shape.dim[0], w->shape.dim[1] * group, geom.out[0], geom.out[1]}};
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static ct_geom geom_of(const kiln_node *n, const kiln_shape *x, const kiln_shape *w) {
  ct_geom g;
  resolve(n, NULL, &x->dim[2], &w->dim[2], &g);
  return g;
}

// The reference: the scatter form, straight from the definition.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data, *w = in[1].data;
  const double *bias = kiln_has_input(n, 2) ? in[2].data : NULL;
  double *y = out->data;
  const int64_t *xd = in[0].shape->dim, *wd = in[1].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3];
  int64_t MG = wd[1], KH = wd[2], KW = wd[3];
  int64_t group = kiln_attr_int(n, "group", 1), CG = C / group, M = MG * group;
  ct_geom g = geom_of(n, in[0].shape, in[1].shape);
  int64_t OH = g.out[0], OW = g.out[1];
  for (int64_t i = 0; i < N * M * OH * OW; i++) y[i] = bias ? bias[i / (OH * OW) % M] : 0;
  for (int64_t b = 0; b < N; b++)
    for (int64_t ic = 0; ic < C; ic++)
      for (int64_t ih = 0; ih < H; ih++)
        for (int64_t iw = 0; iw < W; iw++)
          for (int64_t ocg = 0; ocg < MG; ocg++)
            for (int64_t kh = 0; kh < KH; kh++)
              for (int64_t kw = 0; kw < KW; kw++) {
                int64_t oh = ih * g.stride[0] - g.pad_begin[0] + kh * g.dilation[0];
                int64_t ow = iw * g.stride[1] - g.pad_begin[1] + kw * g.dilation[1];
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;  // cut by the pads
                int64_t oc = ic / CG * MG + ocg;
                y[((b * M + oc) * OH + oh) * OW + ow] +=
                    x[((b * C + ic) * H + ih) * W + iw] * w[((ic * MG + ocg) * KH + kh) * KW + kw];
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
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  bool has_bias = kiln_has_input(c->node, 2);
  ct_geom g = geom_of(c->node, &x->shape, &w->shape);
  kiln_lb_comment(b, "ConvTranspose %s: %s *T %s%s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(w).text, has_bias ? " + bias" : "", kiln_describe(y).text);
  const int64_t *xd = x->shape.dim, *wd = w->shape.dim;
  int64_t group = kiln_attr_int(c->node, "group", 1), CG = xd[1] / group, MG = wd[1];
  kiln_dtype t = y->dtype;
  int n = kiln_lb_for_n(b, "n", xd[0]);
  int oc = kiln_lb_for_n(b, "oc", y->shape.dim[1]);
  int oh = kiln_lb_for_n(b, "oh", g.out[0]);
  int ow = kiln_lb_for_n(b, "ow", g.out[1]);
  kiln_lexpr *init = has_bias ? lx_load(b, kiln_in_buf(c, 2), lx_var(b, oc)) : lx_float(b, t, 0);
  int acc = kiln_lb_decl(b, "acc", t, init);
  int icg = kiln_lb_for_n(b, "icg", CG);
  int kh = kiln_lb_for_n(b, "kh", wd[2]);
  int th = kiln_lb_decl(b, "th", KILN_I64, grid_pos(b, &g, 0, oh, kh));
  kiln_lb_if(b, on_input(b, &g, 0, th));
  int kw = kiln_lb_for_n(b, "kw", wd[3]);
  int tw = kiln_lb_decl(b, "tw", KILN_I64, grid_pos(b, &g, 1, ow, kw));
  kiln_lb_if(b, on_input(b, &g, 1, tw));
  kiln_lexpr *xi = kiln_lx_nchw(b, lx_var(b, n), input_channel(b, group, oc, MG, icg, CG), xd,
                                input_index(b, &g, 0, th), input_index(b, &g, 1, tw));
  kiln_lexpr *ocg = lx_var(b, oc);
  if (group > 1) ocg = lx_bin(b, LB_MOD, ocg, lx_int(b, MG));
  kiln_lexpr *wi = kiln_lx_nchw(b, input_channel(b, group, oc, MG, icg, CG), ocg, wd, lx_var(b, kh),
                                lx_var(b, kw));
  kiln_lexpr *prod =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 0), xi), lx_load(b, kiln_in_buf(c, 1), wi));
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), prod));
  kiln_lb_end_if(b);
  kiln_lb_end_for(b);  // kw
  kiln_lb_end_if(b);
  kiln_lb_end_for(b);  // kh
  kiln_lb_end_for(b);  // icg
  kiln_lexpr *yi =
      kiln_lx_nchw(b, lx_var(b, n), lx_var(b, oc), y->shape.dim, lx_var(b, oh), lx_var(b, ow));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, lx_var(b, acc));
  for (int i = 0; i < 4; i++) kiln_lb_end_for(b);  // ow, oh, oc, n
}

// 2 * N * C * H * W * (M / group) * kH * kW: every input element meets every kernel element.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *w = &kiln_in(g, n, 1)->shape;
  return 2 * kiln_shape_numel(&kiln_in(g, n, 0)->shape) * w->dim[1] * w->dim[2] * w->dim[3];
}

// Gradient (docs/training.md). ConvTranspose is the input-gradient of a Conv taking y back to x
// with the same weights, strides, dilations, group and (resolved) pads, so:
//   dx = Conv(dy, w)                  w read as that Conv's (C, M/group, kH, kW) weights
//   dw = ConvGradFilter(dy, x)        that Conv's filter gradient, with dy as its input
//   dB = dy summed over (N, OH, OW)
// (output_padding < stride, as ONNX requires, makes the Conv's output exactly (H, W)).
static bool grad(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int x = n->inputs[0], w = n->inputs[1], dy = c->dy[0];
  if (dy < 0) return true;
  kiln_shape xs = c->g->tensors[x].shape, ws = c->g->tensors[w].shape;
  ct_geom geom = geom_of(n, &xs, &ws);
  int64_t pads[4] = {geom.pad_begin[0], geom.pad_begin[1], geom.pad_end[0], geom.pad_end[1]};
  int64_t kernel[2] = {ws.dim[2], ws.dim[3]};
  kiln_gb_attr attrs[] = {
      KILN_GB_INTS("strides", geom.stride, 2), KILN_GB_INTS("dilations", geom.dilation, 2),
      KILN_GB_INTS("pads", pads, 4),           KILN_GB_INT("group", kiln_attr_int(n, "group", 1)),
      KILN_GB_INTS("kernel_shape", kernel, 2), KILN_GB_END};
  if (c->need[0]) {
    int in[2] = {dy, w};
    if ((c->dx[0] = kiln_gb_op(c, "Conv", in, 2, attrs, 1)) < 0) return false;
  }
  if (c->need[1]) {
    int in[2] = {dy, x};
    if ((c->dx[1] = kiln_gb_op(c, "ConvGradFilter", in, 2, attrs, 1)) < 0) return false;
  }
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && c->need[2]) {
    static const int64_t axes[3] = {0, 2, 3};
    kiln_gb_attr sum[] = {KILN_GB_INTS("axes", axes, 3), KILN_GB_INT("keepdims", 0), KILN_GB_END};
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

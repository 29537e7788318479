// Conv (ONNX; 1-D, 2-D or 3-D): y = x (*) w + b with groups, strides, pads, dilations, auto_pad.
//   x: (N, C, H, W)   w: (M, C / group, kH, kW)   b: (M), optional   y: (N, M, OH, OW)
// (1-D drops H, 3-D adds a leading D to every spatial part.) Output channel oc belongs to group
// g = oc / (M / group) and reads input channels [g * C/group, (g + 1) * C/group). Window logic
// (pads, output size) is shared with the pools in pool.c. 2-D convs have four lowerings (rows
// accumulated in place; a register-blocked kernel; a depthwise one, in conv_depthwise.c; Winograd
// F(2x2, 3x3) for a FusedConv with algo "winograd", in conv_winograd.c), 1-D and 3-D ones a
// generic gather (or the blocked kernel, 1-D as 2-D).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../autodiff/builder.h"
#include "../../target.h"
#include "../op_internal.h"
#include "conv_internal.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = false};

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, false},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

// x and w: (N, C, spatial...) and (M, C/group, kernel...) with 1 to 3 spatial axes, equal ranks.
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
                "inputs[1] (%s): expected a %d-D tensor (M, C/group and the %d kernel axes, as x "
                "%s), got %s",
                w->name, x->shape.rank, x->shape.rank - 2, kiln_shape_text(&x->shape).text,
                kiln_shape_text(&w->shape).text);
  return false;
}

// Checks w against x and group, and the bias against w.
static bool check_weights(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t group) {
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1), *bias = kiln_in(g, n, 2);
  int64_t C = x->shape.dim[1], M = w->shape.dim[0];
  if (C % group != 0 || M % group != 0) {
    kiln_op_error(d, n,
                  "attrs.group: %lld must divide the input channels (%lld) and the output "
                  "channels (%lld)",
                  (long long)group, (long long)C, (long long)M);
    return false;
  }
  if (w->shape.dim[1] != C / group) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): expected %lld input channels per group (dim 1; C = %lld, "
                  "group = %lld), got %s",
                  w->name, (long long)(C / group), (long long)C, (long long)group,
                  kiln_shape_text(&w->shape).text);
    return false;
  }
  if (bias && (bias->shape.rank != 1 || bias->shape.dim[0] != M)) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): expected shape (%lld) (one bias per output channel), got %s",
                  bias->name, (long long)M, kiln_shape_text(&bias->shape).text);
    return false;
  }
  return true;
}

// kernel_shape, when given, must match w's spatial dims.
static bool check_kernel_attr(const kiln_node *n, kiln_diag *d, const kiln_tensor *w) {
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
  if (!check_weights(g, n, d, group) || !check_kernel_attr(n, d, w)) return false;
  kiln_window win;
  int rank = x->shape.rank - 2;
  if (!kiln_window_resolve_nd(n, d, rank, &x->shape.dim[2], &w->shape.dim[2], opts, &win))
    return false;
  kiln_shape out = x->shape;  // out: (N, M, OD..., OH, OW)
  out.dim[1] = w->shape.dim[0];
  for (int i = 0; i < rank; i++) out.dim[2 + i] = win.out[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static kiln_window conv_window(const kiln_node *n, const kiln_shape *x, const kiln_shape *w) {
  kiln_window win;
  kiln_window_resolve_nd(n, NULL, x->rank - 2, &x->dim[2], &w->dim[2], opts, &win);
  return win;
}

// The reference, straight from the definition: per output element, the sum over the input
// channels of its group and the window taps, padding (kiln_window_tap false) being zero.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data, *w = in[1].data;
  const double *bias = kiln_has_input(n, 2) ? in[2].data : NULL;
  const int64_t *xd = in[0].shape->dim, *wd = in[1].shape->dim;
  int64_t N = xd[0], C = xd[1], M = wd[0], CG = wd[1];
  int64_t group = kiln_attr_int(n, "group", 1), MG = M / group;
  kiln_window win = conv_window(n, in[0].shape, in[1].shape);
  int64_t in_size = kiln_window_in_size(&win), out_size = kiln_window_out_size(&win);
  int64_t taps = kiln_window_taps(&win), at;
  for (int64_t b = 0; b < N; b++)
    for (int64_t oc = 0; oc < M; oc++)
      for (int64_t o = 0; o < out_size; o++) {
        double sum = bias ? bias[oc] : 0;
        for (int64_t ic = 0; ic < CG; ic++) {
          int64_t c = oc / MG * CG + ic;
          for (int64_t t = 0; t < taps; t++)
            if (kiln_window_tap(&win, o, t, &at))
              sum += x[(b * C + c) * in_size + at] * w[(oc * CG + ic) * taps + t];
        }
        out->data[(b * M + oc) * out_size + o] = sum;
      }
}

// ---- Lowering ----
// Output rows are accumulated in place, the innermost loop running over output columns (unit
// stride in y, and in x when stride_w == 1):
//   for n, oc, oh [kh range]:
//     y[n][oc][oh][:] = bias[oc] (or 0)
//     for ic, kh, kw [ow range of kw]: wv = w[oc][ic][kh][kw]
//       for ow: y[n][oc][oh][ow] += wv * x[n][c][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw]
// Each element still sums bias, then ic, kh, kw in order, as eval does.

typedef struct conv_vars {
  int n, oc, oh, ic, kh, kw;
} conv_vars;

// y[n][oc][oh][ow] as an index expression.
static kiln_lexpr *out_index(kiln_lb *b, const conv_vars *v, const int64_t yd[4], int ow) {
  return kiln_lx_nchw(b, lx_var(b, v->n), lx_var(b, v->oc), yd, lx_var(b, v->oh), lx_var(b, ow));
}

// for ow in [0, OW): y[n][oc][oh][ow] = bias[oc] (or 0)
static void init_row(const kiln_lower_ctx *c, const conv_vars *v, const int64_t yd[4]) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int ow = kiln_lb_for_n(b, "ow", yd[3]);
  kiln_lexpr *init = kiln_has_input(c->node, 2) ? lx_load(b, kiln_in_buf(c, 2), lx_var(b, v->oc))
                                                : lx_float(b, t, 0);
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index(b, v, yd, ow), init);
  kiln_lb_end_for(b);
}

// Input channel of (oc, ic): (oc / (M / group)) * (C / group) + ic; just ic without groups.
static kiln_lexpr *input_channel(kiln_lb *b, const conv_vars *v, int64_t group, int64_t MG,
                                 int64_t CG) {
  kiln_lexpr *channel = lx_var(b, v->ic);
  if (group == 1) return channel;
  kiln_lexpr *g = lx_bin(b, LB_DIV, lx_var(b, v->oc), lx_int(b, MG));
  return lx_add(b, lx_mul(b, g, lx_int(b, CG)), channel);
}

// Inside the kw loop: wv = w[oc][ic][kh][kw]; for ow in range: y[..][ow] += wv * x[..].
static void accumulate_row(const kiln_lower_ctx *c, const conv_vars *v, const kiln_window *win) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  const int64_t *xd = x->shape.dim, *wd = w->shape.dim;
  int64_t group = kiln_attr_int(c->node, "group", 1), MG = wd[0] / group, CG = wd[1];
  kiln_lexpr *lo, *hi;
  kiln_window_lower_cols(b, win, 1, v->kw, "ow", &lo, &hi);
  kiln_lexpr *wi =
      kiln_lx_nchw(b, lx_var(b, v->oc), lx_var(b, v->ic), wd, lx_var(b, v->kh), lx_var(b, v->kw));
  int wv = kiln_lb_decl(b, "wv", y->dtype, lx_load(b, kiln_in_buf(c, 1), wi));
  int ow = kiln_lb_for(b, "ow", lo, hi);
  kiln_lexpr *xi = kiln_lx_nchw(b, lx_var(b, v->n), input_channel(b, v, group, MG, CG), xd,
                                kiln_window_lower_pos(b, win, 0, v->oh, v->kh),
                                kiln_window_lower_pos(b, win, 1, ow, v->kw));
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, wv), lx_load(b, kiln_in_buf(c, 0), xi));
  int out = kiln_out_buf(c, 0);
  kiln_lexpr *sum = lx_bin(b, LB_ADD, lx_load(b, out, out_index(b, v, y->shape.dim, ow)), prod);
  kiln_lb_store(b, out, out_index(b, v, y->shape.dim, ow), sum);
  kiln_lb_end_for(b);
}

// The reference lowering (any group, dtype or weight), epilogue excluded.
static void lower_rows(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  kiln_window win = conv_window(c->node, &x->shape, &w->shape);
  const int64_t *wd = w->shape.dim, *yd = y->shape.dim;
  conv_vars v;
  v.n = kiln_lb_for_n(b, "n", yd[0]);
  v.oc = kiln_lb_for_n(b, "oc", yd[1]);
  v.oh = kiln_lb_for_n(b, "oh", yd[2]);
  kiln_krange rh = kiln_window_lower_range(b, &win, 0, v.oh, "kh");
  init_row(c, &v, yd);
  v.ic = kiln_lb_for_n(b, "ic", wd[1]);
  v.kh = kiln_lb_for(b, "kh", kiln_krange_lo(b, &rh), kiln_krange_hi(b, &rh));
  v.kw = kiln_lb_for_n(b, "kw", wd[3]);
  accumulate_row(c, &v, &win);
  for (int i = 0; i < 6; i++) kiln_lb_end_for(b);  // kw, kh, ic, oh, oc, n
}

// ---- FusedConv's epilogue: y = act(conv + z) ----

static bool has_residual(const kiln_node *n) { return kiln_has_input(n, 3); }
static bool has_activation(const kiln_node *n, const char *name) {
  return strcmp(kiln_attr_string(n, "activation", ""), name) == 0;
}
static bool has_relu(const kiln_node *n) { return has_activation(n, "Relu"); }
static bool has_clip(const kiln_node *n) { return has_activation(n, "Clip"); }

// The node's activation attribute `<prefix>activation` ("Relu", "Clip" or none) and, for Clip,
// its bounds `<prefix>activation_params` = [min, max]. FusedConv's prefix is ""; the fused
// expansion (expand_depthwise.c) also has "expand_".
static const char *activation(const kiln_node *n, const char *prefix, const double **bounds) {
  char name[64];
  snprintf(name, sizeof name, "%sactivation", prefix);
  const char *act = kiln_attr_string(n, name, "");
  strncat(name, "_params", sizeof name - strlen(name) - 1);
  const kiln_attr *p = kiln_node_attr(n, name);
  *bounds = p && p->count == 2 ? p->floats : NULL;
  return act;
}

bool kiln_conv_check_activation(const kiln_node *n, kiln_diag *d, const char *prefix) {
  const double *bounds;
  const char *act = activation(n, prefix, &bounds);
  if (*act && strcmp(act, "Relu") != 0 && strcmp(act, "Clip") != 0) {
    kiln_op_error(d, n,
                  "attrs.%sactivation: expected \"Relu\", \"Clip\" (or no activation), got \"%s\"",
                  prefix, act);
    return false;
  }
  char params[64];
  snprintf(params, sizeof params, "%sactivation_params", prefix);
  if ((strcmp(act, "Clip") == 0) != (kiln_node_attr(n, params) != NULL) ||
      (kiln_node_attr(n, params) && !bounds)) {
    kiln_op_error(d, n, "attrs.%s: expected [min, max] with activation \"Clip\" (and only then)",
                  params);
    return false;
  }
  return true;
}

double kiln_conv_activate_value(const kiln_node *n, const char *prefix, double v) {
  const double *bounds;
  const char *act = activation(n, prefix, &bounds);
  if (strcmp(act, "Relu") == 0) return v < 0 ? 0 : v;
  return bounds && strcmp(act, "Clip") == 0 ? fmin(fmax(v, bounds[0]), bounds[1]) : v;
}

// Clip is max then min, as the Clip op computes it.
kiln_lexpr *kiln_conv_activate(kiln_lb *b, const kiln_node *n, const char *prefix, kiln_lexpr *v) {
  const double *bounds;
  const char *act = activation(n, prefix, &bounds);
  if (strcmp(act, "Relu") == 0) return lx_bin(b, LB_MAX, v, lx_float(b, v->dtype, 0));
  if (!bounds || strcmp(act, "Clip") != 0) return v;
  v = lx_bin(b, LB_MAX, v, lx_float(b, v->dtype, bounds[0]));
  return lx_bin(b, LB_MIN, v, lx_float(b, v->dtype, bounds[1]));
}

// act(v + z[index]): the epilogue applied to one output value (v itself for a plain Conv).
kiln_lexpr *kiln_conv_epilogue(const kiln_lower_ctx *c, kiln_lexpr *v, kiln_lexpr *index) {
  kiln_lb *b = c->b;
  if (has_residual(c->node)) v = lx_bin(b, LB_ADD, v, lx_load(b, kiln_in_buf(c, 3), index));
  return kiln_conv_activate(b, c->node, "", v);
}

// After lower_rows: y[i] = act(y[i] + z[i]) in a second pass.
static void lower_epilogue_pass(const kiln_lower_ctx *c) {
  if (!has_residual(c->node) && !*kiln_attr_string(c->node, "activation", "")) return;
  kiln_lb *b = c->b;
  int out = kiln_out_buf(c, 0);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&kiln_lower_out(c, 0)->shape));
  kiln_lb_store(b, out, lx_var(b, i),
                kiln_conv_epilogue(c, lx_load(b, out, lx_var(b, i)), lx_var(b, i)));
  kiln_lb_end_for(b);
}

// ---- The generic lowering (1-D and 3-D): one gather per output element ----
//   for n, oc, o[0] [k[0] range], ..., o[r-1] [k[r-1] range]:
//     acc = bias[oc] (or 0)
//     for ic, k[0] ... k[r-1]: acc += w[oc][ic][k...] * x[n][c][o*s - p + k*d ...]
//     y[n][oc][o...] = epilogue(acc)
// The kernel ranges are clamped to the input (kiln_window_lower_range): no padding checks.

typedef struct gather_vars {
  int n, oc, ic, acc;
  int o[KILN_MAX_SPATIAL], k[KILN_MAX_SPATIAL];
  kiln_krange range[KILN_MAX_SPATIAL];
} gather_vars;

// for n, oc, o...: the output loops, each spatial one followed by its kernel range.
static void gather_open_outputs(const kiln_lower_ctx *c, const kiln_window *win, gather_vars *v) {
  static const char *const o_names[] = {"od", "oh", "ow"}, *const k_names[] = {"kd", "kh", "kw"};
  kiln_lb *b = c->b;
  const int64_t *yd = kiln_lower_out(c, 0)->shape.dim;
  int first = KILN_MAX_SPATIAL - win->rank;
  v->n = kiln_lb_for_n(b, "n", yd[0]);
  v->oc = kiln_lb_for_n(b, "oc", yd[1]);
  for (int i = 0; i < win->rank; i++) {
    v->o[i] = kiln_lb_for_n(b, o_names[first + i], win->out[i]);
    v->range[i] = kiln_window_lower_range(b, win, i, v->o[i], k_names[first + i]);
  }
}

// acc += w[oc][ic][k...] * x[n][c][pos...], inside the ic and kernel loops.
static void gather_tap(const kiln_lower_ctx *c, const kiln_window *win, const gather_vars *v) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1);
  int64_t group = kiln_attr_int(c->node, "group", 1), MG = w->shape.dim[0] / group;
  kiln_lexpr *pos[KILN_MAX_SPATIAL], *taps[KILN_MAX_SPATIAL];
  for (int i = 0; i < win->rank; i++) {
    pos[i] = kiln_window_lower_pos(b, win, i, v->o[i], v->k[i]);
    taps[i] = lx_var(b, v->k[i]);
  }
  kiln_lexpr *channel = lx_var(b, v->ic);
  if (group > 1)
    channel = lx_add(
        b,
        lx_mul(b, lx_bin(b, LB_DIV, lx_var(b, v->oc), lx_int(b, MG)), lx_int(b, w->shape.dim[1])),
        channel);
  kiln_lexpr *xi = kiln_lx_ncx(b, lx_var(b, v->n), channel, &x->shape, pos);
  kiln_lexpr *wi = kiln_lx_ncx(b, lx_var(b, v->oc), lx_var(b, v->ic), &w->shape, taps);
  kiln_lexpr *prod =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 1), wi), lx_load(b, kiln_in_buf(c, 0), xi));
  kiln_lb_assign(b, v->acc, lx_bin(b, LB_ADD, lx_var(b, v->acc), prod));
}

static void lower_gather(const kiln_lower_ctx *c) {
  static const char *const k_names[] = {"kd", "kh", "kw"};
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  kiln_window win = conv_window(c->node, &x->shape, &w->shape);
  int first = KILN_MAX_SPATIAL - win.rank;
  gather_vars v;
  gather_open_outputs(c, &win, &v);
  kiln_lexpr *init = kiln_has_input(c->node, 2) ? lx_load(b, kiln_in_buf(c, 2), lx_var(b, v.oc))
                                                : lx_float(b, y->dtype, 0);
  v.acc = kiln_lb_decl(b, "acc", y->dtype, init);
  v.ic = kiln_lb_for_n(b, "ic", w->shape.dim[1]);
  for (int i = 0; i < win.rank; i++)
    v.k[i] = kiln_lb_for(b, k_names[first + i], kiln_krange_lo(b, &v.range[i]),
                         kiln_krange_hi(b, &v.range[i]));
  gather_tap(c, &win, &v);
  for (int i = 0; i < win.rank + 1; i++) kiln_lb_end_for(b);  // the kernel loops, ic
  kiln_lexpr *pos[KILN_MAX_SPATIAL], *pos2[KILN_MAX_SPATIAL];
  for (int i = 0; i < win.rank; i++) pos[i] = lx_var(b, v.o[i]), pos2[i] = lx_var(b, v.o[i]);
  kiln_lexpr *yi = kiln_lx_ncx(b, lx_var(b, v.n), lx_var(b, v.oc), &y->shape, pos);
  kiln_lexpr *yi2 = kiln_lx_ncx(b, lx_var(b, v.n), lx_var(b, v.oc), &y->shape, pos2);
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, kiln_conv_epilogue(c, lx_var(b, v.acc), yi2));
  for (int i = 0; i < win.rank + 2; i++) kiln_lb_end_for(b);  // the output loops, oc, n
}

// ---- The blocked lowering: a register-blocked direct convolution ----
// For 1-D and 2-D convs with group 1, f32, constant weights. Output channels are vectorized at the
// target's f32 width L (16 for AVX-512, 8 for AVX2, 4 for generic; below written as 16): the
// weights are packed at compile time to (ceil(M/16), C, kH, kW, 16), zero past M, so 16 consecutive
// output channels of one (ic, kh, kw) are contiguous. A tile of RO x 16 channels by RW output
// columns keeps its RW * RO * 16 sums in a local array (vector registers once the j and r loops are
// unrolled):
//   for n, ob (parallel), oh, tiles of RW columns at ow0:
//     for ic, kh, kw, j (unrolled): xv = xp[n][ic][oh*sh + kh*dh][(ow0 + j)*sw + kw*dw]
//       for r (unrolled), l (vectorized): acc[j][r][l] = muladd(xv, wp[ob*RO + r][ic][kh][kw][l],
//       acc[j][r][l])   (at the first tap, ic = kh = kw = 0: bias[(ob*RO + r)*16 + l] for acc)
//     y[n][(ob*RO + r)*16 + l][oh][ow0 + j] = epilogue(acc[j][r][l])
// xp is x copied into zeroed scratch with the padding made explicit (x itself without padding), so
// the inner loops have no bounds. A 1x1, stride-1, unpadded conv runs over its flattened spatial
// dims as one row: a GEMM over channels; a strided unpadded one reads x at its stride in place.

typedef kiln_conv_plan conv_plan;  // conv_internal.h

// ---- Channel-blocked layout (NCHWc: the select-layout pass, compiler/passes/select_layout.c) ----
// A FusedConv with layout = "NCHWc" reads x as (N, C / L, H, W, L) and writes y (and reads the
// residual z) as (N, M / L, OH, OW, L), L = `lanes`, C and M multiples of L: a tile's L output
// channels then sit next to each other in memory and are stored as one vector. `input_layout`
// ("NCHW" or "NCHWc"; `layout` when absent) sets x's layout apart from y's, for convolutions
// whose C or M is no multiple of L at a chain's border: a planar x costs the tiles nothing (they
// broadcast one x value at a time either way), a planar y is stored as the planar kernel does.

static int64_t lanes_if_blocked(const kiln_node *n, const char *layout) {
  return strcmp(layout, "NCHWc") == 0 ? kiln_attr_int(n, "lanes", 0) : 0;
}
// The lanes of y's (and z's) layout; 0: NCHW.
static int64_t out_lanes(const kiln_node *n) {
  return lanes_if_blocked(n, kiln_attr_string(n, "layout", "NCHW"));
}
// The lanes of x's layout; 0: NCHW.
static int64_t in_lanes(const kiln_node *n) {
  return lanes_if_blocked(
      n, kiln_attr_string(n, "input_layout", kiln_attr_string(n, "layout", "NCHW")));
}

int64_t kiln_conv_blocked_lanes(const kiln_node *n) {
  return out_lanes(n) ? out_lanes(n) : in_lanes(n);
}

// The same as an expression, from the plane nc = n * C + c and the position hw in it:
// ((nc / L) * HW + hw) * L + nc % L (C a multiple of L).
static kiln_lexpr *lx_blocked(kiln_lb *b, kiln_lexpr *nc, int64_t HW, kiln_lexpr *hw, int64_t L) {
  kiln_lexpr *block = lx_bin(b, LB_DIV, nc, lx_int(b, L));
  kiln_lexpr *lane = lx_bin(b, LB_MOD, kiln_lx_clone(b, nc), lx_int(b, L));
  return lx_madd(b, lx_madd(b, block, HW, hw), L, lane);
}

// Weights known at compile time are packed then (derived weights); others (training: state the
// optimizer updates) by a packing loop at the start of the kernel.
static bool constant_weights(const kiln_lower_ctx *c) {
  const kiln_tensor *w = kiln_lower_in(c, 1);
  const kiln_tensor *bias = kiln_has_input(c->node, 2) ? kiln_lower_in(c, 2) : NULL;
  return w->kind == KILN_TENSOR_PARAM && w->data &&
         (!bias || (bias->kind == KILN_TENSOR_PARAM && bias->data));
}

// The target's f32 vector width (16 unless the target says otherwise).
static int64_t target_lanes(const kiln_lower_ctx *c) {
  return c->f32_lanes > 0 ? c->f32_lanes : 16;
}

// Grouped convolutions too, when each group's output channels fill whole vectors (AlexNet's);
// depthwise ones have their own lowering.
static bool blocked_applies(const kiln_lower_ctx *c) {
  int64_t group = kiln_attr_int(c->node, "group", 1), M = kiln_lower_in(c, 1)->shape.dim[0];
  bool whole_vectors = group == 1 || (M / group) % target_lanes(c) == 0;
  return whole_vectors && kiln_lower_in(c, 1)->dtype == KILN_F32;
}

// Columns per tile: the largest width with at most max_acc accumulators that divides OW, else the
// largest width (a narrower tail tile takes the rest).
int64_t kiln_conv_tile_width(int64_t OW, int64_t RO, int64_t max_acc) {
  int64_t most = max_acc / RO;
  if (OW <= most) return OW;
  for (int64_t rw = most; rw >= most / 2; rw--)
    if (OW % rw == 0) return rw;
  return most;
}

// Columns of a 1x1 conv's tile of RO channel vectors: its RO * RW accumulators, the RO weight
// vectors of a tap and the broadcast x value all stay in the register file (max_acc + 4 vectors:
// 32 on AVX-512). 4 x 7 needs 33: the C compiler kept two accumulators on the stack, and 4 x 6
// ran 4-9 % faster on MobileNet-V2's 1x1 shapes (docs/performance.md, session 11).
static int64_t pointwise_columns(int64_t RO, int64_t max_acc) {
  int64_t regs = (max_acc + 4 - RO - 1) / RO, most = max_acc / RO;
  return regs < most ? regs : most;
}

// Output-channel vectors and columns per tile of a 1x1 conv (*RO, *RW): 4 or 3 vectors where they
// divide MV, leave at least 6 columns (AVX-512) and the row has 4 tiles of them or more (with
// fewer, a narrow tail tile costs more than the shared broadcasts save: 7 columns took 2 x 7),
// else 2 or 1. A 1x1 tap is one input vector per column and one weight vector per channel
// vector, so more channel vectors per broadcast cut the loads per FMA: kiln build --tune chose
// 3 and 4 vectors over the 2 x 14 tile on MobileNet-V2's 1x1 convs (session 10).
static void pointwise_tile(int64_t MV, int64_t OW, int64_t max_acc, int64_t *RO, int64_t *RW) {
  for (int64_t ro = 4; ro >= 3; ro--) {
    int64_t cols = pointwise_columns(ro, max_acc);
    if (MV % ro == 0 && cols >= 6 && OW >= 4 * cols) {
      *RO = ro, *RW = cols;
      return;
    }
  }
  *RO = MV % 2 == 0 ? 2 : 1;
  *RW = kiln_conv_tile_width(OW, *RO, max_acc);
}

// A 1-D conv is planned as a 2-D one over (1, L): H, kH, strides, dilations and pads of 1 / 0.
kiln_conv_plan kiln_conv_plan_make(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                   int64_t lanes, int64_t blocked) {
  int h = win->rank - 2, r = win->rank - 1;  // the H axis (-1: none) and the W axis
  conv_plan p = {.N = N,
                 .C = C,
                 .M = M,
                 .KH = h < 0 ? 1 : win->kernel[h],
                 .KW = win->kernel[r],
                 .pt = h < 0 ? 0 : win->pad_begin[h],
                 .pl = win->pad_begin[r],
                 .H = h < 0 ? 1 : win->in[h],
                 .W = win->in[r],
                 .OH = h < 0 ? 1 : win->out[h],
                 .OW = win->out[r],
                 .sh = h < 0 ? 1 : win->stride[h],
                 .sw = win->stride[r],
                 .dh = h < 0 ? 1 : win->dilation[h],
                 .dw = win->dilation[r]};
  p.xh = p.H, p.xw = p.W, p.xsh = p.sh, p.xsw = p.sw, p.yh = p.OH, p.yw = p.OW;
  // Rows and columns the windows reach: at least the input, padded at the start and the end.
  int64_t need_h = (p.OH - 1) * p.sh + (p.KH - 1) * p.dh + 1;
  int64_t need_w = (p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1;
  p.HP = need_h > p.H + p.pt ? need_h : p.H + p.pt;
  p.WP = need_w > p.W + p.pl ? need_w : p.W + p.pl;
  p.padded = p.HP != p.H || p.WP != p.W;
  p.subsampled = !p.padded && p.KH == 1 && p.KW == 1 && (p.sh > 1 || p.sw > 1);
  if (p.subsampled) {  // a strided 1x1 conv reads a gathered copy xs (N, C, OH, OW) of x
    p.HP = p.H = p.OH;
    p.WP = p.W = p.OW;
    p.sh = p.sw = 1;
  }
  if (!p.padded && p.KH == 1 && p.KW == 1) {
    // out: (N, M, 1, OH * OW), the same bytes
    p.OW = p.WP = p.W = p.OH * p.OW;
    p.OH = p.HP = p.H = 1;
  }
  p.blocked = p.xblocked = blocked;
  p.lanes = lanes;
  p.max_acc = kiln_target_accumulators((int)p.lanes);
  p.MV = (p.M + p.lanes - 1) / p.lanes;
  p.RO = p.MV % 2 == 0 ? 2 : 1;
  p.RW = kiln_conv_tile_width(p.OW, p.RO, p.max_acc);
  if (p.KH == 1 && p.KW == 1) pointwise_tile(p.MV, p.OW, p.max_acc, &p.RO, &p.RW);
  p.G = 1, p.CG = p.C;
  return p;
}

// A grouped conv: each tile's channel vectors lie in one group (RO divides a group's vectors).
static void plan_groups(conv_plan *p, int64_t group) {
  p->G = group, p->CG = p->C / group;
  if (group == 1) return;
  int64_t group_vectors = p->M / group / p->lanes;
  if (group_vectors % p->RO != 0) p->RO = 1, p->RW = kiln_conv_tile_width(p->OW, 1, p->max_acc);
}

conv_plan kiln_conv_node_plan(const kiln_lower_ctx *c) {
  const kiln_tensor *w = kiln_lower_in(c, 1);
  kiln_shape xs = kiln_nchw_shape(&kiln_lower_in(c, 0)->shape);
  kiln_window win = conv_window(c->node, &xs, &w->shape);
  int64_t blocked = kiln_conv_blocked_lanes(c->node);
  int64_t lanes = blocked ? blocked : target_lanes(c);
  conv_plan p =
      kiln_conv_plan_make(&win, xs.dim[0], xs.dim[1], w->shape.dim[0], lanes, out_lanes(c->node));
  p.xblocked = in_lanes(c->node);
  plan_groups(&p, kiln_attr_int(c->node, "group", 1));
  return p;
}

// A strided 1x1 conv's tiles read x at the stride itself instead of a gathered copy: a broadcast
// of x[c][oh * sh][ow * sw] costs what one of x[c][oh][ow] does, so the copy (a pass over all of
// x) bought nothing. The tiles then run over the output's own rows (OH x OW, not flattened).
static void read_strided(conv_plan *p) {
  if (!p->subsampled) return;
  p->subsampled = false;
  p->H = p->HP = p->xh, p->W = p->WP = p->xw, p->sh = p->xsh, p->sw = p->xsw;
  p->OH = p->yh, p->OW = p->yw;
  if (p->G == 1)
    pointwise_tile(p->MV, p->OW, p->max_acc, &p->RO, &p->RW);
  else
    p->RW = kiln_conv_tile_width(p->OW, p->RO, p->max_acc);
}

// The plan of this file's blocked lowering: the node's, x read in place when strided.
static conv_plan blocked_plan(const kiln_lower_ctx *c) {
  conv_plan p = kiln_conv_node_plan(c);
  read_strided(&p);
  return p;
}

// ---- Auto-tuning (kiln build --tune): the tile's channel vectors RO and columns RW ----
// A tile only groups outputs; each output's sum runs over the same taps in the same order, so
// every tile gives the same bits.

static void tune_key(const conv_plan *p, char *key, size_t size) {
  snprintf(key, size,
           "conv N%lld C%lld M%lld P%lldx%lld O%lldx%lld K%lldx%lld S%lldx%lld "
           "D%lldx%lld L%lld",
           (long long)p->N, (long long)p->C, (long long)p->M, (long long)p->HP, (long long)p->WP,
           (long long)p->OH, (long long)p->OW, (long long)p->KH, (long long)p->KW, (long long)p->sh,
           (long long)p->sw, (long long)p->dh, (long long)p->dw, (long long)p->lanes);
  if (p->blocked) snprintf(key + strlen(key), size - strlen(key), " NCHWc");
  if (p->xblocked != p->blocked)
    snprintf(key + strlen(key), size - strlen(key), " x%s", p->xblocked ? "NCHWc" : "NCHW");
  if (p->G > 1) snprintf(key + strlen(key), size - strlen(key), " G%lld", (long long)p->G);
}

// RO divides the channel vectors (of a group); a tile is at most the output row and 64
// accumulator vectors.
static bool tile_fits(const conv_plan *p, kiln_tile_choice t) {
  int64_t vectors = p->G > 1 ? p->M / p->G / p->lanes : p->MV;
  return t.a >= 1 && t.b >= 1 && vectors % t.a == 0 && t.b <= p->OW && (int64_t)t.a * t.b <= 64;
}

// The analytical plan, then the tile kiln build --tune chose for this shape, if any.
static conv_plan make_plan(const kiln_lower_ctx *c) {
  conv_plan p = blocked_plan(c);
  char key[KILN_TUNE_KEY_MAX];
  tune_key(&p, key, sizeof(key));
  const kiln_tuning_entry *e = kiln_tuning_find(c->tuning, key);
  if (e && tile_fits(&p, e->choice)) p.RO = e->choice.a, p.RW = e->choice.b;
  return p;
}

static bool add_candidate(const conv_plan *p, kiln_tile_choice t, kiln_tile_choice *cands, int *n,
                          int max) {
  if (*n >= max || !tile_fits(p, t)) return false;
  for (int i = 0; i < *n; i++)
    if (cands[i].a == t.a && cands[i].b == t.b) return false;
  cands[(*n)++] = t;
  return true;
}

// The analytical tile first; then for each RO of 1..4 its widest register tile, the width that
// divides the row, and half the widest.
static int tune_space(const kiln_lower_ctx *c, char *key, size_t key_size, kiln_tile_choice *cands,
                      int max) {
  if (kiln_conv_depthwise_applies(c) || kiln_conv_winograd_applies(c)) return 0;  // not tuned
  if (!kiln_conv_blocked_lanes(c->node) &&
      (kiln_lower_in(c, 0)->shape.rank > 4 || !blocked_applies(c)))
    return 0;
  conv_plan p = blocked_plan(c);
  tune_key(&p, key, key_size);
  int n = 0;
  add_candidate(&p, (kiln_tile_choice){(int)p.RO, (int)p.RW}, cands, &n, max);
  for (int ro = 1; ro <= 4; ro++) {
    int most = (int)(p.max_acc / ro);
    int64_t widths[] = {most, kiln_conv_tile_width(p.OW, ro, p.max_acc), most / 2};
    for (int k = 0; k < 3; k++) {
      int64_t rw = widths[k] < p.OW ? widths[k] : p.OW;
      add_candidate(&p, (kiln_tile_choice){ro, (int)rw}, cands, &n, max);
    }
  }
  return n;
}

// The lane's channel and value (conv_internal.h): no clamp, no select where M fills whole
// vectors.
kiln_lexpr *kiln_conv_lane_channel(kiln_lb *b, kiln_lexpr *oc, int64_t M, int64_t lanes) {
  return M % lanes == 0 ? oc : lx_bin(b, LB_MIN, oc, lx_int(b, M - 1));
}
kiln_lexpr *kiln_conv_lane_value(kiln_lb *b, kiln_lexpr *oc, int64_t M, int64_t lanes,
                                 kiln_lexpr *load) {
  if (M % lanes == 0) return load;
  return lx_select(b, lx_bin(b, LB_LT, oc, lx_int(b, M)), load, lx_float(b, KILN_F32, 0));
}

// The lane of channel oc: buf[oc * stride + offset] (oc clamped), 0 past M.
static kiln_lexpr *packed_lane(kiln_lb *b, int buf, kiln_lexpr *oc, int64_t M, int64_t lanes,
                               int64_t stride, kiln_lexpr *offset) {
  kiln_lexpr *ch = kiln_conv_lane_channel(b, kiln_lx_clone(b, oc), M, lanes);
  return kiln_conv_lane_value(b, oc, M, lanes, lx_load(b, buf, lx_madd(b, ch, stride, offset)));
}

// The same packing as a loop nest into kernel scratch, for weights known only at run time:
//   for vb: bp[vb][l] = oc < M ? bias[oc] : 0;  for k, l: wp[vb][k][l] = oc < M ? w[oc][k] : 0
// (oc = vb*16 + l). l, the vectorized loop, runs innermost: 16 loads at w's row stride into
// one whole-vector store (with l outside k, each store went to a different cache line: gcc made
// scatters, 3-4x slower).
static void pack_weights_at_run_time(const kiln_lower_ctx *c, const conv_plan *p, int *wp,
                                     int *bp) {
  kiln_lb *b = c->b;
  int64_t per_oc = p->CG * p->KH * p->KW;
  *wp = kiln_lower_scratch(c, KILN_F32, p->MV * per_oc * p->lanes);
  *bp = kiln_lower_scratch(c, KILN_F32, p->MV * p->lanes);
  int vb = kiln_lb_for_n(b, "vb", p->MV), l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *oc = lx_madd(b, lx_var(b, vb), p->lanes, lx_var(b, l));
  kiln_lexpr *bias = kiln_has_input(c->node, 2)
                         ? packed_lane(b, kiln_in_buf(c, 2), oc, p->M, p->lanes, 1, lx_int(b, 0))
                         : lx_float(b, KILN_F32, 0);
  kiln_lb_store(b, *bp, lx_madd(b, lx_var(b, vb), p->lanes, lx_var(b, l)), bias);
  kiln_lb_end_for(b);  // l
  int k = kiln_lb_for_n(b, "k", per_oc);
  l = kiln_lb_for_n(b, "l", p->lanes);
  oc = lx_madd(b, lx_var(b, vb), p->lanes, lx_var(b, l));
  kiln_lexpr *to =
      lx_madd(b, lx_madd(b, lx_var(b, vb), per_oc, lx_var(b, k)), p->lanes, lx_var(b, l));
  kiln_lb_store(b, *wp, to,
                packed_lane(b, kiln_in_buf(c, 1), oc, p->M, p->lanes, per_oc, lx_var(b, k)));
  for (int i = 0; i < 3; i++) kiln_lb_end_for(b);  // l, k, vb
}

// (ceil(M/16), C/G, kH, kW, 16) from w (M, C/G, kH, kW), zero past M; bias padded to ceil(M/16)
// * 16.
static void pack_weights(const kiln_lower_ctx *c, const conv_plan *p, int *wp, int *bp) {
  if (!constant_weights(c)) {
    pack_weights_at_run_time(c, p, wp, bp);
    return;
  }
  const kiln_tensor *w = kiln_lower_in(c, 1);
  const kiln_tensor *bias = kiln_has_input(c->node, 2) ? kiln_lower_in(c, 2) : NULL;
  int64_t per_oc = p->CG * p->KH * p->KW, numel = p->MV * per_oc * p->lanes;
  float *packed = kiln_xcalloc((size_t)numel, sizeof(float));
  for (int64_t oc = 0; oc < p->M; oc++)
    for (int64_t k = 0; k < per_oc; k++)
      packed[((oc / p->lanes) * per_oc + k) * p->lanes + oc % p->lanes] =
          (float)kiln_tensor_get(w, oc * per_oc + k);
  *wp = kiln_lower_derived_weight(c, "wpacked", packed, numel);
  free(packed);
  float *b = kiln_xcalloc((size_t)(p->MV * p->lanes), sizeof(float));
  for (int64_t oc = 0; bias && oc < p->M; oc++) b[oc] = (float)kiln_tensor_get(bias, oc);
  *bp = kiln_lower_derived_weight(c, "bpacked", b, p->MV * p->lanes);
  free(b);
}

// xp[start + i] = 0 for i in [0, count): a loop, or nothing when count is 0.
static void zero_span(kiln_lb *b, int xp, kiln_lexpr *start, int64_t count) {
  if (count <= 0) return;
  int i = kiln_lb_for_n(b, "i", count);
  kiln_lb_store(b, xp, lx_add(b, start, lx_var(b, i)), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
}

// The padded copy of x, each element of xp written once (one parallel loop nest); a pixel is E
// contiguous values: 1 (planar), or the lanes of an NCHWc x, whose copy is NCHWc too:
//   for nc (planes: N * C / E): the pt rows above = 0
//     for ih: the pl pixels left = 0; xp[nc][pt + ih][pl + iw][e] = x[nc][ih][iw][e]; the
//     rest = 0
//   the rows below = 0
static int pad_input(const kiln_lower_ctx *c, const conv_plan *p) {
  kiln_lb *b = c->b;
  int64_t E = p->xblocked ? p->xblocked : 1, row_len = p->WP * E;
  int xp = kiln_lower_scratch(c, KILN_F32, p->N * p->C * p->HP * p->WP);
  int64_t right = (p->WP - p->pl - p->W) * E, below = (p->HP - p->pt - p->H) * row_len;
  int nc = kiln_lb_for_n(b, "nc", p->N * p->C / E);
  zero_span(b, xp, lx_mul(b, lx_var(b, nc), lx_int(b, p->HP * row_len)), p->pt * row_len);
  int ih = kiln_lb_for_n(b, "ih", p->H);
  kiln_lexpr *row = lx_madd(b, lx_var(b, nc), p->HP, lx_add(b, lx_var(b, ih), lx_int(b, p->pt)));
  zero_span(b, xp, lx_mul(b, kiln_lx_clone(b, row), lx_int(b, row_len)), p->pl * E);
  int iw = kiln_lb_for_n(b, "iw", p->W * E);
  kiln_lexpr *to =
      lx_madd(b, kiln_lx_clone(b, row), row_len, lx_add(b, lx_var(b, iw), lx_int(b, p->pl * E)));
  kiln_lexpr *from =
      lx_madd(b, lx_madd(b, lx_var(b, nc), p->H, lx_var(b, ih)), p->W * E, lx_var(b, iw));
  kiln_lb_store(b, xp, to, lx_load(b, kiln_in_buf(c, 0), from));
  kiln_lb_end_for(b);  // iw
  zero_span(b, xp, lx_madd(b, row, row_len, lx_int(b, (p->pl + p->W) * E)), right);
  kiln_lb_end_for(b);  // ih
  zero_span(b, xp, lx_madd(b, lx_var(b, nc), p->HP * row_len, lx_int(b, (p->pt + p->H) * row_len)),
            below);
  kiln_lb_end_for(b);  // nc
  return xp;
}

// xs[nc][oh][ow][e] = x[nc][oh * sh][ow * sw][e]: the strided input of a 1x1 conv, gathered once
// (E values per pixel, as in pad_input).
static int subsample_input(const kiln_lower_ctx *c, const conv_plan *p) {
  kiln_lb *b = c->b;
  int64_t E = p->xblocked ? p->xblocked : 1;
  int xs = kiln_lower_scratch(c, KILN_F32, p->N * p->C * p->yh * p->yw);
  int nc = kiln_lb_for_n(b, "nc", p->N * p->C / E);
  int oh = kiln_lb_for_n(b, "oh", p->yh), ow = kiln_lb_for_n(b, "ow", p->yw);
  int e = E > 1 ? kiln_lb_for_n(b, "e", E) : -1;
  kiln_lexpr *to =
      lx_madd(b, lx_madd(b, lx_var(b, nc), p->yh, lx_var(b, oh)), p->yw, lx_var(b, ow));
  kiln_lexpr *row = lx_madd(b, lx_var(b, nc), p->xh, lx_mul(b, lx_var(b, oh), lx_int(b, p->xsh)));
  kiln_lexpr *from = lx_madd(b, row, p->xw, lx_mul(b, lx_var(b, ow), lx_int(b, p->xsw)));
  if (e >= 0) to = lx_madd(b, to, E, lx_var(b, e)), from = lx_madd(b, from, E, lx_var(b, e));
  kiln_lb_store(b, xs, to, lx_load(b, kiln_in_buf(c, 0), from));
  if (e >= 0) kiln_lb_end_for(b);                  // e
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // ow, oh, nc
  return xs;
}

// The buffer the kernel reads: x itself, its padded copy or its subsampled copy.
int kiln_conv_plan_input(const kiln_lower_ctx *c, const conv_plan *p) {
  if (p->subsampled) return subsample_input(c, p);
  return p->padded ? pad_input(c, p) : kiln_in_buf(c, 0);
}

typedef struct tile_vars {
  int n, ob, oh, acc;
  int xp, wp, bp;
} tile_vars;

// for v in [0, n) with full unrolling (a register block dimension).
int kiln_conv_unrolled_for(kiln_lb *b, const char *name, int64_t n) {
  int v = kiln_lb_for_n(b, name, n);
  kiln_lb_unroll(b, (int)n);
  return v;
}

// (j * RO + r) * 16 + l
static kiln_lexpr *acc_index(kiln_lb *b, const conv_plan *p, int j, int r, int l) {
  return lx_madd(b, lx_madd(b, lx_var(b, j), p->RO, lx_var(b, r)), p->lanes, lx_var(b, l));
}

// Output channel (ob * RO + r) * 16 + l.
static kiln_lexpr *out_channel(kiln_lb *b, const conv_plan *p, const tile_vars *t, int r, int l) {
  return lx_madd(b, lx_madd(b, lx_var(b, t->ob), p->RO, lx_var(b, r)), p->lanes, lx_var(b, l));
}

// Input channel ic of the tile's group: (ob * RO / group vectors) * CG + ic (ic without groups).
static kiln_lexpr *group_channel(kiln_lb *b, const conv_plan *p, const tile_vars *t, int ic) {
  if (p->G == 1) return lx_var(b, ic);
  kiln_lexpr *first_vector = lx_mul(b, lx_var(b, t->ob), lx_int(b, p->RO));
  kiln_lexpr *g = lx_bin(b, LB_DIV, first_vector, lx_int(b, p->M / p->G / p->lanes));
  return lx_add(b, lx_mul(b, g, lx_int(b, p->CG)), lx_var(b, ic));
}

// The taps one tile_accumulate call runs over, in the sums' order: channel 0 only (first_channel)
// or channels [ic_lo, CG), by kernel rows [kh_lo, kh_hi) and columns [kw_lo, kw_hi). from_bias:
// the sums start from the bias instead of the accumulators (the first tap).
typedef struct tap_range {
  bool first_channel, from_bias;
  int64_t ic_lo, kh_lo, kh_hi, kw_lo, kw_hi;
} tap_range;

// The input channel loop of a tile: for ic in the range; for an NCHWc x without groups two loops,
// for icb in [0, C / L), ici in [0, L) (ic = icb * L + ici; ici from 1 in the first block when
// the range starts at channel 1), so that x's index is affine in each instead of dividing ic per
// broadcast (~10 % of a 1x1 conv's time). Returns the loops opened; *ic, *icb, *ici: the
// variables (-1 where absent).
static int open_channels(kiln_lb *b, const conv_plan *p, const tap_range *tr, int *ic, int *icb,
                         int *ici) {
  *icb = *ici = -1;
  if (tr->first_channel || !p->xblocked || p->G > 1) {
    int64_t lo = tr->first_channel ? 0 : tr->ic_lo, hi = tr->first_channel ? 1 : p->CG;
    *ic = kiln_lb_for(b, "ic", lx_int(b, lo), lx_int(b, hi));
    return 1;
  }
  *icb = kiln_lb_for_n(b, "icb", p->CG / p->xblocked);
  kiln_lexpr *lo = lx_int(b, 0);  // from channel 1: 1 - min(icb, 1)
  if (tr->ic_lo == 1)
    lo = lx_bin(b, LB_SUB, lx_int(b, 1), lx_bin(b, LB_MIN, lx_var(b, *icb), lx_int(b, 1)));
  *ici = kiln_lb_for(b, "ici", lo, lx_int(b, p->xblocked));
  *ic = kiln_lb_decl(b, "ic", KILN_I64, lx_madd(b, lx_var(b, *icb), p->xblocked, lx_var(b, *ici)));
  return 2;
}

// x's index at row ih, column iw of channel ic (or block icb, lane ici: open_channels).
static kiln_lexpr *tile_x_index(kiln_lb *b, const conv_plan *p, const tile_vars *t, int ic, int icb,
                                int ici, kiln_lexpr *ih, kiln_lexpr *iw) {
  int64_t L = p->xblocked, HW = p->HP * p->WP;
  if (icb >= 0) {  // ((n * C / L + icb) * HP * WP + ih * WP + iw) * L + ici
    kiln_lexpr *block = lx_madd(b, lx_var(b, t->n), p->C / L, lx_var(b, icb));
    return lx_madd(b, lx_madd(b, block, HW, lx_madd(b, ih, p->WP, iw)), L, lx_var(b, ici));
  }
  kiln_lexpr *plane = lx_madd(b, lx_var(b, t->n), p->C, group_channel(b, p, t, ic));
  return L ? lx_blocked(b, plane, HW, lx_madd(b, ih, p->WP, iw), L)  // x and its copies NCHWc
           : lx_madd(b, lx_madd(b, plane, p->HP, ih), p->WP, iw);
}

// for ic, kh, kw (the taps of tr), j, r, l: acc[j][r][l] = muladd(xv, wp[..], acc[j][r][l]); with
// tr->from_bias the sums start from the bias: muladd(xv, wp[..], bp[..]).
static void tile_accumulate(const kiln_lower_ctx *c, const conv_plan *p, const tile_vars *t,
                            kiln_lexpr *ow0, int64_t rw, const tap_range *tr) {
  kiln_lb *b = c->b;
  int ic, icb, ici, loops = open_channels(b, p, tr, &ic, &icb, &ici);
  int kh = kiln_lb_for(b, "kh", lx_int(b, tr->kh_lo), lx_int(b, tr->kh_hi));
  int kw = kiln_lb_for(b, "kw", lx_int(b, tr->kw_lo), lx_int(b, tr->kw_hi));
  kiln_lexpr *ih = lx_add(b, lx_mul(b, lx_var(b, t->oh), lx_int(b, p->sh)),
                          lx_mul(b, lx_var(b, kh), lx_int(b, p->dh)));
  kiln_lexpr *iw = lx_add(b, lx_mul(b, kiln_lx_clone(b, ow0), lx_int(b, p->sw)),
                          lx_mul(b, lx_var(b, kw), lx_int(b, p->dw)));
  // x0: the tap's first column; column j lies j * sw pixels on, a constant offset the C
  // compiler folds into each broadcast's address (~8 % of a 3x3/2 conv's time against
  // recomputing the index per column).
  int x0 = kiln_lb_decl(b, "x0", KILN_I64, tile_x_index(b, p, t, ic, icb, ici, ih, iw));
  int j = kiln_conv_unrolled_for(b, "j", rw);
  int64_t pixel = p->xblocked ? p->xblocked : 1;  // values per pixel
  kiln_lexpr *xi = lx_madd(b, lx_var(b, j), p->sw * pixel, lx_var(b, x0));
  int xv = kiln_lb_decl(b, "xv", KILN_F32, lx_load(b, t->xp, xi));
  int r = kiln_conv_unrolled_for(b, "r", p->RO), l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *tap = lx_madd(b, lx_madd(b, lx_var(b, ic), p->KH, lx_var(b, kh)), p->KW,
                            lx_var(b, kw));  // ic * kH * kW + kh * kW + kw
  kiln_lexpr *vec =
      lx_madd(b, lx_madd(b, lx_var(b, t->ob), p->RO, lx_var(b, r)), p->CG * p->KH * p->KW, tap);
  kiln_lexpr *wv = lx_load(b, t->wp, lx_madd(b, vec, p->lanes, lx_var(b, l)));
  kiln_lexpr *sum = tr->from_bias ? lx_load(b, t->bp, out_channel(b, p, t, r, l))
                                  : lx_local(b, t->acc, acc_index(b, p, j, r, l));
  kiln_lb_store_local(b, t->acc, acc_index(b, p, j, r, l), lx_muladd(b, lx_var(b, xv), wv, sum));
  for (int k = 0; k < 5 + loops; k++) kiln_lb_end_for(b);  // l, r, j, kw, kh, ic (or icb, ici)
}

// NCHWc: y[n][ob * RO + r][oh][ow0 + j][l] = epilogue(acc[j][r][l]), l innermost (a vector).
static void tile_store_blocked(const kiln_lower_ctx *c, const conv_plan *p, const tile_vars *t,
                               kiln_lexpr *ow0, int64_t rw) {
  kiln_lb *b = c->b;
  int r = kiln_conv_unrolled_for(b, "r", p->RO), j = kiln_lb_for_n(b, "j", rw);
  int l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *vec = lx_madd(b, lx_var(b, t->ob), p->RO, lx_var(b, r));  // output channel vector
  kiln_lexpr *row = lx_madd(b, lx_madd(b, lx_var(b, t->n), p->MV, vec), p->OH, lx_var(b, t->oh));
  kiln_lexpr *col = lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j));
  kiln_lexpr *yi = lx_madd(b, lx_madd(b, row, p->OW, col), p->lanes, lx_var(b, l));
  kiln_lexpr *v =
      kiln_conv_epilogue(c, lx_local(b, t->acc, acc_index(b, p, j, r, l)), kiln_lx_clone(b, yi));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, v);
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, j, r
}

// y[n][oc][oh][ow0 + j] = epilogue(acc[j][r][l]) for the channels below M.
static void tile_store(const kiln_lower_ctx *c, const conv_plan *p, const tile_vars *t,
                       kiln_lexpr *ow0, int64_t rw) {
  kiln_lb *b = c->b;
  int r = kiln_conv_unrolled_for(b, "r", p->RO);
  kiln_lexpr *lanes = lx_int(b, p->lanes);
  if (p->M % p->lanes)  // the last vector is partly padding
    lanes = lx_bin(
        b, LB_MIN, lanes,
        lx_bin(b, LB_SUB, lx_int(b, p->M),
               lx_mul(b, lx_madd(b, lx_var(b, t->ob), p->RO, lx_var(b, r)), lx_int(b, p->lanes))));
  int l = kiln_lb_for(b, "l", lx_int(b, 0), lanes);
  int j = kiln_lb_for_n(b, "j", rw);
  kiln_lexpr *oc = out_channel(b, p, t, r, l);
  kiln_lexpr *row = lx_madd(b, lx_madd(b, lx_var(b, t->n), p->M, oc), p->OH, lx_var(b, t->oh));
  kiln_lexpr *yi = lx_madd(b, row, p->OW, lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j)));
  kiln_lexpr *v =
      kiln_conv_epilogue(c, lx_local(b, t->acc, acc_index(b, p, j, r, l)), kiln_lx_clone(b, yi));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, v);
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // j, l, r
}

// One tile of rw columns starting at ow0 (an expression, cloned as needed).
static void tile(const kiln_lower_ctx *c, const conv_plan *p, tile_vars *t, kiln_lexpr *ow0,
                 int64_t rw) {
  t->acc = kiln_lb_decl_array(c->b, "acc", KILN_F32, rw * p->RO * p->lanes);
  // The first tap starts the sums from the bias — the same values in the same order as an
  // initial copy of the bias, which gcc turns into 32-byte memcpy moves that the accumulators'
  // 64-byte loads then wait on (~9 % of a 64-channel 1x1 conv's time) — then the rest of channel
  // 0's first kernel row, its other rows, the other channels.
  const tap_range parts[] = {{true, true, 0, 0, 1, 0, 1},
                             {true, false, 0, 0, 1, 1, p->KW},
                             {true, false, 0, 1, p->KH, 0, p->KW},
                             {false, false, 1, 0, p->KH, 0, p->KW}};
  for (int i = 0; i < 4; i++)
    if (parts[i].kh_lo < parts[i].kh_hi && parts[i].kw_lo < parts[i].kw_hi &&
        (parts[i].first_channel || p->CG > 1))
      tile_accumulate(c, p, t, ow0, rw, &parts[i]);
  if (p->blocked)
    tile_store_blocked(c, p, t, ow0, rw);
  else
    tile_store(c, p, t, ow0, rw);
}

// i / div % mod as a new variable, i < range (no division by 1, no modulo past the range).
static int decl_digit(kiln_lb *b, const char *name, int i, int64_t div, int64_t mod,
                      int64_t range) {
  kiln_lexpr *e = div > 1 ? lx_bin(b, LB_DIV, lx_var(b, i), lx_int(b, div)) : lx_var(b, i);
  if (mod == 1) e = lx_int(b, 0);
  if (mod > 1 && range > div * mod) e = lx_bin(b, LB_MOD, e, lx_int(b, mod));
  return kiln_lb_decl(b, name, KILN_I64, e);
}

// Tiles of rw columns at first + ot * rw (ot < tiles) for every (n, ob, oh), flattened into one
// loop, the parallel one: it has work for every thread even when a conv has few channel vectors or
// one (flattened) row.
static void tile_loop(const kiln_lower_ctx *c, const conv_plan *p, tile_vars *t, int64_t tiles,
                      int64_t rw, int64_t first) {
  kiln_lb *b = c->b;
  int64_t OB = p->MV / p->RO, count = p->N * OB * p->OH * tiles;
  int i = kiln_lb_for_n(b, "tile", count);  // (n, ob, oh, ot)
  t->n = decl_digit(b, "n", i, OB * p->OH * tiles, p->N, count);
  t->ob = decl_digit(b, "ob", i, p->OH * tiles, OB, count);
  t->oh = decl_digit(b, "oh", i, tiles, p->OH, count);
  // tile % tiles even for one tile per row (0): the output index then uses the loop variable
  // itself, which is how the schedule pass sees that iterations store disjoint elements.
  kiln_lexpr *ot = lx_bin(b, LB_MOD, lx_var(b, i), lx_int(b, tiles));
  tile(c, p, t, lx_madd(b, ot, rw, lx_int(b, first)), rw);
  kiln_lb_end_for(b);  // tile
}

void kiln_conv_lower_tiles(const kiln_lower_ctx *c, const conv_plan *p, int xp, int wp, int bp) {
  kiln_lb *b = c->b;
  tile_vars t = {.xp = xp, .wp = wp, .bp = bp};
  kiln_lb_comment(b, "blocked: %lld x %lld channels by %lld columns per tile%s%s", (long long)p->RO,
                  (long long)p->lanes, (long long)p->RW,
                  p->padded       ? ", padded input"
                  : p->subsampled ? ", subsampled input"
                                  : "",
                  p->blocked && p->xblocked ? ", NCHWc"
                  : p->blocked              ? ", NCHW to NCHWc"
                  : p->xblocked             ? ", NCHWc to NCHW"
                                            : "");
  int64_t full = p->OW / p->RW, rest = p->OW % p->RW;
  if (full) tile_loop(c, p, &t, full, p->RW, 0);
  if (rest) tile_loop(c, p, &t, 1, rest, full * p->RW);
}

static void lower_blocked(const kiln_lower_ctx *c) {
  conv_plan p = make_plan(c);
  int wp, bp;
  pack_weights(c, &p, &wp, &bp);
  int xp = kiln_conv_plan_input(c, &p);
  kiln_conv_lower_tiles(c, &p, xp, wp, bp);
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(c->b, "%s %s: %s * %s%s%s%s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_describe(w).text,
                  kiln_has_input(c->node, 2) ? " + bias" : "",
                  has_residual(c->node) ? " + residual" : "",
                  has_relu(c->node)   ? ", relu"
                  : has_clip(c->node) ? ", clip"
                                      : "",
                  kiln_describe(y).text);
  if (kiln_conv_depthwise_applies(c)) {  // planar or NCHWc
    kiln_conv_lower_depthwise(c);
    return;
  }
  if (kiln_conv_winograd_applies(c)) {  // FusedConv algo = "winograd": NCHWc, 3x3, stride 1
    kiln_conv_lower_winograd(c);
    return;
  }
  if (kiln_conv_lower_winograd_node_runtime(c)) return;  // training: 3x3 stride 1, weights state
  if (kiln_conv_blocked_lanes(c->node) ||
      (x->shape.rank <= 4 && blocked_applies(c))) {  // 1-D: (1, L)
    lower_blocked(c);
    return;
  }
  if (x->shape.rank != 4) {
    lower_gather(c);
    return;
  }
  lower_rows(c);
  lower_epilogue_pass(c);
}

// 2 * N * M * OH * OW * (C / group) * kH * kW (times kD for 3-D)
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *w = &kiln_in(g, n, 1)->shape;
  return 2 * kiln_shape_numel(&kiln_out(g, n, 0)->shape) * (kiln_shape_numel(w) / w->dim[0]);
}

// Gradient (docs/training.md): dx = ConvGradInput(dy, w), dw = ConvGradFilter(x, dy), both with
// this node's window attributes; db = dy summed over (N, OH, OW). ConvGradInput and
// ConvGradFilter are 2-D, so 1-D and 3-D convs are reported (kiln_window_grad_is_2d).
static bool grad(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int x = n->inputs[0], w = n->inputs[1], dy = c->dy[0];
  if (dy < 0) return true;
  if (!kiln_window_grad_is_2d(c, 0)) return false;
  kiln_shape xs_copy = c->g->tensors[x].shape, *xs = &xs_copy;  // adding nodes moves tensors
  kiln_shape ws = c->g->tensors[w].shape;
  int rank = ws.rank - 2;
  if (c->need[0]) {
    kiln_gb_attr extra[] = {KILN_GB_INTS("kernel_shape", &ws.dim[2], rank),
                            KILN_GB_INTS("input_shape", xs->dim, xs->rank), KILN_GB_END};
    int in[2] = {dy, w};
    if ((c->dx[0] = kiln_gb_op_like(c, "ConvGradInput", in, 2, extra)) < 0) return false;
  }
  if (c->need[1]) {
    kiln_gb_attr extra[] = {KILN_GB_INTS("kernel_shape", &ws.dim[2], rank), KILN_GB_END};
    int in[2] = {x, dy};
    if ((c->dx[1] = kiln_gb_op_like(c, "ConvGradFilter", in, 2, extra)) < 0) return false;
  }
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && c->need[2]) {
    static const int64_t axes[4] = {0, 2, 3, 4};  // N and the spatial axes
    kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, xs->rank - 1), KILN_GB_INT("keepdims", 0),
                            KILN_GB_END};
    if ((c->dx[2] = kiln_gb_op(c, "ReduceSum", &dy, 1, attrs, 1)) < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_Conv = {
    .name = "Conv",
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
    .tol = {1e-5, 1e-5},
    .grad = grad,
    .tune_space = tune_space,
};

// ---- FusedConv (made by the fuse-epilogue pass, compiler/passes/fuse_epilogue.c) ----
// y = activation(Conv(x, w, b) + z): Conv's inputs and attributes, an optional residual z of y's
// shape (input 3) and `activation` ("Relu"; "Clip" with `activation_params` = [min, max], ReLU6's
// form; or absent for none), as ONNX Runtime's FusedConv.

// clang-format off
static const kiln_attr_spec fused_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},     {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},           {"kernel_shape", KILN_ATTR_INTS, false},
    {"pads", KILN_ATTR_INTS, false},           {"strides", KILN_ATTR_INTS, false},
    {"activation", KILN_ATTR_STRING, false},   {"layout", KILN_ATTR_STRING, false},
    {"lanes", KILN_ATTR_INT, false},           {"activation_params", KILN_ATTR_FLOATS, false},
    {"input_layout", KILN_ATTR_STRING, false}, {"algo", KILN_ATTR_STRING, false},  // winograd
    {0},
};
// clang-format on

// layout and input_layout: each "NCHW" or "NCHWc" (at least one "NCHWc"), a depthwise conv
// both the same; lanes L >= 1.
static bool check_layouts(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const char *layout = kiln_attr_string(n, "layout", "NCHW");
  const char *input = kiln_attr_string(n, "input_layout", layout);
  bool known = (!strcmp(layout, "NCHW") || !strcmp(layout, "NCHWc")) &&
               (!strcmp(input, "NCHW") || !strcmp(input, "NCHWc"));
  if (!known || kiln_attr_int(n, "lanes", 0) < 1) {
    kiln_op_error(d, n,
                  "attrs.layout, attrs.input_layout: expected \"NCHW\" or \"NCHWc\" with lanes "
                  ">= 1, got \"%s\", \"%s\" and lanes %lld",
                  layout, input, (long long)kiln_attr_int(n, "lanes", 0));
    return false;
  }
  const kiln_tensor *w = kiln_in(g, n, 1);
  int64_t group = kiln_attr_int(n, "group", 1);
  if (group > 1 && group == w->shape.dim[0] && w->shape.dim[1] == 1 && strcmp(layout, input)) {
    kiln_op_error(d, n,
                  "attrs.input_layout: a depthwise conv reads x in its output's layout "
                  "(\"%s\"), got \"%s\"",
                  layout, input);
    return false;
  }
  return true;
}

// x as (N, C / L, H, W, L) when it is NCHWc, (N, C, H, W) when not.
static bool check_x_layout(const kiln_node *n, kiln_diag *d, const kiln_tensor *x, int64_t L) {
  if (L ? x->shape.rank == 5 && x->shape.dim[4] == L : x->shape.rank == 4) return true;
  kiln_op_error(d, n, "inputs[0] (%s): expected %s (attrs.input_layout \"%s\", lanes %lld), got %s",
                x->name, L ? "(N, C / L, H, W, L)" : "(N, C, H, W)", L ? "NCHWc" : "NCHW",
                (long long)kiln_attr_int(n, "lanes", 0), kiln_shape_text(&x->shape).text);
  return false;
}

// NCHWc x or y: Conv's inference on the planar view of x, then y blocked if its layout says so.
static bool blocked_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t L = kiln_attr_int(n, "lanes", 0);
  kiln_tensor *x = kiln_in(g, n, 0);
  if (!check_layouts(g, n, d) || !check_x_layout(n, d, x, in_lanes(n))) return false;
  const kiln_tensor *w = kiln_in(g, n, 1), *bias = kiln_in(g, n, 2);
  if (!w->data || (bias && !bias->data)) {
    kiln_op_error(d, n, "attrs.layout: \"NCHWc\" needs constant weights and bias (params)");
    return false;
  }
  kiln_shape blocked = x->shape;
  x->shape = kiln_nchw_shape(&blocked);
  bool ok = infer(g, n, d);
  x->shape = blocked;
  kiln_tensor *y = kiln_out(g, n, 0);
  if (ok && out_lanes(n) && y->shape.dim[1] % L != 0) {
    kiln_op_error(d, n, "attrs.lanes: %lld must divide the output channels (%lld)", (long long)L,
                  (long long)y->shape.dim[1]);
    return false;
  }
  if (ok && out_lanes(n)) y->shape = kiln_nchwc_shape(&y->shape, L);
  return ok;
}

static bool fused_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_conv_check_activation(n, d, "")) return false;
  if (!(kiln_conv_blocked_lanes(n) ? blocked_infer(g, n, d) : infer(g, n, d))) return false;
  if (!kiln_conv_winograd_check(g, n, d)) return false;
  const kiln_tensor *z = kiln_in(g, n, 3), *y = kiln_out(g, n, 0);
  if (z && (z->dtype != y->dtype || !kiln_shape_equal(&z->shape, &y->shape))) {
    kiln_op_error(d, n, "inputs[3] (%s): expected the output's dtype %s and shape %s, got %s %s",
                  z->name, kiln_dtype_name(y->dtype), kiln_shape_text(&y->shape).text,
                  kiln_dtype_name(z->dtype), kiln_shape_text(&z->shape).text);
    return false;
  }
  return true;
}

static void fused_eval_planar(const kiln_node *n, const kiln_eval_tensor *in,
                              kiln_eval_tensor *out);

// NCHWc x or y: the planar reference on unblocked copies, its result blocked if y is NCHWc.
static void blocked_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t xl = in_lanes(n), yl = out_lanes(n);
  kiln_shape xs, ys = kiln_nchw_shape(out->shape), zs;
  kiln_eval_tensor pin[4] = {{0}}, pout = {&ys, out->dtype, out->data};
  for (int i = 0; i < n->n_inputs && i < 4; i++) pin[i] = in[i];
  if (xl) pin[0] = kiln_eval_unblocked(&in[0], xl, &xs);
  if (yl && kiln_has_input(n, 3)) pin[3] = kiln_eval_unblocked(&in[3], yl, &zs);
  if (yl) pout.data = kiln_xmalloc(sizeof(double) * (size_t)kiln_shape_numel(&ys));
  fused_eval_planar(n, pin, &pout);
  if (yl) kiln_nchwc_copy(&ys, yl, pout.data, out->data, true), free(pout.data);
  if (xl) free(pin[0].data);
  if (yl && kiln_has_input(n, 3)) free(pin[3].data);
}

static void fused_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  if (kiln_conv_blocked_lanes(n))
    blocked_eval(n, in, out);
  else
    fused_eval_planar(n, in, out);
}

static void fused_eval_planar(const kiln_node *n, const kiln_eval_tensor *in,
                              kiln_eval_tensor *out) {
  eval(n, in, out);
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++) {
    double v = out->data[i] + (kiln_has_input(n, 3) ? in[3].data[i] : 0);
    out->data[i] = kiln_conv_activate_value(n, "", v);
  }
}

const kiln_op_def kiln_op_FusedConv = {
    .name = "FusedConv",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = fused_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = fused_infer,
    .eval = fused_eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},  // Conv's: the epilogue adds one rounding of the sum
    .tune_space = tune_space,
};

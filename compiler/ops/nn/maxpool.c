// MaxPool (1-D, 2-D or 3-D): y[n][c][o...] = max over the window of x, padding ignored.
// Attributes: kernel_shape (required; its length is the spatial rank), strides, pads, dilations,
// auto_pad, ceil_mode, storage_order; the window logic is in pool.c. x is f32 / f64, or i8 / u8
// (the quantize pass keeps MaxPool on u8: exact at its input's scale and zero point).
// The optional second output Indices (i64, y's shape) holds where each maximum was found: the
// first maximal element in window order, as a flat index into x counted over the whole tensor,
//   storage_order = 0:  ((n * C + c) * D1 + i1) * D2 + i2 ...   (row-major)
//   storage_order = 1:  (n * C + c) * D1 * D2 ... + i1 + i2 * D1 + i3 * D1 * D2 ...
//                       (each (n, c) plane column-major), as onnxruntime and the ONNX tests do.
// Kiln's own attributes layout = "NCHWc" and lanes L (set by the select-layout pass behind a
// blocked convolution): a 2-D f32 MaxPool without Indices then reads x (N, C / L, H, W, L) and
// writes y (N, C / L, OH, OW, L), each pixel's L channels combined as one vector.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = true, .quantized = true};

// The identity of max in dtype t: -inf, or the smallest i8 / u8 (a window lying entirely in the
// padding gives it).
static double lowest(kiln_dtype t) {
  return kiln_dtype_is_float(t) ? -INFINITY : t == KILN_I8 ? -128 : 0;
}

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false}, {"ceil_mode", KILN_ATTR_INT, false},
    {"dilations", KILN_ATTR_INTS, false},  {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},       {"storage_order", KILN_ATTR_INT, false},
    {"strides", KILN_ATTR_INTS, false},    {"layout", KILN_ATTR_STRING, false},
    {"lanes", KILN_ATTR_INT, false},       {0},
};

static bool has_indices(const kiln_node *n) { return n->n_outputs > 1 && n->outputs[1] >= 0; }

// L when x and y are NCHWc; 0: planar.
static int64_t blocked_lanes(const kiln_node *n) {
  return strcmp(kiln_attr_string(n, "layout", "NCHW"), "NCHWc") == 0 ? kiln_attr_int(n, "lanes", 0)
                                                                     : 0;
}

// layout "NCHW" (the default) or "NCHWc"; NCHWc: lanes >= 1, x (N, C / L, H, W, L), f32, no
// Indices. Then the planar inference on x's planar view, y blocked as x.
static bool infer_blocked(kiln_graph *g, kiln_node *n, kiln_diag *d, bool *blocked) {
  const char *layout = kiln_attr_string(n, "layout", "NCHW");
  *blocked = strcmp(layout, "NCHWc") == 0;
  if (!*blocked && strcmp(layout, "NCHW") != 0) {
    kiln_op_error(d, n, "attrs.layout: expected \"NCHW\" or \"NCHWc\", got \"%s\"", layout);
    return false;
  }
  if (!*blocked) return true;
  int64_t L;
  kiln_tensor *x = kiln_in(g, n, 0);
  if (!kiln_op_read_int(n, d, "lanes", 0, 1, 64, &L)) return false;
  if (x->shape.rank != 5 || x->shape.dim[4] != L || x->dtype != KILN_F32 || has_indices(n)) {
    kiln_op_error(d, n,
                  "inputs[0] (%s): layout \"NCHWc\" expects an f32 (N, C / L, H, W, L) tensor "
                  "with L = lanes = %lld and no Indices output, got %s %s",
                  x->name, (long long)L, kiln_dtype_name(x->dtype),
                  kiln_shape_text(&x->shape).text);
    return false;
  }
  kiln_shape shape = x->shape;
  x->shape = kiln_nchw_shape(&shape);
  bool ok = kiln_pool_infer(g, n, d, opts);
  x->shape = shape;
  kiln_tensor *y = kiln_out(g, n, 0);
  if (ok) y->shape = kiln_nchwc_shape(&y->shape, L);
  return ok;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t storage_order;
  bool blocked;
  if (!kiln_op_read_int(n, d, "storage_order", 0, 0, 1, &storage_order) ||
      !infer_blocked(g, n, d, &blocked))
    return false;
  if (blocked) return true;
  if (!kiln_pool_infer(g, n, d, opts)) return false;
  // indices: (N, C, OD1, ..., ODk), i64
  if (has_indices(n)) kiln_op_set_output(g, n, 1, KILN_I64, &kiln_out(g, n, 0)->shape);
  return true;
}

// Index `at` (row-major within a plane of w's input) in the storage order's layout.
static int64_t plane_index(const kiln_window *w, int64_t at, bool column_major) {
  if (!column_major) return at;
  int64_t index = 0, scale = 1;
  int64_t pos[KILN_MAX_SPATIAL];
  for (int i = w->rank - 1; i >= 0; i--) pos[i] = at % w->in[i], at /= w->in[i];
  for (int i = 0; i < w->rank; i++) index += pos[i] * scale, scale *= w->in[i];
  return index;
}

static void eval_planar(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out);

// NCHWc: the planar reference on a planar copy of x, its result blocked.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t L = blocked_lanes(n);
  if (!L) {
    eval_planar(n, in, out);
    return;
  }
  kiln_shape xs, ys = kiln_nchw_shape(out->shape);
  kiln_eval_tensor x = kiln_eval_unblocked(&in[0], L, &xs);
  kiln_eval_tensor y = {&ys, out->dtype,
                        kiln_xmalloc(sizeof(double) * (size_t)kiln_shape_numel(&ys))};
  eval_planar(n, &x, &y);
  kiln_nchwc_copy(&ys, L, y.data, out->data, true);
  free(x.data);
  free(y.data);
}

// x: (N, C, D1, ..., Dk), y and indices: (N, C, OD1, ..., ODk)
static void eval_planar(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_window w = kiln_pool_window(n, in[0].shape, opts);
  int64_t planes = in[0].shape->dim[0] * in[0].shape->dim[1];
  int64_t in_size = kiln_window_in_size(&w), out_size = kiln_window_out_size(&w);
  int64_t taps = kiln_window_taps(&w);
  bool column_major = kiln_attr_int(n, "storage_order", 0) != 0;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t o = 0; o < out_size; o++) {
      double m = lowest(out[0].dtype);
      int64_t arg = -1, at;
      for (int64_t t = 0; t < taps; t++) {
        if (!kiln_window_tap(&w, o, t, &at)) continue;  // padding
        double v = in[0].data[p * in_size + at];
        if (arg < 0 || v > m) m = v, arg = at;
      }
      out[0].data[p * out_size + o] = m;
      if (has_indices(n))
        out[1].data[p * out_size + o] =
            arg < 0 ? -1 : (double)(p * in_size + plane_index(&w, arg, column_major));
    }
}

// The storage-order-1 index of the current tap: plane * in_size + sum(pos[i] * scale[i]).
static kiln_lexpr *column_major_index(const kiln_lower_ctx *c, const kiln_window *w,
                                      const kiln_pool_vars *v, const int *k) {
  kiln_lb *b = c->b;
  const kiln_shape *xs = &kiln_lower_in(c, 0)->shape;
  kiln_lexpr *plane = lx_madd(b, lx_var(b, v->n), xs->dim[1], lx_var(b, v->c));
  kiln_lexpr *index = lx_mul(b, plane, lx_int(b, kiln_window_in_size(w)));
  int64_t scale = 1;
  for (int i = 0; i < w->rank; i++) {
    index = lx_add(b, index,
                   lx_mul(b, kiln_window_lower_pos(b, w, i, v->o[i], k[i]), lx_int(b, scale)));
    scale *= w->in[i];
  }
  return index;
}

// With Indices: acc and the index of the first maximum, updated only by a strictly larger value.
//   for n, c, o...: acc = -inf; arg = -1
//     for k...: xv = x[...]; arg = xv > acc ? index : arg; acc = max(acc, xv)
//     y[...] = acc; indices[...] = arg
static void lower_with_indices(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_window w = kiln_pool_window(c->node, &x->shape, opts);
  bool column_major = kiln_attr_int(c->node, "storage_order", 0) != 0;
  kiln_lb_comment(b, "MaxPool %s: %s -> %s and indices (storage_order %d)", c->node->name,
                  kiln_describe(x).text, kiln_describe(y).text, column_major);
  kiln_dtype t = y->dtype;
  kiln_pool_vars v;
  kiln_pool_open_outputs(c, &w, &v);
  v.acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, lowest(t)));
  int arg = kiln_lb_decl(b, "arg", KILN_I64, lx_int(b, -1));
  int k[KILN_MAX_SPATIAL];
  kiln_pool_open_taps(c, &w, &v, k);
  int xv = kiln_lb_decl(b, "xv", t, lx_load(b, kiln_in_buf(c, 0), kiln_pool_x_index(c, &w, &v, k)));
  kiln_lexpr *index =
      column_major ? column_major_index(c, &w, &v, k) : kiln_pool_x_index(c, &w, &v, k);
  kiln_lexpr *larger = lx_bin(b, LB_LT, lx_var(b, v.acc), lx_var(b, xv));
  kiln_lexpr *first = lx_bin(b, LB_LT, lx_var(b, arg), lx_int(b, 0));
  kiln_lb_assign(b, arg, lx_select(b, lx_bin(b, LB_OR, larger, first), index, lx_var(b, arg)));
  kiln_lb_assign(b, v.acc, lx_bin(b, LB_MAX, lx_var(b, v.acc), lx_var(b, xv)));
  for (int i = 0; i < w.rank; i++) kiln_lb_end_for(b);  // the kernel loops
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_pool_y_index(c, &v, 0), lx_var(b, v.acc));
  kiln_lb_store(b, kiln_out_buf(c, 1), kiln_pool_y_index(c, &v, 1), lx_var(b, arg));
  for (int i = 0; i < w.rank + 2; i++) kiln_lb_end_for(b);  // the output loops, c, n
}

// acc (or the output row) starts at lowest(t) so that a window lying entirely in the padding
// gives it, as in eval. 2-D pools without Indices take the vectorized row form (NCHWc too). On i8 /
// u8 (the quantize pass) MaxPool is exact at its input's scale and zero point.
static void lower(const kiln_lower_ctx *c) {
  double init = lowest(kiln_lower_out(c, 0)->dtype);
  if (has_indices(c->node))
    lower_with_indices(c);
  else if (kiln_lower_in(c, 0)->shape.rank == 4 || blocked_lanes(c->node))  // NCHWc: rank 5
    kiln_pool_lower_rows(c, opts, init, LB_MAX);
  else
    kiln_pool_lower(c, opts, init, LB_MAX, NULL);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  if (!blocked_lanes(n)) return kiln_pool_flops(g, n, opts);
  kiln_shape xs = kiln_nchw_shape(&kiln_in(g, n, 0)->shape);  // NCHWc: the planar view's window
  kiln_window w = kiln_pool_window(n, &xs, opts);
  return kiln_shape_numel(&kiln_out(g, n, 0)->shape) * kiln_window_taps(&w);
}

// Gradient (docs/training.md): each window's dy goes to its first maximal element (MaxPoolGrad,
// 2-D only; Indices carries no gradient).
static bool grad(kiln_grad_ctx *c) {
  if (c->dy[0] < 0 || !c->need[0]) return true;
  if (!kiln_window_grad_is_2d(c, 0)) return false;
  int in[2] = {c->node.inputs[0], c->dy[0]};
  c->dx[0] = kiln_gb_op_like(c, "MaxPoolGrad", in, 2, NULL);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_MaxPool = {
    .name = "MaxPool",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {0, 0},
    .grad = grad,
};

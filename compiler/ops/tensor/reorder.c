// Reorder (Kiln's own op, placed by the select-layout pass): moves a 4-D image tensor between
// the planar layout NCHW and the channel-blocked layout NCHWc that blocked convolutions read and
// write, c = `lanes` channels innermost (one vector):
//   layout "NCHWc": x (N, C, H, W), C a multiple of lanes  ->  y (N, C / lanes, H, W, lanes)
//                   y[n][cb][h][w][l] = x[n][cb * lanes + l][h][w]
//   layout "NCHW":  x (N, CB, H, W, lanes)                  ->  y (N, CB * lanes, H, W)
// Both are the transposition of x viewed as (N, CB, lanes, H, W) with (N, CB, H, W, lanes): one
// strided copy walking y contiguously. Any dtype; exact.
#include <string.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"layout", KILN_ATTR_STRING, true}, {"lanes", KILN_ATTR_INT, true}, {0}};

static bool to_blocked(const kiln_node *n) {
  return strcmp(kiln_attr_string(n, "layout", ""), "NCHWc") == 0;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const char *layout = kiln_attr_string(n, "layout", "");
  int64_t L;
  if (strcmp(layout, "NCHWc") != 0 && strcmp(layout, "NCHW") != 0) {
    kiln_op_error(d, n, "attrs.layout: expected \"NCHWc\" or \"NCHW\", got \"%s\"", layout);
    return false;
  }
  if (!kiln_op_read_int(n, d, "lanes", 0, 1, 64, &L)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  const int64_t *xd = x->shape.dim;
  bool blocked = to_blocked(n);
  if (blocked ? x->shape.rank != 4 || xd[1] % L != 0 : x->shape.rank != 5 || xd[4] != L) {
    kiln_op_error(d, n, "inputs[0] (%s): expected %s, got %s", x->name,
                  blocked ? "(N, C, H, W) with C a multiple of lanes" : "(N, CB, H, W, lanes)",
                  kiln_shape_text(&x->shape).text);
    return false;
  }
  // out: (N, C / lanes, H, W, lanes) or (N, CB * lanes, H, W)
  kiln_shape out = blocked ? kiln_nchwc_shape(&x->shape, L) : kiln_nchw_shape(&x->shape);
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// y as a (N, CB, H, W, L) or (N, CB, L, H, W) walk: its shape and where each step moves in x.
static kiln_strided walk(const kiln_node *n, const kiln_shape *x) {
  bool blocked = to_blocked(n);
  int64_t L = kiln_attr_int(n, "lanes", 1), N = x->dim[0];
  int64_t CB = blocked ? x->dim[1] / L : x->dim[1], H = x->dim[2], W = x->dim[3];
  int64_t planar[5] = {CB * L * H * W, L * H * W, H * W, W, 1};  // (N, CB, L, H, W)
  int64_t block[5] = {CB * H * W * L, H * W * L, 1, W * L, L};   // (N, CB, L, H, W) in NCHWc
  kiln_strided s = {.shape = {.rank = 5}};
  int64_t dims[5] = {N, CB, L, H, W};
  if (blocked) {  // y (N, CB, H, W, L) contiguous; x planar
    int order[5] = {0, 1, 3, 4, 2};
    for (int i = 0; i < 5; i++) s.shape.dim[i] = dims[order[i]], s.src_stride[i] = planar[order[i]];
    kiln_contiguous_strides(&s.shape, s.dst_stride);
  } else {  // y (N, CB, L, H, W) contiguous; x blocked
    for (int i = 0; i < 5; i++) s.shape.dim[i] = dims[i], s.src_stride[i] = block[i];
    kiln_contiguous_strides(&s.shape, s.dst_stride);
  }
  return s;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  bool blocked = to_blocked(n);
  kiln_shape planar = blocked ? *in[0].shape : *out->shape;
  kiln_nchwc_copy(&planar, kiln_attr_int(n, "lanes", 1), in[0].data, out->data, blocked);
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(c->b, "Reorder %s: %s -> %s (%s)", c->node->name, kiln_describe(x).text,
                  kiln_describe(y).text, kiln_attr_string(c->node, "layout", ""));
  kiln_strided s = walk(c->node, &x->shape);
  kiln_strided_lower(c->b, kiln_in_buf(c, 0), kiln_out_buf(c, 0), &s);
}

const kiln_op_def kiln_op_Reorder = {
    .name = "Reorder",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
};

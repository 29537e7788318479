// Register-blocked lowerings of Conv's backward kernels (conv_grad.c keeps the row-wise ones for
// what these do not cover): ConvGradInput through the blocked direct convolution of
// compiler/ops/nn/conv.c (conv_grad_input.c), ConvGradFilter as a register-tiled product of dy and
// the patches of x (conv_grad_filter.c).
#ifndef KILN_OPS_TRAIN_CONV_GRAD_BLOCKED_H
#define KILN_OPS_TRAIN_CONV_GRAD_BLOCKED_H

#include "train_internal.h"

// Shapes of one conv: x (N, C, H, W), w (M, C/g, kH, kW), y (N, M, OH, OW), over window win.
typedef struct kiln_conv_grad_dims {
  kiln_shape x, w, y;
  int64_t group;
  kiln_window win;
} kiln_conv_grad_dims;

// Each emits the whole kernel and returns true, or emits nothing and returns false when its
// lowering does not apply (groups, f64, shapes it does not tile).
bool kiln_conv_grad_input_blocked(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd);
bool kiln_conv_grad_filter_blocked(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd);
// ConvGradFilter vectorized over output pixels (conv_grad_filter_pixels.c), for the plan p of the
// conv (group 1, f32): emits the kernel and returns true, or nothing and false when it does not
// apply (OW not whole vectors, a 1x1 window, x's copy not smaller than dy).
struct kiln_conv_plan;
bool kiln_conv_grad_filter_pixels(const kiln_lower_ctx *c, const struct kiln_conv_plan *p);

#endif

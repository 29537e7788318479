// The register-blocked direct convolution of conv.c, for the other ops that lower to it (the
// backward convolutions of compiler/ops/train/conv_grad*.c). A plan describes one 2-D conv of a
// (padded) input xp (N, C, HP, WP) by weights packed as (ceil(M / L), C, kH, kW, L) into y
// (N, M, OH, OW), L the target's f32 vector width; conv.c's comment above conv_plan has the loops.
// Also what conv.c and conv_depthwise.c (the depthwise lowerings) share.
#ifndef KILN_OPS_NN_CONV_INTERNAL_H
#define KILN_OPS_NN_CONV_INTERNAL_H

#include "../op_internal.h"

typedef struct kiln_conv_plan {
  int64_t N, C, M, KH, KW;
  int64_t HP, WP;        // the (padded) input planes the kernel reads
  int64_t pt, pl, H, W;  // where x lies inside them
  int64_t OH, OW, sh, sw, dh, dw;
  int64_t lanes, max_acc;    // the target's f32 vector width; accumulator vectors per tile
  int64_t MV, RO, RW;        // channel vectors, vectors per tile, columns per tile
  bool padded;               // reads a padded copy of x
  bool subsampled;           // a strided 1x1 conv: reads x[n][c][oh * sh][ow * sw] gathered once
                             // (conv.c's own tiles read x in place instead: read_strided)
  int64_t xh, xw, xsh, xsw;  // x's own H, W and strides (before subsampling)
  int64_t yh, yw;            // the output's own OH, OW (before flattening)
  int64_t blocked;           // y and z are NCHWc with this many lanes (= lanes); 0: NCHW
  int64_t xblocked;          // the same for x (kiln_conv_plan_make: = blocked)
  int64_t G, CG;             // groups and input channels per group (1 and C unless grouped)
} kiln_conv_plan;

// The analytical plan of a conv of x (N, C, win->in) by w (M, C, win->kernel) over a resolved
// 1-D or 2-D window, with `lanes` f32 lanes per vector; blocked: x and y are NCHWc of that many
// lanes (0: NCHW).
kiln_conv_plan kiln_conv_plan_make(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                   int64_t lanes, int64_t blocked);
// The buffer the tiles read: input 0 of the node itself, or its padded or subsampled copy in
// kernel scratch (emitted here).
int kiln_conv_plan_input(const kiln_lower_ctx *c, const kiln_conv_plan *p);
// The tile loops: y (output 0 of the node) from xp, the packed weights wp and the packed bias bp
// (buffers of f32; bp holds MV * L values), through the node's epilogue (none unless FusedConv).
void kiln_conv_lower_tiles(const kiln_lower_ctx *c, const kiln_conv_plan *p, int xp, int wp,
                           int bp);
// Packing channel oc (= vb * L + l) of a tensor of M channels into vectors of L lanes: the
// channel an index may name (oc, clamped to M - 1 when M is no multiple of L) and the lane's
// value (load, or 0 past M).
kiln_lexpr *kiln_conv_lane_channel(kiln_lb *b, kiln_lexpr *oc, int64_t M, int64_t lanes);
kiln_lexpr *kiln_conv_lane_value(kiln_lb *b, kiln_lexpr *oc, int64_t M, int64_t lanes,
                                 kiln_lexpr *load);

// ---- Shared by conv.c and conv_depthwise.c ----
// The node's analytical plan (its x may be NCHWc: the plan is of the planar view).
kiln_conv_plan kiln_conv_node_plan(const kiln_lower_ctx *c);
// The lanes of a FusedConv that reads or writes NCHWc (layout, input_layout); 0: all NCHW.
int64_t kiln_conv_blocked_lanes(const kiln_node *n);
// The activation `<prefix>activation` ("Relu", or "Clip" with `<prefix>activation_params` =
// [min, max], or none) of a FusedConv (prefix "") or FusedExpandDepthwise ("" and "expand_"):
// checked (an error naming the attribute), applied to a reference value, and lowered.
bool kiln_conv_check_activation(const kiln_node *n, kiln_diag *d, const char *prefix);
double kiln_conv_activate_value(const kiln_node *n, const char *prefix, double v);
kiln_lexpr *kiln_conv_activate(kiln_lb *b, const kiln_node *n, const char *prefix, kiln_lexpr *v);
// FusedConv's epilogue act(v + z[index]) on one output value (v itself for a plain Conv).
kiln_lexpr *kiln_conv_epilogue(const kiln_lower_ctx *c, kiln_lexpr *v, kiln_lexpr *index);
// for v in [0, n), fully unrolled (a register block dimension); returns the loop variable.
int kiln_conv_unrolled_for(kiln_lb *b, const char *name, int64_t n);
// Columns per tile of RO vectors: the largest width with at most max_acc accumulators that
// divides OW (down to half of it), else the largest width.
int64_t kiln_conv_tile_width(int64_t OW, int64_t RO, int64_t max_acc);
// A 2-D f32 conv with group = C = M (conv_depthwise.c), and its lowering (planar or NCHWc).
bool kiln_conv_depthwise_applies(const kiln_lower_ctx *c);
void kiln_conv_lower_depthwise(const kiln_lower_ctx *c);
// Winograd F(2x2, 3x3) (conv_winograd.c): a FusedConv with algo = "winograd". Eligible: 3x3,
// stride 1, dilation 1, one group, pads <= 1, f32 constant weights, NCHWc x and y (what the
// select-conv-algo pass asks); check: the algo attribute names an algorithm that fits the node.
bool kiln_conv_winograd_eligible(const kiln_graph *g, const kiln_node *n);
bool kiln_conv_winograd_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d);
bool kiln_conv_winograd_applies(const kiln_lower_ctx *c);
void kiln_conv_lower_winograd(const kiln_lower_ctx *c);
// Winograd with weights known only at run time (training), x and y planar: fits a 2-D window of
// 3x3, stride 1, dilation 1 over a batch of N, C and M multiples of the lanes and >= 128, enough
// tiles for U's size (conv_winograd.c), not on 8-lane targets.
bool kiln_conv_winograd_runtime_fits(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                     int64_t lanes);
// The conv of x (input 0, (N, C, H, W)) over win into output 0 ((N, M, OH, OW)), U transformed
// from input 1 at the start of the kernel: w (M, C, 3, 3) and the bias (input 2) if any; when
// flipped, w is (C, M, 3, 3) read flipped and transposed, no bias (ConvGradInput's conv of dy).
void kiln_conv_lower_winograd_runtime(const kiln_lower_ctx *c, const kiln_window *win, int64_t N,
                                      int64_t C, int64_t M, bool flipped);
// A planar Conv or FusedConv with weights that are not constants and a window that fits:
// lowered as above (true), or nothing emitted (false).
bool kiln_conv_lower_winograd_node_runtime(const kiln_lower_ctx *c);
// ConvGradFilter by the transposed transform: x (N, C, H, W) input 0, dy (N, M, OH, OW) input 1,
// dw (M, C, 3, 3) output 0, win the forward conv's window. Fits: as above, and the transforms of
// x and dy small enough (conv_winograd.c).
bool kiln_conv_grad_filter_winograd_fits(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                         int64_t lanes);
void kiln_conv_grad_filter_winograd(const kiln_lower_ctx *c, const kiln_window *win, int64_t N,
                                    int64_t C, int64_t M);

#endif

// The register-blocked direct convolution of conv.c, for the other ops that lower to it (the
// backward convolutions of compiler/ops/train/conv_grad*.c). A plan describes one 2-D conv of a
// (padded) input xp (N, C, HP, WP) by weights packed as (ceil(M / L), C, kH, kW, L) into y
// (N, M, OH, OW), L the target's f32 vector width; conv.c's comment above conv_plan has the loops.
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
  int64_t xh, xw, xsh, xsw;  // x's own H, W and strides (before subsampling)
  int64_t yh, yw;            // the output's own OH, OW (before flattening)
  int64_t blocked;           // x, y and z are NCHWc with this many lanes (= lanes); 0: NCHW
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

#endif

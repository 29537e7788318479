// select-conv-algo: runs 3x3, stride-1 convolutions with Winograd F(2x2, 3x3) (FusedConv algo =
// "winograd", compiler/ops/nn/conv_winograd.c) where it pays: a blocked (NCHWc in and out,
// select-layout) conv that kiln_conv_winograd_eligible accepts, with at least MIN_CHANNELS input
// and output channels (fewer: the transforms cost more than the GEMMs save), on targets other
// than AVX2 (measured in docs/performance.md, "Winograd convolutions"), unless it has few output
// tiles and large weights (streams_weights). Values change by rounding
// only: the products are summed in another order (the tolerance is in docs/performance.md).
#include <string.h>

#include "../ops/nn/conv_internal.h"
#include "pipeline.h"

enum { MIN_CHANNELS = 32 };

// Few tiles per weight and transformed weights too big to stay in cache: direct. Winograd's U is
// 16/9 the size of the weights, and each of its values serves N * tiles products; below MIN_TILES
// (ResNet-18's layer4: 16 tiles of 7x7 at batch 1) with U over CACHED_U_BYTES (there 16.8 MB
// against 9.4 MB of weights, streamed from memory every inference) the direct conv was as fast
// per kernel and 3-4 % faster over the whole model (docs/performance.md, session 10).
enum { MIN_TILES = 32, CACHED_U_BYTES = 1 << 20 };

static bool streams_weights(const kiln_graph *g, const kiln_node *n, int64_t C, int64_t M) {
  kiln_shape y = kiln_nchw_shape(&kiln_out(g, n, 0)->shape);
  int64_t tiles = y.dim[0] * ((y.dim[2] + 1) / 2) * ((y.dim[3] + 1) / 2);
  return tiles < MIN_TILES && 16 * C * M * (int64_t)sizeof(float) > CACHED_U_BYTES;
}

// Not on AVX2 (8 lanes): there ResNet-18 took 61 ms with Winograd against 52 ms without, while
// AVX-512 (16 lanes) and the generic target (4) gained 30 % (docs/performance.md).
enum { SLOWER_LANES = 8 };

static bool pays(const kiln_graph *g, const kiln_node *n) {
  if (n->dead || kiln_node_attr(n, "algo") || !kiln_conv_winograd_eligible(g, n)) return false;
  if (kiln_attr_int(n, "lanes", 0) == SLOWER_LANES) return false;
  int64_t C = kiln_nchw_shape(&kiln_in(g, n, 0)->shape).dim[1];
  int64_t M = kiln_in(g, n, 1)->shape.dim[0];
  return C >= MIN_CHANNELS && M >= MIN_CHANNELS && !streams_weights(g, n, C, M);
}

bool kiln_pass_select_conv_algo(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  *changed = false;
  for (int i = 0; i < g->n_nodes; i++) {
    if (!pays(g, &g->nodes[i])) continue;
    kiln_attr *a = kiln_node_add_attr(g, &g->nodes[i], "algo", KILN_ATTR_STRING);
    a->s = kiln_pool_strdup(&g->pool, "winograd");
    *changed = true;
  }
  return true;
}

// Shared by BatchNormTrain and BatchNormTrainGrad (batchnorm_train.c, batchnorm_train_grad.c):
// the (N, C, S) view of x, input checks and the per-channel loop pieces of their lowerings; the
// view and the channel check also serve BatchNormalization (batchnormalization.c).
#ifndef KILN_OPS_NN_BATCHNORM_TRAIN_H
#define KILN_OPS_NN_BATCHNORM_TRAIN_H

#include "../op_internal.h"

// x: (N, C, D1, ..., Dk) viewed as (N, C, S), S = D1 * ... * Dk.
typedef struct kiln_bn_view {
  int64_t N, C, S;
} kiln_bn_view;
kiln_bn_view kiln_bn_view_of(const kiln_shape *x);

// Input 0 of rank >= 2 (N, C, ...) and inputs per_channel[0..count) of shape (C); reports naming
// the input (names[i]).
bool kiln_bn_check_channels(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                            const int *per_channel, int count, const char *const *names);
// Float inputs [0, mode] of one dtype, input 0 of rank >= 2 (N, C, ...), inputs
// per_channel[0..count) of shape (C), input `mode` (the mode flag) one value; reports naming the
// input (names[i]).
bool kiln_bn_check_inputs(kiln_graph *g, kiln_node *n, kiln_diag *d, const int *per_channel,
                          int count, int mode, const char *const *names);

// buf[(n * C + c) * S + s] for loop variables n, c, s.
kiln_lexpr *kiln_bn_at(kiln_lb *b, int buf, const kiln_bn_view *v, int n, int c, int s);
// One element of a per-channel sum: a fresh expression for element (n, c, s).
typedef kiln_lexpr *(*kiln_bn_term)(kiln_lb *b, const void *arg, int n, int c, int s);
// Declares local `name` = sum over n < N, s < S of term(n, c, s) (the inner loop over s is
// contiguous: a vectorized reduction); returns the local.
int kiln_bn_sum(kiln_lb *b, const char *name, kiln_dtype t, const kiln_bn_view *v, int c,
                kiln_bn_term term, const void *arg);
// f * train + (1 - f) * infer, f = f_buf[0] (the mode flag).
kiln_lexpr *kiln_bn_blend(kiln_lb *b, kiln_dtype t, int f_buf, kiln_lexpr *train,
                          kiln_lexpr *infer);

#endif

// quantize, bias correction (docs/quantization.md, "Bias correction"): quantization shifts the mean
// of a layer's output channels (weights rounded to i8, activations clipped and rounded), and the
// shifts add up along a network. After the rewrite, the quantized graph runs over the
// calibration samples (ptq.c's measure) and the output of each layer making a graph output — a
// quantized Conv or biased Gemm, or the classifier head's Gemm kept in FP32 — is compared with
// its FP32 values channel by channel; the mean error of each channel is subtracted from its bias
// (the i32 bias in units of x_scale * w_scale[c], or the f32 bias). Where a Relu is fused only
// the positions where the FP32 output is clearly positive count (RELU_MARGIN steps of the
// output's scale: the quantized one is positive there too, and its error the pre-activation's;
// near 0 the Relu would bias the mean). Only the outputs: an inner layer's error includes the
// shifts upstream, which correcting every layer at once would count twice.
#include <math.h>
#include <stdlib.h>

#include "ptq_internal.h"

enum { RELU_MARGIN = 2 };

bool kiln_ptq_bias_correction_wanted(const kiln_quant_options *o) {
  return o->bias_correction != KILN_BIAS_CORRECTION_OFF;
}

void kiln_ptq_track_bias(layer *L, const char *bias_name, const float *unit, int64_t channels) {
  L->bias_name = bias_name;
  L->channels = channels;
  L->bias_unit = malloc(sizeof(double) * (size_t)channels);
  L->err_sum = calloc((size_t)channels, sizeof(double));
  L->err_count = calloc((size_t)channels, sizeof(double));
  for (int64_t c = 0; c < channels; c++) L->bias_unit[c] = unit ? unit[c] : 1.0;
}

void kiln_ptq_channel_errors(layer *L, const kiln_shape *y, int64_t from, const float *ref,
                             const double *got, int64_t n) {
  if (!L->err_sum) return;
  // y: (N, C, ...) with C == L->channels; element `from + i` of the samples seen so far
  int64_t inner = kiln_shape_numel(y) / (y->dim[0] * y->dim[1]);
  for (int64_t i = 0; i < n; i++) {
    if (L->relu >= 0 && !(ref[i] > RELU_MARGIN * L->y_scale)) continue;
    int64_t c = (from + i) / inner % L->channels;
    L->err_sum[c] += (float)got[i] - (double)ref[i];
    L->err_count[c] += 1;
  }
}

// Subtracts each channel's mean error from L's bias tensor in g; clears the sums.
static void correct_layer(kiln_graph *g, layer *L) {
  int t = kiln_graph_find_tensor(g, L->bias_name);
  if (t < 0) return;
  kiln_tensor *b = &g->tensors[t];
  for (int64_t c = 0; c < L->channels; c++) {
    if (L->err_count[c] > 0) {
      double shift = L->err_sum[c] / L->err_count[c] / L->bias_unit[c];
      double v = kiln_tensor_get(b, c) - (b->dtype == KILN_I32 ? nearbyint(shift) : shift);
      if (b->dtype == KILN_I32) v = fmin(fmax(v, -2147483648.0), 2147483647.0);
      kiln_element_set(b->data, (int)b->dtype, c, v);
    }
    L->err_sum[c] = L->err_count[c] = 0;
  }
}

void kiln_ptq_correct_biases(ptq *q) {
  for (int l = 0; l < q->n_layers; l++)
    if (q->layers[l].err_sum) correct_layer(q->g, &q->layers[l]);
  if (q->head_fix.err_sum) correct_layer(q->g, &q->head_fix);
}

void kiln_ptq_free_bias_tracking(layer *L) {
  free(L->bias_unit), free(L->err_sum), free(L->err_count);
  L->bias_unit = L->err_sum = L->err_count = NULL;
}

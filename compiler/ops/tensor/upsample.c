// Upsample (ONNX opset 7-9, deprecated for Resize): nearest (floor of o / scale) or linear
// (N-linear, asymmetric coordinates o / scale, neighbours clamped at the edge) upsampling by
// per-axis `scales`: the attribute (opset 7) or the constant input 1 (opset 9). out =
// floor(in * scale). Nearest works on every dtype, linear (also spelled bilinear) on f32/f64.
#include <string.h>

#include "resample.h"

static const kiln_attr_spec attrs[] = {
    {"mode", KILN_ATTR_STRING, false}, {"scales", KILN_ATTR_FLOATS, false}, {0}};

// Scales from the attribute or input 1 into r->scale; sets r->out.
static bool plan(const kiln_node *n, kiln_diag *d, const double *scales, int count,
                 kiln_resample *r) {
  if (count != r->in.rank) {
    kiln_op_error(d, n, "scales: expected %d values (one per axis of the input), got %d",
                  r->in.rank, count);
    return false;
  }
  r->out = r->in;
  for (int i = 0; i < count; i++) {
    if (!(scales[i] > 0)) {
      kiln_op_error(d, n, "scales: expected positive scales, got %g", scales[i]);
      return false;
    }
    r->scale[i] = scales[i];
    r->out.dim[i] = (int64_t)((double)r->in.dim[i] * scales[i]);
  }
  return kiln_op_check_dims(n, d, &r->out, "this upsampling");
}

static bool read_mode(const kiln_node *n, kiln_diag *d, kiln_resample *r) {
  const char *mode = kiln_attr_string(n, "mode", "nearest");
  r->coord = KILN_RS_ASYMMETRIC;
  r->round = KILN_RS_FLOOR;
  if (strcmp(mode, "nearest") == 0) {
    r->mode = KILN_RS_NEAREST;
  } else if (strcmp(mode, "linear") == 0 || strcmp(mode, "bilinear") == 0) {
    r->mode = KILN_RS_LINEAR;
  } else {
    kiln_op_error(d, n, "attrs.mode: expected \"nearest\" or \"linear\", got \"%s\"", mode);
    return false;
  }
  return true;
}

static bool graph_plan(const kiln_graph *g, const kiln_node *n, kiln_diag *d, kiln_resample *r) {
  double scales[KILN_MAX_RANK + 1];
  int count;
  r->in = kiln_in(g, n, 0)->shape;
  if (!read_mode(n, d, r)) return false;
  const kiln_attr *a = kiln_node_attr(n, "scales");
  if (a && kiln_has_input(n, 1)) {
    kiln_op_error(d, n,
                  "attrs.scales: give scales either as the attribute (opset 7) or as "
                  "inputs[1] (opset 9), not both");
    return false;
  }
  if (kiln_has_input(n, 1)) {
    count = kiln_op_const_floats(g, n, d, 1, "scales", scales, KILN_MAX_RANK);
    if (count < 0) return false;
  } else if (a) {
    count = a->count;
    for (int i = 0; i < count && i <= KILN_MAX_RANK; i++) scales[i] = a->floats[i];
  } else {
    kiln_op_error(d, n, "Upsample needs scales (inputs[1], or attrs.scales in opset 7)");
    return false;
  }
  return plan(n, d, scales, count, r);
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_resample_node_infer(g, n, d, graph_plan);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_resample r = {.in = *in[0].shape};
  double scales[KILN_MAX_RANK];
  int count = r.in.rank;
  read_mode(n, NULL, &r);
  const kiln_attr *a = kiln_node_attr(n, "scales");
  for (int i = 0; i < count; i++) scales[i] = kiln_has_input(n, 1) ? in[1].data[i] : a->floats[i];
  plan(n, NULL, scales, count, &r);
  kiln_resample_eval(&r, in[0].data, out->data);
}

static void lower(const kiln_lower_ctx *c) { kiln_resample_node_lower(c, graph_plan); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_resample_node_flops(g, n, graph_plan);
}

const kiln_op_def kiln_op_Upsample = {
    .name = "Upsample",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {2e-5, 1e-6},  // as Resize: linear weights in double vs PyTorch's f32
};

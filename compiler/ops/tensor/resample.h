// Resampling shared by Resize and Upsample (resample.c): where each output position reads from
// (ONNX's coordinate transformations and nearest rounding), and the nearest / N-linear / N-cubic
// kernels as reference code and as loop IR.
#ifndef KILN_OPS_TENSOR_RESAMPLE_H
#define KILN_OPS_TENSOR_RESAMPLE_H

#include "../op_internal.h"

// Linear: 2 taps per resized axis (1 - l, l at floor(x), floor(x) + 1; l = x - floor(x)).
// Cubic: 4 taps at floor(x) - 1 .. floor(x) + 2 with Keys' kernel of parameter cubic_coeff_a
// (W(s) = ((a+2)s - (a+3))s^2 + 1 for s <= 1, ((as - 5a)s + 8a)s - 4a for 1 < s < 2), taps outside
// the input clamped to its edge, or with exclude_outside given weight 0 and the rest renormalized.
typedef enum { KILN_RS_NEAREST, KILN_RS_LINEAR, KILN_RS_CUBIC } kiln_rs_mode;

// x_original for output position o along an axis (in: input size, out: output size; len: ONNX's
// output length in * scale, which is not rounded when scales are given):
typedef enum {
  KILN_RS_HALF_PIXEL,            // (o + 0.5) / scale - 0.5
  KILN_RS_PYTORCH_HALF_PIXEL,    // out > 1 ? (o + 0.5) / scale - 0.5 : 0
  KILN_RS_ALIGN_CORNERS,         // out > 1 ? o * (in - 1) / (len - 1) : 0
  KILN_RS_ASYMMETRIC,            // o / scale
  KILN_RS_TF_HALF_PIXEL_FOR_NN,  // (o + 0.5) / scale
  // start * (in - 1) + (out > 1 ? o * (end - start) * (in - 1) / (len - 1)
  //                             : (end - start) * (in - 1) / 2), with roi's start and end for the
  // axis; x outside [0, in - 1] gives extrapolation_value
  KILN_RS_TF_CROP_AND_RESIZE,
} kiln_rs_coord;

// How nearest mode turns x_original into an index (then clamped to [0, in - 1]):
typedef enum {
  KILN_RS_ROUND_PREFER_FLOOR,  // ceil(x - 0.5)
  KILN_RS_ROUND_PREFER_CEIL,   // floor(x + 0.5)
  KILN_RS_FLOOR,
  KILN_RS_CEIL,
} kiln_rs_round;

typedef struct kiln_resample {
  kiln_rs_mode mode;
  kiln_rs_coord coord;
  kiln_rs_round round;
  kiln_shape in, out;
  double scale[KILN_MAX_RANK];  // per axis, as the transformation uses it
  double len[KILN_MAX_RANK];    // ONNX's output length per axis; 0 means out.dim
  double cubic_a;               // cubic: the kernel's a (ONNX default -0.75)
  bool exclude_outside;         // cubic: taps outside the input get weight 0
  double roi_start[KILN_MAX_RANK], roi_end[KILN_MAX_RANK];  // tf_crop_and_resize, normalized
  double extrapolation;  // tf_crop_and_resize: the value outside the input
} kiln_resample;

// True when axis reads input position o for output position o (same size, scale 1).
bool kiln_resample_identity_axis(const kiln_resample *r, int axis);
// y (r->out) from x (r->in), both row-major doubles.
void kiln_resample_eval(const kiln_resample *r, const double *x, double *y);
// The loop nest computing output 0 of the node from its input 0.
void kiln_resample_lower(const kiln_lower_ctx *c, const kiln_resample *r);
// Output elements times the input elements read per output element (2^k for k linear axes).
int64_t kiln_resample_flops(const kiln_resample *r);

// The rest of a Resize / Upsample op, given how it plans a node (reads and checks its attributes
// and constant inputs into r; d may be NULL once infer has checked):
typedef bool (*kiln_resample_plan_fn)(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                                      kiln_resample *r);
// Checks x and the plan (linear needs a float x); sets the output (x's dtype, r.out).
bool kiln_resample_node_infer(kiln_graph *g, kiln_node *n, kiln_diag *d,
                              kiln_resample_plan_fn plan);
void kiln_resample_node_lower(const kiln_lower_ctx *c, kiln_resample_plan_fn plan);
int64_t kiln_resample_node_flops(const kiln_graph *g, const kiln_node *n,
                                 kiln_resample_plan_fn plan);

#endif

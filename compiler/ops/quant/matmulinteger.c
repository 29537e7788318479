// MatMulInteger (ONNX opset 10): the exact integer matmul of (A - a_zero_point) and
// (B - b_zero_point), accumulated in i32 (qmatmul.c). Inputs A, B[, a_zero_point[, b_zero_point]]
// (zero points default to 0; one value, or one per row of A / per column of B).
//   A: (..., M, K) i8/u8   B: (..., K, N) i8/u8   Y: (broadcast(...), M, N) i32
#include "quant.h"

static const kiln_qmatmul_inputs inputs = {
    .a = 0, .b = 1, .a_zp = 2, .b_zp = 3, .a_scale = -1, .b_scale = -1, .y_scale = -1, .y_zp = -1};
static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  kiln_shape out;
  if (!kiln_qmatmul_check(g, n, d, &inputs, &out)) return false;
  kiln_op_set_output(g, n, 0, KILN_I32, &out);  // Y: (batch..., M, N) i32
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_qmatmul_accumulate_ref(n, in, &inputs, out->data);
}

static kiln_lexpr *store_acc(const kiln_lower_ctx *c, kiln_lexpr *acc, int i, int j) {
  (void)c, (void)i, (void)j;
  return acc;
}

static void lower(const kiln_lower_ctx *c) {
  if (!kiln_qmatmul_lower_fast(c, &inputs)) kiln_qmatmul_lower(c, &inputs, store_acc);
}

const kiln_op_def kiln_op_MatMulInteger = {
    .name = "MatMulInteger",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_qmatmul_flops,
    .tol = {0, 0},  // exact integer arithmetic
};

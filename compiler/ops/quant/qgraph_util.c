// The shared checks and scale ratios of the quantized graph ops (qgraph.h).
#include <stdio.h>

#include "qgraph.h"

static bool check_scalar(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                         unsigned dtypes, const char *what) {
  return kiln_op_check_dtypes(g, n, i, 1, dtypes, false, d) &&
         kiln_quant_check_param(g, n, d, i, what, dtypes, 0, "");
}

bool kiln_qgraph_check_operand(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int data,
                               const char *what) {
  char scale[64], zp[64];
  snprintf(scale, sizeof scale, "scale of %s", what);
  snprintf(zp, sizeof zp, "zero point of %s", what);
  return kiln_op_check_dtypes(g, n, data, 1, KILN_DT_QUANT, false, d) &&
         check_scalar(g, n, d, data + 1, KILN_DT(KILN_F32), scale) &&
         check_scalar(g, n, d, data + 2, KILN_DT_QUANT, zp) &&
         kiln_quant_check_same_dtype(g, n, d, data + 2, data);
}

bool kiln_qgraph_check_output(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int scale) {
  return check_scalar(g, n, d, scale, KILN_DT(KILN_F32), "scale of y") &&
         check_scalar(g, n, d, scale + 1, KILN_DT_QUANT, "zero point of y");
}

double kiln_qgraph_ratio_ref(const kiln_eval_tensor *in, int scale, int y_scale) {
  return kiln_quant_multiplier_ref(in[scale].data[0], 1, in[y_scale].data[0]);
}

int kiln_qgraph_ratio_var(const kiln_lower_ctx *c, const char *name, int scale, int y_scale) {
  kiln_lb *b = c->b;
  kiln_lexpr *m = kiln_quant_multiplier_lx(b, kiln_quant_param_lx(c, scale, NULL, KILN_F32),
                                           lx_float(b, KILN_F32, 1),
                                           kiln_quant_param_lx(c, y_scale, NULL, KILN_F32));
  return kiln_lb_decl(b, name, KILN_F32, m);
}

int kiln_qgraph_zp_var(const kiln_lower_ctx *c, const char *name, int i) {
  return kiln_lb_decl(c->b, name, KILN_I32, kiln_quant_param_lx(c, i, NULL, KILN_I32));
}

kiln_lexpr *kiln_qgraph_centered(kiln_lb *b, kiln_lexpr *x, int zp_var) {
  return lx_bin(b, LB_SUB, lx_cast(b, KILN_I32, x), lx_var(b, zp_var));
}

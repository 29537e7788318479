// Sub: C = A - B, elementwise with numpy broadcasting (binary.c).
#include "../op_internal.h"

static double sub(double a, double b) { return a - b; }

KILN_DEFINE_BINARY_OP(Sub, sub, LB_SUB, 1e-7, 1.2e-7);

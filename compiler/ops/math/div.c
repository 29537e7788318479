// Div: C = A / B, elementwise with numpy broadcasting (binary.c).
#include "../op_internal.h"

static double divide(double a, double b) { return a / b; }

KILN_DEFINE_BINARY_OP(Div, divide, LB_DIV, 0, 2.4e-7);

// Mul: C = A * B, elementwise with numpy broadcasting (binary.c).
#include "../op_internal.h"

static double mul(double a, double b) { return a * b; }

KILN_DEFINE_BINARY_OP(Mul, mul, LB_MUL, 0, 1.2e-7);

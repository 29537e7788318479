// Add: C = A + B, elementwise with numpy broadcasting (binary.c).
#include "../op_internal.h"

static double add(double a, double b) { return a + b; }

KILN_DEFINE_BINARY_OP(Add, add, LB_ADD, 0, 1.2e-7);

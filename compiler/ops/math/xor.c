// Xor: y = a != b (exclusive or), elementwise on bool with numpy broadcasting (binary.c).
#include "../op_internal.h"

KILN_DEFINE_LOGIC_OP(Xor, LB_NE);  // exact

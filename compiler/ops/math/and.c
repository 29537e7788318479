// And: y = a && b, elementwise on bool with numpy broadcasting (binary.c).
#include "../op_internal.h"

KILN_DEFINE_LOGIC_OP(And, LB_AND);  // exact

// Or: y = a || b, elementwise on bool with numpy broadcasting (binary.c).
#include "../op_internal.h"

KILN_DEFINE_LOGIC_OP(Or, LB_OR);  // exact

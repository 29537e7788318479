// The op table, generated from ops.def: kiln_op_get by id, kiln_op_find / kiln_op_id by ONNX name.
#include <assert.h>
#include <string.h>

#include "op.h"

static const kiln_op_def *const op_table[] = {
#define KILN_OP(Name) [KILN_OP_##Name] = &kiln_op_##Name,
#include "ops.def"
#undef KILN_OP
};
static_assert(sizeof op_table / sizeof op_table[0] == KILN_OP_COUNT,
              "op_table must have one entry per KILN_OP in ops.def");

const kiln_op_def *kiln_op_get(int op) {
  return op >= 0 && op < KILN_OP_COUNT ? op_table[op] : NULL;
}

int kiln_op_lookup(const char *name) {
  for (int op = 0; op < KILN_OP_COUNT; op++)
    if (strcmp(op_table[op]->name, name) == 0) return op;
  return -1;
}

const kiln_op_def *kiln_op_find(const char *name) { return kiln_op_get(kiln_op_lookup(name)); }

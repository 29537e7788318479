// What `kiln inspect` and --dump-ir-after print: the graph as text, JSON or Graphviz dot.
#ifndef KILN_INSPECT_H
#define KILN_INSPECT_H

#include <stdio.h>

#include "passes/pipeline.h"

void kiln_graph_print(const kiln_graph *g, FILE *out);  // the graph IR, one node a line
void kiln_inspect_text(const kiln_compilation *c, FILE *out);
void kiln_inspect_json(const kiln_compilation *c, FILE *out);
void kiln_inspect_dot(const kiln_compilation *c, FILE *out);

// Totals the report is made of.
// Elements of the params (PARAM and STATE tensors) by kiln_param_role: [KILN_ROLE_WEIGHT] is
// what PyTorch's parameters() counts, [KILN_ROLE_BUFFER] its buffers(), [KILN_ROLE_CONSTANT] the
// graph's constants (shapes, masks, tables, folded values).
void kiln_graph_count_params(const kiln_graph *g, int64_t by_role[KILN_N_ROLES]);
int64_t kiln_graph_flops(const kiln_graph *g);

#endif

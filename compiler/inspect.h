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
int64_t kiln_graph_param_count(const kiln_graph *g);  // elements in params
int64_t kiln_graph_flops(const kiln_graph *g);

#endif

// The graph IR verifier, run between passes: structural invariants plus a re-run of every node's
// shape inference, which must agree with the shapes the graph holds.
#ifndef KILN_PASSES_VERIFY_H
#define KILN_PASSES_VERIFY_H

#include "../../ir/graph.h"

bool kiln_graph_verify(kiln_graph *g, kiln_diag *d);

#endif

// The pass manager. A compilation is a flat, named list of passes: graph passes rewrite the graph
// IR, `lower` turns it into loop IR, loop passes transform the loop program. The verifier of the
// current IR runs after every pass; `-v` prints per-pass timing and whether the pass changed
// anything; --dump-ir-after=PASS prints the IR after that pass.
#ifndef KILN_PASSES_PIPELINE_H
#define KILN_PASSES_PIPELINE_H

#include <stdio.h>

#include "../../ir/graph.h"
#include "../../ir/loop.h"
#include "../tune/tuning.h"

enum { KILN_N_ROLES = KILN_ROLE_CONSTANT + 1 };  // kiln_param_role values

typedef struct kiln_compilation {
  kiln_graph *g;
  // Elements of the model's params per kiln_param_role, counted before any pass runs (folding
  // BatchNorm into Conv changes the params, not the model `kiln inspect` describes).
  int64_t declared_params[KILN_N_ROLES];
  kiln_lprog *prog;  // NULL until `lower` ran
  void *weights;     // payload laid out by plan-memory (owned)
  int64_t weights_bytes;
  int64_t arena_bytes;  // set by plan-memory
  // options
  const char *dump_after;  // pass name or NULL
  FILE *dump_out;          // stdout by default
  bool verbose;
  const char *stop_after;                  // stop the pipeline after this pass (inspect --after)
  bool stopped;                            // set when stop_after was reached
  struct kiln_quant_options *quant;  // --quantize int8: the quantize pass's options (and results)
  int f32_lanes;  // the target's f32 vector width (compiler/target.h; init: this machine's)
  bool amx;       // the integer GEMMs use AMX tiles (kiln_target_amx; init: this machine's)
  const kiln_tuning *tuning;  // tuned tiles (kiln build --tune and its cache), or NULL
  const char *disabled[32];  // optional passes turned off (--disable-pass, kiln compare)
  int n_disabled;
} kiln_compilation;

// Each pass: one public function. Graph passes return whether they changed the graph.
bool kiln_pass_fold_constants(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_cse(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_fold_batchnorm(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_quantize(kiln_compilation *c, kiln_diag *d, bool *changed);  // quant/ptq.c
bool kiln_pass_fuse_epilogue(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_select_layout(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_select_conv_algo(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_simplify_layout(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_fuse_expand_depthwise(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_fuse_elementwise(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_dce(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_in_place(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_plan_memory(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_lower(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_compact_weights(kiln_compilation *c, kiln_diag *d, bool *changed);
bool kiln_pass_schedule(kiln_compilation *c, kiln_diag *d, bool *changed);

typedef bool (*kiln_pass_fn)(kiln_compilation *c, kiln_diag *d, bool *changed);
typedef struct kiln_pass {
  const char *name;
  kiln_pass_fn run;
  const char *doc;
  bool required;  // lowering and memory layout cannot be turned off; optimizations can
} kiln_pass;

// Evaluates node n at compile time if every input is a constant (or it reads only shapes) and
// its outputs are small: the outputs become params and the node is marked dead. Returns whether
// it folded. Shape inference calls it as it goes, so shape inputs computed from constants (ONNX's
// Shape -> Gather -> Concat -> Reshape chains) are constants by the time Reshape needs them.
bool kiln_fold_node(kiln_graph *g, kiln_node *n);

// How many live nodes read each tensor (an array of g->n_tensors counts; free it). In
// simplify_layout.c; the rewriting passes use it.
int *kiln_reader_counts(const kiln_graph *g);

// The pipeline, in order; terminated by {0}.
extern const kiln_pass kiln_pipeline[];
bool kiln_pass_exists(const char *name);
bool kiln_pass_optional(const char *name);  // exists and may be turned off

void kiln_compilation_init(kiln_compilation *c, kiln_graph *g);
// --target: the lowering blocks kernels by that target's vector width (NULL or an unknown name
// keeps this machine's; the backends report unknown names).
void kiln_compilation_set_target(kiln_compilation *c, const char *target);
void kiln_compilation_free(kiln_compilation *c);  // frees the graph too
// Runs the pipeline (or until stop_after). Returns false after reporting an error.
bool kiln_compile_pipeline(kiln_compilation *c, kiln_diag *d);

#endif

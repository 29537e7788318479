// The pass manager: runs kiln_pipeline in order, verifies the IR after each pass, times them
// (-v), dumps the IR after a named pass (--dump-ir-after) and stops early (inspect --after).
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../runtime/kiln_runtime.h"
#include "../inspect.h"
#include "../target.h"
#include "verify.h"

const kiln_pass kiln_pipeline[] = {
    {.name = "fold-constants", .run = kiln_pass_fold_constants,
     .doc = "evaluate nodes whose inputs are constants"},
    {.name = "cse", .run = kiln_pass_cse, .doc = "merge nodes that compute the same thing"},
    {.name = "simplify-layout", .run = kiln_pass_simplify_layout,
     .doc = "drop or merge Transpose/Reshape/Flatten/Squeeze/Unsqueeze chains"},
    {.name = "fold-batchnorm", .run = kiln_pass_fold_batchnorm,
     .doc = "fold inference BatchNormalization into the Conv before it"},
    {.name = "quantize", .run = kiln_pass_quantize,
     .doc = "INT8 post-training quantization (--quantize int8): Conv/Gemm/MatMul, and the "
            "pooling, Add and Concat between them in u8"},
    {.name = "fuse-epilogue", .run = kiln_pass_fuse_epilogue,
     .doc = "fold Relu, constant Clip and residual Add into the Conv before them (FusedConv), an "
            "activation into the Gemm before it (FusedGemm)"},
    {.name = "select-layout", .run = kiln_pass_select_layout,
     .doc = "run chains of convolutions in the blocked NCHWc layout (Reorder at the borders)"},
    {.name = "select-conv-algo", .run = kiln_pass_select_conv_algo,
     .doc = "Winograd F(2x2, 3x3) for blocked 3x3 stride-1 convolutions with >= 32 channels"},
    {.name = "fuse-elementwise", .run = kiln_pass_fuse_elementwise,
     .doc = "one kernel per chain of elementwise ops (FusedElementwise)"},
    {.name = "dce", .run = kiln_pass_dce, .doc = "drop nodes no output depends on"},
    // after dce: select-layout leaves Reorders nothing reads behind the expansions
    {.name = "fuse-expand-depthwise", .run = kiln_pass_fuse_expand_depthwise,
     .doc = "an NCHWc 1x1 expansion and the depthwise conv that alone reads it, on large maps, in "
            "one kernel (FusedExpandDepthwise)"},
    {.name = "in-place", .run = kiln_pass_in_place,
     .doc = "let elementwise nodes overwrite inputs that die there"},
    {.name = "plan-memory", .run = kiln_pass_plan_memory,
     .doc = "lay out weights; assign arena offsets by liveness", .required = true},
    {.name = "lower", .run = kiln_pass_lower, .doc = "graph IR -> loop IR, one kernel per node",
     .required = true},
    {.name = "compact-weights", .run = kiln_pass_compact_weights,
     .doc = "drop the weights no kernel reads (originals of weights packed at compile time)"},
    {.name = "schedule", .run = kiln_pass_schedule,
     .doc = "mark parallel, vectorizable and reduction loops"},
    {0},
};

bool kiln_pass_exists(const char *name) {
  for (const kiln_pass *p = kiln_pipeline; p->name; p++)
    if (strcmp(p->name, name) == 0) return true;
  return false;
}

bool kiln_pass_optional(const char *name) {
  for (const kiln_pass *p = kiln_pipeline; p->name; p++)
    if (strcmp(p->name, name) == 0) return !p->required;
  return false;
}

static bool disabled(const kiln_compilation *c, const char *name) {
  for (int i = 0; i < c->n_disabled; i++)
    if (strcmp(c->disabled[i], name) == 0) return true;
  return false;
}

void kiln_compilation_init(kiln_compilation *c, kiln_graph *g) {
  memset(c, 0, sizeof(*c));
  c->g = g;
  c->dump_out = stdout;
  c->f32_lanes = kiln_target_f32_lanes("native");
  c->amx = kiln_target_amx("native");
  kiln_graph_count_params(g, c->declared_params);
}

void kiln_compilation_set_target(kiln_compilation *c, const char *target) {
  int lanes = kiln_target_f32_lanes(target);
  if (lanes > 0) c->f32_lanes = lanes, c->amx = kiln_target_amx(target);
}

void kiln_compilation_free(kiln_compilation *c) {
  kiln_lprog_free(c->prog);
  kiln_aligned_free(c->weights);
  kiln_graph_free(c->g);
  memset(c, 0, sizeof(*c));
}

static bool verify_after(const kiln_compilation *c, const char *pass) {
  bool ok = c->prog ? kiln_lprog_verify(c->prog, stderr) : true;
  kiln_diag d;
  kiln_diag_init(&d, c->g->source_file);
  ok = kiln_graph_verify(c->g, &d) && ok;
  if (!ok) fprintf(stderr, "kiln: internal error: the IR is invalid after pass '%s'\n", pass);
  return ok;
}

static void dump(const kiln_compilation *c, const char *pass) {
  fprintf(c->dump_out, "// ---- IR after %s ----\n", pass);
  if (c->prog)
    kiln_lprog_print(c->prog, c->dump_out);
  else
    kiln_graph_print(c->g, c->dump_out);
}

bool kiln_compile_pipeline(kiln_compilation *c, kiln_diag *d) {
  if (!verify_after(c, "frontend")) return false;
  for (const kiln_pass *p = kiln_pipeline; p->name; p++) {
    if (disabled(c, p->name)) {
      if (c->verbose) fprintf(stderr, "kiln: pass %-16s (turned off)\n", p->name);
      continue;
    }
    double t0 = kiln_now_ms();
    bool changed = false;
    if (!p->run(c, d, &changed)) return false;
    double ms = kiln_now_ms() - t0;
    if (c->verbose)
      fprintf(stderr, "kiln: pass %-16s %8.3f ms%s\n", p->name, ms, changed ? "" : "  (unchanged)");
    if (!verify_after(c, p->name)) return false;
    if (c->dump_after && strcmp(c->dump_after, p->name) == 0) dump(c, p->name);
    if (c->stop_after && strcmp(c->stop_after, p->name) == 0) {
      c->stopped = true;
      break;
    }
  }
  return true;
}

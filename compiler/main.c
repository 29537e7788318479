// kiln: the command-line driver.
//   kiln compile MODEL -o DIR        generated C: DIR/NAME.c, DIR/NAME.h, DIR/NAME.weights
//   kiln build   MODEL -o EXE        a standalone executable (+ EXE.weights)
//   kiln run     MODEL --input ...   the reference interpreter, same flags as a built binary
//   kiln inspect MODEL [--json|--dot] [--after PASS]
//   kiln import  MODEL.onnx -o OUT.json   the JSON model + OUT.safetensors (docs/onnx.md)
//   kiln prune   MODEL --sparsity S -o OUT.json   magnitude / filter pruning (docs/pruning.md)
// MODEL is a JSON model or an .onnx file; --shape NAME=1x3x224x224 compiles for that input shape.
//   kiln compare MODEL [--passes SET]  each pass turned off in turn: speed, size, drift
//   kiln passes                      the pipeline
// compile/build take --backend c|llvm (backends/llvm: LLVM 19), run takes --jit.
// Exit status: 0 success, 2 bad input (model, flags, files), 1 internal error.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backends/backend.h"
#include "../ir/resource_limits.h"
#include "../runtime/kiln_runtime.h"
#include "autodiff/training.h"
#include "cli.h"
#include "compare.h"
#include "frontend.h"
#include "inspect.h"
#include "interp.h"
#include "onnx/onnx_import.h"
#include "passes/pipeline.h"
#include "prune/prune.h"
#include "quant/ptq.h"
#include "tune/tune.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.1.0"
#endif

static void usage(FILE *out) {
  fputs(
      "usage:\n"
      "  kiln compile MODEL.json -o DIR [--embed-weights] [COMMON]\n"
      "  kiln build   MODEL.json -o EXE [--target native|native-noamx|avx512|avx2|generic] "
      "[--embed-weights]\n"
      "               [--cc CC] [--cflags FLAGS] [--keep-sources] [--tune SECONDS] [COMMON]\n"
      "  kiln run     MODEL.json --input [NAME=]X.npy ... --output [NAME=]Y.npy ... [--bench N]\n"
      "  kiln inspect MODEL.json [--json | --dot] [--after PASS] [COMMON]\n"
      "  kiln import  MODEL.onnx -o OUT.json [--shape NAME=DxDx...] [--freeze-input NAME=X.npy]\n"
      "               (+ OUT.safetensors)\n"
      "  kiln compare MODEL.json [--passes P1,P2 ...] [--format text|md|csv] [--runs N]\n"
      "               [--threads N] [--target T]   what each pass buys (speed, size, drift)\n"
      "  kiln prune   MODEL.json --sparsity S -o OUT.json [--layerwise | --global]\n"
      "               [--structured filters] [--weights W.safetensors] [--report FILE.md]\n"
      "               [--no-mask]   (docs/pruning.md)\n"
      "  kiln passes\n"
      "training: compile/build/inspect --train (the model's training section: the training step;\n"
      "          build links the trainer, docs/training.md); build/compile/inspect --weights\n"
      "          FILE.safetensors take the params (e.g. a trained checkpoint) from FILE;\n"
      "          --distributed mpi (with --train): data-parallel over MPI, docs/distributed.md;\n"
      "          --sync-bn (with it): BatchNorm statistics over the global batch\n"
      "quantization: compile/build --quantize int8 --calibrate X.npy[,...] (samples of the\n"
      "          input) [--calib-method mse|minmax|percentile|entropy] (default mse)\n"
      "          [--calib-percentile P] [--calib-samples N] [--quant-report FILE.md]\n"
      "          [--quant-skip NODE,...] [--quant-min-sqnr DB] (layers below DB stay FP32)\n"
      "          [--calib-run auto|interp|binary] (binary: calibrate with the compiled model)\n"
      "          [--quant-bias-correction on|off] (mean output errors folded into biases)\n"
      "          [--quant-head fp32|int8] (the last Gemm and its pooling; default fp32)\n"
      "          (docs/quantization.md)\n"
      "backends: compile/build --backend c|llvm (default c); --backend llvm takes -O0..-O3\n"
      "          (default -O3) and compile --emit llvm|obj (NAME.ll or NAME.o, + NAME.h);\n"
      "          run --jit compiles in memory with LLVM's JIT instead of interpreting\n"
      "MODEL is a .json model or an .onnx file (docs/onnx.md)\n"
      "COMMON: --dump-ir-after=PASS  print the IR after PASS\n"
      "        --shape NAME=DxDx...  compile for this shape of input NAME (repeatable)\n"
      "        --freeze-input NAME=X.npy  compile input NAME in as the constant X (e.g. a\n"
      "                              Reshape shape or Slice starts fed as an input; repeatable)\n"
      "        --disable-pass=PASS   turn an optimization pass off (repeatable)\n"
      "        -v                    per-pass timing\n"
      "        --tune-cache FILE     tuned tiles (kiln build --tune SECONDS measures them on this\n"
      "                              machine; later builds reuse them); default\n"
      "                              $KILN_TUNE_CACHE or ~/.cache/kiln/tuning.txt; 'none': off\n"
      "        --limits KEY=SIZE,...  resource limits: model-bytes, tensor-bytes, total-bytes,\n"
      "                              nodes (also the KILN_LIMITS environment variable)\n"
      "exit status: 0 ok, 2 bad input, 1 internal error\n",
      out);
}

enum { KILN_MAX_SHAPE_FLAGS = 64 };

typedef struct cli {
  const char *cmd, *model, *out;
  const char *target, *cc, *cflags, *dump_after, *after;
  bool embed, keep_sources, verbose, json, dot;
  kiln_input_shape shapes[KILN_MAX_SHAPE_FLAGS];
  // --freeze-input NAME=FILE.npy flags; `load` points at them and at shapes.
  kiln_frozen_input frozen[KILN_MAX_SHAPE_FLAGS];
  kiln_load_options load;
  const char *backend, *emit;  // --backend c|llvm, --emit c|llvm|obj
  int opt_level;               // -ON for --backend llvm; -1 if not given
  const char *disabled[16];    // --disable-pass NAME (repeatable)
  int n_disabled;
  kiln_compare_options compare;  // kiln compare: --passes SET (repeatable), --format, --runs
  bool train;                    // --train: the training step and trainer (docs/training.md)
  const char *distributed;       // --distributed mpi: a data-parallel trainer (docs/distributed.md)
  bool sync_bn;                  // --sync-bn: BatchNorm statistics averaged over the ranks (idem)
  struct train_build *tb;        // with --train: what compile_model learns about the training graph
  const char *quantize;          // --quantize int8 (docs/quantization.md)
  kiln_quant_options *quant;     // --calibrate, --calib-method, --quant-report, --quant-skip, ...
  bool quant_flags;              // one of those was given
  double tune_seconds;           // kiln build --tune SECONDS (0: no tuning)
  const char *tune_cache;        // --tune-cache FILE|none (NULL: the default cache)
  kiln_tuning *tuning;           // the cache's tiles, loaded before compiling
} cli;

typedef struct train_build {
  kiln_training training;  // the model's training section (adversarial: the D step's)
  kiln_c_train info;       // what the training program's inputs and outputs mean
  kiln_c_state_shape *shapes;
  // Adversarial models (docs/training.md §8): the generator's step, a second program.
  kiln_training g_training;
  kiln_c_train g_info;
  kiln_c_state_shape *g_shapes;
  kiln_compilation g_comp;
  kiln_c_adversarial adv;
} train_build;

static bool bad_flag(const char *msg, const char *arg) {
  fprintf(stderr, "kiln: %s: %s\n", msg, arg);
  return false;
}

// "--shape NAME=1x3x224x224" (NAME may itself contain '='; the last one separates).
static bool parse_shape_flag(const char *v, cli *c) {
  const char *eq = v ? strrchr(v, '=') : NULL;
  if (!eq || eq == v) return bad_flag("--shape expects NAME=DIMxDIMx..., got", v ? v : "nothing");
  if (c->load.n_shapes == KILN_MAX_SHAPE_FLAGS) return bad_flag("too many --shape flags at", v);
  kiln_input_shape *s = &c->shapes[c->load.n_shapes];
  *s = (kiln_input_shape){.name = strndup(v, (size_t)(eq - v))};
  for (const char *p = eq + 1; *p;) {
    char *end;
    long long dim = strtoll(p, &end, 10);
    bool good = end != p && dim >= 1 && dim <= (1LL << 40) && (*end == 'x' || *end == 0) &&
                s->shape.rank < KILN_MAX_RANK && (*end == 0 || end[1] != 0) && *p != '+' &&
                *p != '-';
    if (!good) {
      free((char *)s->name);
      return bad_flag("--shape dimensions are integers >= 1 joined by 'x' (at most 8), got", v);
    }
    s->shape.dim[s->shape.rank++] = dim;
    p = *end ? end + 1 : end;
  }
  c->load.shapes = c->shapes;
  c->load.n_shapes++;
  return true;
}

// "--freeze-input NAME=FILE.npy" (the first '=' separates; FILE may contain more).
static bool parse_freeze_flag(const char *v, cli *c) {
  const char *eq = v ? strchr(v, '=') : NULL;
  if (!eq || eq == v || !eq[1])
    return bad_flag("--freeze-input expects NAME=FILE.npy, got", v ? v : "nothing");
  if (c->load.n_frozen == KILN_MAX_SHAPE_FLAGS)
    return bad_flag("too many --freeze-input flags at", v);
  c->frozen[c->load.n_frozen++] =
      (kiln_frozen_input){.name = strndup(v, (size_t)(eq - v)), .file = eq + 1};
  c->load.frozen = c->frozen;
  return true;
}

static void free_shape_flags(cli *c) {
  for (int i = 0; i < c->load.n_shapes; i++) free((char *)c->shapes[i].name);
  for (int i = 0; i < c->load.n_frozen; i++) free((char *)c->frozen[i].name);
  c->load.n_shapes = 0;
  c->load.n_frozen = 0;
}

// --backend, --emit and -O agree: --emit llvm|obj means the LLVM backend; -O is LLVM's.
static bool check_backend_flags(cli *c) {
  bool emit_llvm = c->emit && (strcmp(c->emit, "llvm") == 0 || strcmp(c->emit, "obj") == 0);
  if (c->emit && !emit_llvm && strcmp(c->emit, "c") != 0)
    return bad_flag("--emit expects c, llvm or obj, got", c->emit);
  if (!c->backend) c->backend = emit_llvm ? "llvm" : "c";
  bool llvm = strcmp(c->backend, "llvm") == 0;
  if (!llvm && strcmp(c->backend, "c") != 0)
    return bad_flag("--backend expects c or llvm, got", c->backend);
  if (c->emit && emit_llvm != llvm) return bad_flag("--emit does not match the backend", c->emit);
  if (!llvm && c->opt_level >= 0) return bad_flag("-O applies to", "--backend llvm");
  if (c->opt_level < 0) c->opt_level = 3;
  return true;
}

static bool use_llvm(const cli *a) { return a->backend && strcmp(a->backend, "llvm") == 0; }

static kiln_llvm_options llvm_options(const cli *a) {
  return (kiln_llvm_options){.target = a->target ? a->target : "native",
                             .opt_level = a->opt_level,
                             .embed_weights = a->embed};
}

// A positive number after `flag` (at most `max`); false after printing why.
static bool parse_number(const char *flag, const char *v, double max, double *out) {
  char *end = NULL;
  double x = v ? strtod(v, &end) : 0;
  if (!v || end == v || *end || !(x > 0) || x > max)
    return bad_flag(flag, v ? v : "nothing: expected a positive number");
  *out = x;
  return true;
}

// The post-training quantization flags (compiler/quant/ptq.h). 1: taken, 0: not one of them,
// -1: bad value (printed).
static int parse_quant_flag(int argc, char **argv, int *i, cli *c) {
  const char *a = argv[*i], *v = NULL;
  kiln_quant_options *q = c->quant;
  double x;
  bool ok = true;
  if (kiln_cli_value(argc, argv, i, "--quantize", &v)) {
    ok = v && strcmp(v, "int8") == 0;
    if (!ok) bad_flag("--quantize supports int8, got", v ? v : "nothing");
    c->quantize = v;
  } else if (kiln_cli_value(argc, argv, i, "--calibrate", &v)) {
    ok = kiln_quant_parse_files(v, q);
  } else if (kiln_cli_value(argc, argv, i, "--calib-method", &v)) {
    ok = v && kiln_calib_method_parse(v, &q->method);
    if (!ok)
      bad_flag("--calib-method expects minmax, percentile, entropy or mse, got", v ? v : "nothing");
  } else if (kiln_cli_value(argc, argv, i, "--quant-bias-correction", &v)) {
    ok = v && kiln_bias_correction_parse(v, &q->bias_correction);
    if (!ok) bad_flag("--quant-bias-correction expects on or off, got", v ? v : "nothing");
  } else if (kiln_cli_value(argc, argv, i, "--quant-head", &v)) {
    ok = v && kiln_quant_head_parse(v, &q->head_int8);
    if (!ok) bad_flag("--quant-head expects fp32 or int8, got", v ? v : "nothing");
  } else if (kiln_cli_value(argc, argv, i, "--calib-run", &v)) {
    ok = v && kiln_calib_engine_parse(v, &q->engine);
    if (!ok) bad_flag("--calib-run expects auto, interp or binary, got", v ? v : "nothing");
  } else if (kiln_cli_value(argc, argv, i, "--calib-percentile", &v)) {
    ok = parse_number("--calib-percentile expects a number in (50, 100], got", v, 100, &x) &&
         (x > 50 || !bad_flag("--calib-percentile expects a number in (50, 100], got", v));
    q->percentile = x;
  } else if (kiln_cli_value(argc, argv, i, "--calib-samples", &v)) {
    ok = parse_number("--calib-samples expects a positive count, got", v, 1e12, &x);
    q->max_samples = (int64_t)x;
  } else if (kiln_cli_value(argc, argv, i, "--quant-min-sqnr", &v)) {
    ok = parse_number("--quant-min-sqnr expects a positive number of dB, got", v, 1000, &x);
    q->min_sqnr = x;
  } else if (kiln_cli_value(argc, argv, i, "--quant-report", &v)) {
    ok = v || !bad_flag("missing value for", a);
    q->report = v;
  } else if (kiln_cli_value(argc, argv, i, "--quant-skip", &v)) {
    for (const char *s = v; ok && s && *s;) {
      size_t len = strcspn(s, ",");
      char *name = strndup(s, len);
      ok = len > 0 && kiln_quant_keep_fp32(q, name);
      free(name);
      s += len + (s[len] == ',');
    }
    ok = ok && v && *v;
    if (!ok) bad_flag("--quant-skip expects layer names separated by commas, got", v ? v : "");
  } else {
    return 0;
  }
  if (strncmp(a, "--quantize", 10) != 0) c->quant_flags = true;
  return ok ? 1 : -1;
}

// --quantize needs --calibrate, and the other quantization flags need --quantize.
static bool check_quant_flags(const cli *c) {
  const kiln_quant_options *q = c->quant;
  if (!c->quantize && c->quant_flags)
    return bad_flag("the quantization flags need", "--quantize int8");
  if (c->quantize && !q->n_files)
    return bad_flag("--quantize int8 needs calibration data:", "--calibrate FILE.npy[,...]");
  if (c->quantize && c->train) return bad_flag("--quantize does not apply to", "--train");
  return true;
}

static bool parse_args(int argc, char **argv, cli *c) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    bool matched = true;
    int quant = parse_quant_flag(argc, argv, &i, c);
    if (quant < 0) return false;
    if (quant > 0) continue;
    if (kiln_cli_value(argc, argv, &i, "--shape", &v)) {
      if (!parse_shape_flag(v, c)) return false;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--freeze-input", &v)) {
      if (!parse_freeze_flag(v, c)) return false;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--disable-pass", &v) ||
        kiln_cli_value(argc, argv, &i, "--passes", &v)) {
      bool set = strncmp(a, "--passes", 8) == 0;
      if (!v) return bad_flag("missing value for", a);
      if (!set && !kiln_pass_optional(v)) return bad_flag("not a pass that can be turned off", v);
      if ((set ? c->compare.n_sets : c->n_disabled) >= 16) return bad_flag("too many", a);
      if (set)
        c->compare.sets[c->compare.n_sets++] = v;
      else
        c->disabled[c->n_disabled++] = v;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--runs", &v) ||
        kiln_cli_value(argc, argv, &i, "--threads", &v)) {
      char *end = NULL;
      long n = v ? strtol(v, &end, 10) : 0;
      if (!v || *end || n < 1 || n > 100000) return bad_flag("expected a positive count after", a);
      *(strncmp(a, "--runs", 6) == 0 ? &c->compare.runs : &c->compare.threads) = (int)n;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--tune", &v)) {
      char *end = NULL;
      double seconds = v ? strtod(v, &end) : 0;
      if (!v || *end || !(seconds > 0 && seconds <= 86400))
        return bad_flag("--tune expects a time budget in seconds (0 < S <= 86400), got",
                        v ? v : "nothing");
      c->tune_seconds = seconds;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--format", &v)) {
      if (!v) return bad_flag("missing value for", a);
      c->compare.format = v;
      continue;
    }
    if (kiln_cli_value(argc, argv, &i, "--limits", &v)) {  // ir/resource_limits.h
      char err[256];
      if (!v) return bad_flag("missing value for", a);
      if (!kiln_limits_set(v, err, sizeof err)) return bad_flag(err, "in --limits");
      continue;
    }
    if (strcmp(a, "--embed-weights") == 0)
      c->embed = true;
    else if (strcmp(a, "--train") == 0)
      c->train = true;
    else if (strcmp(a, "--keep-sources") == 0)
      c->keep_sources = true;
    else if (strcmp(a, "--sync-bn") == 0)
      c->sync_bn = true;
    else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
      c->verbose = true;
    else if (strcmp(a, "--json") == 0)
      c->json = true;
    else if (strcmp(a, "--dot") == 0)
      c->dot = true;
    else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3])
      c->opt_level = a[2] - '0';
    else
      matched = false;
    if (matched) continue;
    const char **slot = NULL;
    if (kiln_cli_value(argc, argv, &i, "-o", &v) ||
        kiln_cli_value(argc, argv, &i, "--output-dir", &v))
      slot = &c->out;
    else if (kiln_cli_value(argc, argv, &i, "--target", &v))
      slot = &c->target;
    else if (kiln_cli_value(argc, argv, &i, "--cc", &v))
      slot = &c->cc;
    else if (kiln_cli_value(argc, argv, &i, "--tune-cache", &v))
      slot = &c->tune_cache;
    else if (kiln_cli_value(argc, argv, &i, "--weights", &v))
      slot = &c->load.weights_file;
    else if (kiln_cli_value(argc, argv, &i, "--cflags", &v))
      slot = &c->cflags;
    else if (kiln_cli_value(argc, argv, &i, "--dump-ir-after", &v))
      slot = &c->dump_after;
    else if (kiln_cli_value(argc, argv, &i, "--after", &v))
      slot = &c->after;
    else if (kiln_cli_value(argc, argv, &i, "--backend", &v))
      slot = &c->backend;
    else if (kiln_cli_value(argc, argv, &i, "--emit", &v))
      slot = &c->emit;
    else if (kiln_cli_value(argc, argv, &i, "--distributed", &v))
      slot = &c->distributed;
    if (slot) {
      if (!v) return bad_flag("missing value for", a);
      *slot = v;
    } else if (a[0] == '-') {
      return bad_flag("unknown flag", a);
    } else if (!c->model) {
      c->model = a;
    } else {
      return bad_flag("unexpected argument", a);
    }
  }
  if (!c->model) return bad_flag("missing model file for", c->cmd);
  if (!check_backend_flags(c) || !check_quant_flags(c)) return false;
  if (!c->quant->percentile) c->quant->percentile = 99.99;
  const char *passes[] = {c->dump_after, c->after};
  for (int i = 0; i < 2; i++)
    if (passes[i] && !kiln_pass_exists(passes[i]))
      return bad_flag("no such pass (see `kiln passes`)", passes[i]);
  return true;
}

// --train: what the runtime's trainer needs to know about the training graph's inputs/outputs.
static void describe_training(const kiln_training *t, kiln_c_train *ti, kiln_c_state_shape **shapes,
                              const kiln_graph *g) {
  *ti = (kiln_c_train){
      .label_input = -1,
      .weight_input = -1,
      .logits_output = -1,
      .seed = t->seed,
      .augment = t->augment};  // label_input -1: the loss needs no label (autoencoders)
  ti->classification = t->loss.kind == KILN_LOSS_CROSS_ENTROPY;
  for (int i = 0; i < g->n_inputs; i++) {
    const char *name = g->tensors[g->inputs[i]].name;
    if (t->loss.target && strcmp(name, t->loss.target) == 0) ti->label_input = i;
    if (t->loss.weight && strcmp(name, t->loss.weight) == 0) ti->weight_input = i;
  }
  for (int i = 1; i < g->n_outputs; i++)
    if (strcmp(g->tensors[g->outputs[i]].name, t->loss.output) == 0) ti->logits_output = i;
  free(*shapes);
  *shapes = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(kiln_c_state_shape));
  for (int i = 0; i < g->n_tensors; i++) {
    const kiln_tensor *x = &g->tensors[i];
    if (x->kind != KILN_TENSOR_STATE) continue;
    kiln_c_state_shape *s = &(*shapes)[ti->n_shapes++];
    s->name = x->name, s->rank = x->shape.rank;
    memcpy(s->dim, x->shape.dim, sizeof(int64_t) * (size_t)x->shape.rank);
  }
  ti->shapes = *shapes;
}

// Adversarial models (docs/training.md §8): the generator's step, compiled from a second copy of
// the model into tb->g_comp, and the descriptor linking both steps. Returns an exit code.
static int compile_generator_step(const cli *a, train_build *tb, kiln_diag *d) {
  kiln_training parsed;
  kiln_load_options load = a->load;
  load.training = &parsed;
  kiln_graph *g = kiln_load_model_ex(a->model, &load, d);
  if (!g) return KILN_EXIT_BAD_INPUT;
  if (!kiln_adversarial_phase(&parsed, KILN_PHASE_G, g, &tb->g_training, d) ||
      !kiln_build_training_graph(g, &tb->g_training, d)) {
    kiln_graph_free(g);
    return KILN_EXIT_BAD_INPUT;
  }
  kiln_compilation *c = &tb->g_comp;
  kiln_compilation_init(c, g);
  kiln_compilation_set_target(c, a->target);
  for (int i = 0; i < a->n_disabled; i++) c->disabled[c->n_disabled++] = a->disabled[i];
  if (!kiln_compile_pipeline(c, d)) return d->errors ? KILN_EXIT_BAD_INPUT : KILN_EXIT_INTERNAL;
  describe_training(&tb->g_training, &tb->g_info, &tb->g_shapes, c->g);
  const kiln_adversarial *adv = &parsed.adv;
  tb->adv = (kiln_c_adversarial){.g_prog = c->prog,
                                 .g_train = &tb->g_info,
                                 .n_critic = adv->n_critic,
                                 .d_params = adv->d.params,
                                 .g_params = adv->g.params,
                                 .n_d_params = adv->d.n_params,
                                 .n_g_params = adv->g.n_params};
  return KILN_EXIT_OK;
}

// An adversarial model: the caller's graph g becomes the discriminator's step's; the generator's
// is compiled beside it. Returns an exit code.
static int adversarial_phases(const cli *a, kiln_graph *g, kiln_diag *d) {
  train_build *tb = a->tb;
  if (a->distributed || use_llvm(a)) {
    kiln_diag_error(d, "training.adversarial",
                    "adversarial training builds use the C backend on one process (no %s)",
                    a->distributed ? "--distributed" : "--backend llvm");
    return KILN_EXIT_BAD_INPUT;
  }
  kiln_training section = tb->training;
  if (!kiln_adversarial_phase(&section, KILN_PHASE_D, g, &tb->training, d))
    return KILN_EXIT_BAD_INPUT;
  return compile_generator_step(a, tb, d);
}

// --train builds the training step (compile, build, inspect) with the C backend.
static bool check_train_flags(const cli *a) {
  bool allowed = strcmp(a->cmd, "compile") == 0 || strcmp(a->cmd, "build") == 0 ||
                 strcmp(a->cmd, "inspect") == 0;
  if (a->train && !allowed)
    return bad_flag("--train applies to compile, build and inspect, not", a->cmd);
  if (a->train && use_llvm(a) && strcmp(a->cmd, "compile") == 0)
    return bad_flag("--train --backend llvm builds trainers (kiln build), it does not", "compile");
  if (a->train && use_llvm(a) && (a->distributed || a->embed))
    return bad_flag("--train --backend llvm does not take",
                    a->distributed ? "--distributed" : "--embed-weights");
  if (a->distributed && strcmp(a->distributed, "mpi") != 0)
    return bad_flag("--distributed expects mpi, got", a->distributed);
  if (a->distributed && (!a->train || strcmp(a->cmd, "inspect") == 0))
    return bad_flag("--distributed needs a training build (compile or build --train), not", a->cmd);
  if (a->sync_bn && !a->distributed)
    return bad_flag("--sync-bn needs --distributed mpi (with --train), for", a->cmd);
  if (a->train && a->load.weights_file)
    return bad_flag("--train starts from the model's weights; give a checkpoint to the trainer's",
                    "--weights or --resume");
  return true;
}

static bool check_tune_flags(const cli *a) {
  if (a->tune_seconds > 0 && strcmp(a->cmd, "build") != 0)
    return bad_flag("--tune times built binaries; it belongs to", "kiln build");
  if (a->tune_seconds > 0 && use_llvm(a))
    return bad_flag("--tune measures the C backend's kernels; not with", "--backend llvm");
  return true;
}

static int compile_model_once(const cli *a, kiln_compilation *c) {
  memset(c, 0, sizeof(*c));
  kiln_diag d;
  kiln_diag_init(&d, a->model);
  kiln_load_options load = a->load;
  load.training = a->tb ? &a->tb->training : NULL;
  kiln_graph *g = kiln_load_model_ex(a->model, &load, &d);
  if (!g) return KILN_EXIT_BAD_INPUT;
  if (a->tb && a->tb->training.adv.present) {
    int rc = adversarial_phases(a, g, &d);
    if (rc != KILN_EXIT_OK) return kiln_graph_free(g), rc;
  }
  int n_model_outputs = g->n_outputs;
  if (a->tb) a->tb->training.expose_grads = a->distributed != NULL;  // gradients as outputs
  if (a->tb) a->tb->training.sync_bn = a->sync_bn;  // BatchNorm: RankMean of the statistics
  if (a->tb && !kiln_build_training_graph(g, &a->tb->training, &d)) {
    kiln_graph_free(g);
    return KILN_EXIT_BAD_INPUT;
  }
  kiln_compilation_init(c, g);
  kiln_compilation_set_target(c, a->target);
  c->dump_after = a->dump_after;
  c->verbose = a->verbose;
  c->stop_after = a->after;
  c->quant = a->quantize ? a->quant : NULL;
  c->tuning = a->tuning;
  for (int i = 0; i < a->n_disabled; i++) c->disabled[c->n_disabled++] = a->disabled[i];
  if (!kiln_compile_pipeline(c, &d)) return d.errors ? KILN_EXIT_BAD_INPUT : KILN_EXIT_INTERNAL;
  if (a->tb) describe_training(&a->tb->training, &a->tb->info, &a->tb->shapes, c->g);
  if (a->tb && a->tb->adv.g_prog) {  // no reconstruction: the loss reads the scores
    a->tb->info.adversarial = &a->tb->adv;
    a->tb->info.logits_output = -1;
  }
  if (a->tb && a->distributed) {  // outputs: the loss, the model's, then the gradients
    a->tb->info.distributed = true;
    a->tb->info.first_grad_output = 1 + n_model_outputs;
    a->tb->info.n_grads = c->g->n_outputs - 1 - n_model_outputs;
  }
  return KILN_EXIT_OK;
}

// compile_model_once, again with one more layer kept in FP32 while --quant-min-sqnr finds a
// layer below it (mixed precision: the first such layer each time, since errors accumulate).
static int compile_model(const cli *a, kiln_compilation *c) {
  for (;;) {
    int rc = compile_model_once(a, c);
    kiln_quant_options *q = a->quantize ? a->quant : NULL;
    if (rc != KILN_EXIT_OK || !q || !q->below_threshold) return rc;
    fprintf(stderr, "kiln: --quant-min-sqnr %g: keeping %s in FP32 (SQNR %.2f dB)\n", q->min_sqnr,
            q->below_threshold, q->below_sqnr);
    if (!kiln_quant_keep_fp32(q, q->below_threshold)) return KILN_EXIT_INTERNAL;
    kiln_compilation_free(c);
  }
}

static int cmd_compile(const cli *a) {
  if (!a->out) return bad_flag("missing -o DIR for", "compile"), KILN_EXIT_BAD_INPUT;
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK) {
    kiln_diag d;
    kiln_diag_init(&d, a->out);
    kiln_c_options o = {.embed_weights = a->embed, .train = a->tb ? &a->tb->info : NULL};
    kiln_llvm_options lo = llvm_options(a);
    kiln_llvm_emit what =
        a->emit && strcmp(a->emit, "llvm") == 0 ? KILN_LLVM_EMIT_LLVM : KILN_LLVM_EMIT_OBJ;
    bool ok = use_llvm(a) ? kiln_llvm_emit_files(c.prog, &lo, what, a->out, &d)
                          : kiln_emit_c_files(c.prog, &o, a->out, &d);
    if (ok && a->tb && a->tb->adv.g_prog) {  // adversarial: the generator's step beside it
      kiln_c_options go = {.embed_weights = a->embed, .train = &a->tb->g_info};
      ok = kiln_emit_c_files(a->tb->adv.g_prog, &go, a->out, &d);
    }
    if (!ok) rc = KILN_EXIT_BAD_INPUT;
  }
  if (c.g) kiln_compilation_free(&c);
  return rc;
}

// ---- kiln build --tune: measure the tunable kernels' tiles, cache them, compile again ----

// The cache's path, or NULL for none (--tune-cache none, KILN_TUNE_CACHE=none, no $HOME).
static const char *tune_cache_path(const cli *a, char *buf, size_t size) {
  const char *path = a->tune_cache ? a->tune_cache : kiln_tuning_default_path(buf, size);
  return path && strcmp(path, "none") != 0 ? path : NULL;
}

// Loads the cache into a->tuning for the commands that compile (not import); false (after
// reporting) if it is malformed.
static bool load_tuning(const cli *a) {
  if (strcmp(a->cmd, "import") == 0) return true;
  char buf[1024], err[1200];
  const char *path = tune_cache_path(a, buf, sizeof(buf));
  if (!path || kiln_tuning_load(a->tuning, path, err, sizeof(err))) return true;
  fprintf(stderr, "kiln: %s (remove the file or pass --tune-cache none)\n", err);
  return false;
}

static int tune_and_recompile(const cli *a, kiln_compilation *c) {
  kiln_diag d;
  kiln_diag_init(&d, a->model);
  kiln_tune_options o = {.seconds = a->tune_seconds,
                         .target = a->target,
                         .f32_lanes = c->f32_lanes,
                         .cc = a->cc,
                         .progress = isatty(2)};
  kiln_tune_result r;
  if (!kiln_tune(c->g, &o, a->tuning, &r, &d)) return KILN_EXIT_INTERNAL;
  char buf[1024], err[1200];
  const char *path = tune_cache_path(a, buf, sizeof(buf));
  fprintf(stderr,
          "kiln: --tune: %d tunable kernels: %d cached, %d tuned now (%d builds, %.1f s)%s\n",
          r.kernels, r.cached, r.tuned, r.candidates, r.seconds,
          r.cached + r.tuned < r.kernels ? "; the rest keep analytical tiles (time budget)" : "");
  if (r.tuned && path && !kiln_tuning_save(a->tuning, path, err, sizeof(err)))
    fprintf(stderr, "kiln: warning: could not save the tuning cache: %s\n", err);
  else if (r.tuned && path)
    fprintf(stderr, "kiln: --tune: choices cached in %s\n", path);
  if (!r.tuned) return KILN_EXIT_OK;
  kiln_compilation_free(c);
  return compile_model(a, c);
}

static int cmd_build(const cli *a) {
  if (!a->out) return bad_flag("missing -o EXE for", "build"), KILN_EXIT_BAD_INPUT;
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK && a->tune_seconds > 0) rc = tune_and_recompile(a, &c);
  if (rc == KILN_EXIT_OK) {
    kiln_diag d;
    kiln_diag_init(&d, a->out);
    kiln_build_options o = {.cc = a->cc,
                            .target = a->target ? a->target : "native",
                            .extra_cflags = a->cflags,
                            .embed_weights = a->embed,
                            .keep_sources = a->keep_sources,
                            .verbose = a->verbose,
                            .train = a->tb ? &a->tb->info : NULL};
    kiln_llvm_options lo = llvm_options(a);
    lo.train = o.train;
    bool ok = use_llvm(a) ? kiln_llvm_build_binary(c.prog, &lo, &o, a->out, &d)
                          : kiln_build_binary(c.prog, &o, a->out, &d);
    if (!ok) rc = KILN_EXIT_BAD_INPUT;
  }
  if (c.g) kiln_compilation_free(&c);
  return rc;
}

static int cmd_inspect(const cli *a) {
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK) {
    if (a->json)
      kiln_inspect_json(&c, stdout);
    else if (a->dot)
      kiln_inspect_dot(&c, stdout);
    else
      kiln_inspect_text(&c, stdout);
  }
  if (c.g) kiln_compilation_free(&c);
  return rc;
}

// kiln import: the ONNX model, checked exactly as `kiln build` would check it, written as JSON
// + .safetensors.
static int cmd_import(const cli *a) {
  if (!a->out) return bad_flag("missing -o OUT.json for", "import"), KILN_EXIT_BAD_INPUT;
  kiln_diag d;
  kiln_diag_init(&d, a->model);
  size_t len = strlen(a->model);
  if (len < 5 || strcmp(a->model + len - 5, ".onnx") != 0) {
    kiln_diag_error(&d, NULL, "`kiln import` reads .onnx files");
    return KILN_EXIT_BAD_INPUT;
  }
  kiln_onnx_model m;
  if (!kiln_onnx_import_ex(a->model, &a->load, &d, &m)) return KILN_EXIT_BAD_INPUT;
  kiln_graph *g = kiln_load_model_json(m.json, a->model, &m.weights, &d);
  bool ok = g != NULL;
  kiln_graph_free(g);
  if (ok) {
    kiln_diag_init(&d, a->out);
    ok = kiln_onnx_write(&m, a->out, &d);
  }
  kiln_onnx_model_free(&m);
  return ok ? KILN_EXIT_OK : KILN_EXIT_BAD_INPUT;
}

// ---- kiln run: the standalone driver (kiln_main) over the interpreter ----

static const kiln_graph *interp_graph;  // the model `kiln run` interprets

static int interp_init(void *ctx) {
  (void)ctx;
  return KILN_OK;
}

static int interp_init_file(void *ctx, const char *path) {
  (void)ctx;
  (void)path;
  return KILN_OK;  // weights come from the model's own safetensors file
}

static void fill_io(const kiln_graph *g, const int *ts, int n, kiln_io_desc *out) {
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t = &g->tensors[ts[i]];
    out[i] = (kiln_io_desc){.name = t->name, .dtype = (int)t->dtype, .rank = t->shape.rank};
    memcpy(out[i].shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
  }
}

static int interp_run(void *ctx, const void *const *inputs, void *const *outputs) {
  (void)ctx;
  const kiln_graph *g = interp_graph;
  kiln_array *in = kiln_xcalloc((size_t)g->n_inputs + 1, sizeof(kiln_array));
  kiln_array *out = kiln_xcalloc((size_t)g->n_outputs + 1, sizeof(kiln_array));
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_tensor *t = &g->tensors[g->inputs[i]];
    in[i] = (kiln_array){.dtype = (int)t->dtype, .rank = t->shape.rank, .data = (void *)inputs[i]};
    memcpy(in[i].shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
  }
  kiln_diag d;
  kiln_diag_init(&d, g->source_file);
  bool ok = kiln_interp_run(g, in, out, &d);
  for (int i = 0; ok && i < g->n_outputs; i++) {
    memcpy(outputs[i], out[i].data, out[i].nbytes);
    kiln_array_free(&out[i]);
  }
  free(in);
  free(out);
  return ok ? KILN_OK : KILN_ERR_ARG;
}

static void interp_release(void *ctx) { (void)ctx; }

// kiln run --jit: the model compiled in memory by LLVM's JIT, run by the same driver.
static int run_jit(int argc, char **argv, cli *a) {
  a->model = argv[2];
  a->opt_level = 3;
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK) {
    kiln_diag d;
    kiln_diag_init(&d, a->model);
    kiln_llvm_options o = llvm_options(a);
    kiln_llvm_jit *j = kiln_llvm_jit_create(c.prog, &o, &d);
    if (j) {
      argv[2] = argv[0];  // kiln_main sees: kiln <flags...>
      rc = kiln_main(kiln_llvm_jit_desc(j), argc - 2, argv + 2);
      kiln_llvm_jit_free(j);
    } else {
      rc = KILN_EXIT_INTERNAL;
    }
  }
  if (c.g) kiln_compilation_free(&c);
  return rc;
}

static int cmd_run(int argc, char **argv) {
  if (argc < 3 || argv[2][0] == '-') {
    fputs("kiln: missing model file for run\n", stderr);
    return KILN_EXIT_BAD_INPUT;
  }
  // --shape and --freeze-input are the compiler's flags; kiln_main sees the rest.
  cli shapes = {0};
  int kept = 3;
  bool jit = false;
  for (int i = 3; i < argc; i++) {
    const char *v = NULL;
    if (strcmp(argv[i], "--jit") == 0) {
      jit = true;
    } else if (kiln_cli_value(argc, argv, &i, "--shape", &v)) {
      if (!parse_shape_flag(v, &shapes)) return free_shape_flags(&shapes), KILN_EXIT_BAD_INPUT;
    } else if (kiln_cli_value(argc, argv, &i, "--freeze-input", &v)) {
      if (!parse_freeze_flag(v, &shapes)) return free_shape_flags(&shapes), KILN_EXIT_BAD_INPUT;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  if (jit) {
    int rc = run_jit(argc, argv, &shapes);
    free_shape_flags(&shapes);
    return rc;
  }
  kiln_diag d;
  kiln_diag_init(&d, argv[2]);
  kiln_graph *g = kiln_load_model_ex(argv[2], &shapes.load, &d);
  free_shape_flags(&shapes);
  if (!g) return KILN_EXIT_BAD_INPUT;
  kiln_io_desc *ins = kiln_xcalloc((size_t)g->n_inputs + 1, sizeof(kiln_io_desc));
  kiln_io_desc *outs = kiln_xcalloc((size_t)g->n_outputs + 1, sizeof(kiln_io_desc));
  fill_io(g, g->inputs, g->n_inputs, ins);
  fill_io(g, g->outputs, g->n_outputs, outs);
  kiln_model_desc m = {.name = g->name,
                       .n_inputs = g->n_inputs,
                       .n_outputs = g->n_outputs,
                       .inputs = ins,
                       .outputs = outs,
                       .ctx_bytes = 1,
                       .init_file = interp_init_file,
                       .init_embedded = interp_init,
                       .run = interp_run,
                       .release = interp_release};
  interp_graph = g;
  argv[2] = argv[0];  // kiln_main sees: kiln <flags...>
  int rc = kiln_main(&m, argc - 2, argv + 2);
  free(ins);
  free(outs);
  kiln_graph_free(g);
  return rc;
}

static int cmd_compare(const cli *a) {
  kiln_compare_options o = a->compare;
  o.model = a->model;
  o.target = a->target;
  o.tuning = a->tuning;  // the variants use the tiles the real build would
  return kiln_compare(&o);
}

static int cmd_passes(void) {
  for (const kiln_pass *p = kiln_pipeline; p->name; p++)
    printf("%-16s %s%s\n", p->name, p->doc, p->required ? " (required)" : "");
  return KILN_EXIT_OK;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? KILN_EXIT_BAD_INPUT : KILN_EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) return puts("kiln " KILN_VERSION) < 0;
  if (strcmp(argv[1], "run") == 0) return cmd_run(argc, argv);
  if (strcmp(argv[1], "passes") == 0) return cmd_passes();
  if (strcmp(argv[1], "prune") == 0) return kiln_prune_main(argc - 1, argv + 1);
  kiln_quant_options quant = {0};
  kiln_tuning tuning = {0};
  cli a = {.cmd = argv[1], .opt_level = -1, .quant = &quant, .tuning = &tuning};
  int (*cmd)(const cli *) = strcmp(a.cmd, "compile") == 0   ? cmd_compile
                            : strcmp(a.cmd, "build") == 0   ? cmd_build
                            : strcmp(a.cmd, "inspect") == 0 ? cmd_inspect
                            : strcmp(a.cmd, "import") == 0  ? cmd_import
                            : strcmp(a.cmd, "compare") == 0 ? cmd_compare
                                                            : NULL;
  if (!cmd) {
    fprintf(stderr, "kiln: unknown command '%s'\n", a.cmd);
    usage(stderr);
    return KILN_EXIT_BAD_INPUT;
  }
  int rc = KILN_EXIT_BAD_INPUT;
  if (parse_args(argc, argv, &a) && check_train_flags(&a) && check_tune_flags(&a) &&
      load_tuning(&a)) {
    train_build tb = {0};
    if (a.train) a.tb = &tb;
    rc = cmd(&a);
    free(tb.shapes);
    free(tb.g_shapes);
    if (tb.g_comp.g) kiln_compilation_free(&tb.g_comp);
  }
  free_shape_flags(&a);
  kiln_quant_options_free(a.quant);
  kiln_tuning_free(&tuning);
  return rc;
}

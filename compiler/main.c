// kiln: the command-line driver.
//   kiln compile MODEL -o DIR        generated C: DIR/NAME.c, DIR/NAME.h, DIR/NAME.weights
//   kiln build   MODEL -o EXE        a standalone executable (+ EXE.weights)
//   kiln run     MODEL --input ...   the reference interpreter, same flags as a built binary
//   kiln inspect MODEL [--json|--dot] [--after PASS]
//   kiln passes                      the pipeline
// Exit status: 0 success, 2 bad input (model, flags, files), 1 internal error.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/backend.h"
#include "../runtime/kiln_runtime.h"
#include "frontend.h"
#include "inspect.h"
#include "interp.h"
#include "passes/pipeline.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.1.0"
#endif

static void usage(FILE *out) {
  fputs(
      "usage:\n"
      "  kiln compile MODEL.json -o DIR [--embed-weights] [COMMON]\n"
      "  kiln build   MODEL.json -o EXE [--target native|avx512|avx2|generic] [--embed-weights]\n"
      "               [--cc CC] [--cflags FLAGS] [--keep-sources] [COMMON]\n"
      "  kiln run     MODEL.json --input [NAME=]X.npy ... --output [NAME=]Y.npy ... [--bench N]\n"
      "  kiln inspect MODEL.json [--json | --dot] [--after PASS] [COMMON]\n"
      "  kiln passes\n"
      "COMMON: --dump-ir-after=PASS  print the IR after PASS\n"
      "        -v                    per-pass timing\n"
      "exit status: 0 ok, 2 bad input, 1 internal error\n",
      out);
}

typedef struct cli {
  const char *cmd, *model, *out;
  const char *target, *cc, *cflags, *dump_after, *after;
  bool embed, keep_sources, verbose, json, dot;
} cli;

static bool bad_flag(const char *msg, const char *arg) {
  fprintf(stderr, "kiln: %s: %s\n", msg, arg);
  return false;
}

// Matches "--name VALUE" and "--name=VALUE".
static bool take_value(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t len = strlen(name);
  if (strncmp(argv[*i], name, len) != 0) return false;
  if (argv[*i][len] == '=') {
    *value = argv[*i] + len + 1;
    return true;
  }
  if (argv[*i][len] != '\0') return false;
  if (*i + 1 >= argc) {
    *value = NULL;
    return true;
  }
  *value = argv[++*i];
  return true;
}

static bool parse_args(int argc, char **argv, cli *c) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    bool matched = true;
    if (strcmp(a, "--embed-weights") == 0)
      c->embed = true;
    else if (strcmp(a, "--keep-sources") == 0)
      c->keep_sources = true;
    else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
      c->verbose = true;
    else if (strcmp(a, "--json") == 0)
      c->json = true;
    else if (strcmp(a, "--dot") == 0)
      c->dot = true;
    else
      matched = false;
    if (matched) continue;
    const char **slot = NULL;
    if (take_value(argc, argv, &i, "-o", &v) || take_value(argc, argv, &i, "--output-dir", &v))
      slot = &c->out;
    else if (take_value(argc, argv, &i, "--target", &v))
      slot = &c->target;
    else if (take_value(argc, argv, &i, "--cc", &v))
      slot = &c->cc;
    else if (take_value(argc, argv, &i, "--cflags", &v))
      slot = &c->cflags;
    else if (take_value(argc, argv, &i, "--dump-ir-after", &v))
      slot = &c->dump_after;
    else if (take_value(argc, argv, &i, "--after", &v))
      slot = &c->after;
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
  const char *passes[] = {c->dump_after, c->after};
  for (int i = 0; i < 2; i++)
    if (passes[i] && !kiln_pass_exists(passes[i]))
      return bad_flag("no such pass (see `kiln passes`)", passes[i]);
  return true;
}

static int compile_model(const cli *a, kiln_compilation *c) {
  memset(c, 0, sizeof(*c));
  kiln_diag d;
  kiln_diag_init(&d, a->model);
  kiln_graph *g = kiln_load_model(a->model, &d);
  if (!g) return KILN_EXIT_BAD_INPUT;
  kiln_compilation_init(c, g);
  c->dump_after = a->dump_after;
  c->verbose = a->verbose;
  c->stop_after = a->after;
  if (!kiln_compile_pipeline(c, &d)) return d.errors ? KILN_EXIT_BAD_INPUT : KILN_EXIT_INTERNAL;
  return KILN_EXIT_OK;
}

static int cmd_compile(const cli *a) {
  if (!a->out) return bad_flag("missing -o DIR for", "compile"), KILN_EXIT_BAD_INPUT;
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK) {
    kiln_diag d;
    kiln_diag_init(&d, a->out);
    kiln_c_options o = {.embed_weights = a->embed};
    if (!kiln_emit_c_files(c.prog, &o, a->out, &d)) rc = KILN_EXIT_BAD_INPUT;
  }
  if (c.g) kiln_compilation_free(&c);
  return rc;
}

static int cmd_build(const cli *a) {
  if (!a->out) return bad_flag("missing -o EXE for", "build"), KILN_EXIT_BAD_INPUT;
  kiln_compilation c;
  int rc = compile_model(a, &c);
  if (rc == KILN_EXIT_OK) {
    kiln_diag d;
    kiln_diag_init(&d, a->out);
    kiln_build_options o = {.cc = a->cc,
                            .target = a->target ? a->target : "native",
                            .extra_cflags = a->cflags,
                            .embed_weights = a->embed,
                            .keep_sources = a->keep_sources,
                            .verbose = a->verbose};
    if (!kiln_build_binary(c.prog, &o, a->out, &d)) rc = KILN_EXIT_BAD_INPUT;
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

static int cmd_run(int argc, char **argv) {
  if (argc < 3 || argv[2][0] == '-') {
    fputs("kiln: missing model file for run\n", stderr);
    return KILN_EXIT_BAD_INPUT;
  }
  kiln_diag d;
  kiln_diag_init(&d, argv[2]);
  kiln_graph *g = kiln_load_model(argv[2], &d);
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

static int cmd_passes(void) {
  for (const kiln_pass *p = kiln_pipeline; p->name; p++) printf("%-12s %s\n", p->name, p->doc);
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
  cli a = {.cmd = argv[1]};
  int (*cmd)(const cli *) = strcmp(a.cmd, "compile") == 0   ? cmd_compile
                            : strcmp(a.cmd, "build") == 0   ? cmd_build
                            : strcmp(a.cmd, "inspect") == 0 ? cmd_inspect
                                                            : NULL;
  if (!cmd) {
    fprintf(stderr, "kiln: unknown command '%s'\n", a.cmd);
    usage(stderr);
    return KILN_EXIT_BAD_INPUT;
  }
  if (!parse_args(argc, argv, &a)) return KILN_EXIT_BAD_INPUT;
  return cmd(&a);
}

// Per-op tests over the golden cases in tests/goldens/ops (made by tools/make_op_goldens.py with
// PyTorch): the reference interpreter must match PyTorch, and the generated code of both backends
// (built by `kiln build`, run as a standalone binary) must match the interpreter, each within the
// op's stated tolerance below.
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "test_util.h"

#ifndef KILN_SANITIZE
#define KILN_SANITIZE "none"
#endif

TestSuite(ops, .fini = check_leaks);

// Every op states its tolerance in its own file (kiln_op_def.tol): how far the interpreter may be
// from PyTorch, and the generated code from the interpreter.
static kiln_tolerance tolerance_for(const char *op) {
  const kiln_op_def *def = kiln_op_find(op);
  cr_assert(def, "golden case for unknown op %s", op);
  return def->tol;
}

typedef struct golden_case {
  char name[128];
  char op[64];
} golden_case;

// Reads tests/goldens/ops/cases*.txt: one "<case> <op>" a line (each family's script writes its
// own list).
static int read_cases(golden_case *cases, int max) {
  glob_t files;
  char *pattern = path_join(KILN_TEST_GOLDENS_DIR, "ops/cases*.txt");
  cr_assert_eq(glob(pattern, 0, NULL, &files), 0, "no %s", pattern);
  free(pattern);
  int n = 0;
  for (size_t i = 0; i < files.gl_pathc; i++) {
    FILE *f = fopen(files.gl_pathv[i], "r");
    cr_assert(f, "cannot open %s", files.gl_pathv[i]);
    while (n < max && fscanf(f, "%127s %63s", cases[n].name, cases[n].op) == 2) n++;
    fclose(f);
  }
  globfree(&files);
  cr_assert_gt(n, 20, "expected the golden op cases, found %d", n);
  cr_assert_lt(n, max, "more than %d golden cases: raise the limit", max);
  return n;
}

static char *case_file(const golden_case *c, const char *file) {
  char *p = NULL;
  cr_assert(asprintf(&p, "%s/ops/%s/%s", KILN_TEST_GOLDENS_DIR, c->name, file) > 0);
  return p;
}

static char *tensor_file(const golden_case *c, const char *tensor) {
  char name[256];
  snprintf(name, sizeof(name), "%s.npy", tensor);
  return case_file(c, name);
}

static kiln_graph *load_case(const golden_case *c) {
  char *model = case_file(c, "model.json");
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_graph *g = kiln_load_model(model, &d);
  cr_assert(g, "%s: the model does not load", model);
  free(model);
  return g;
}

// Runs the interpreter on the case's inputs; returns the outputs (caller frees).
static kiln_array *interpret_case(const golden_case *c, const kiln_graph *g) {
  kiln_array *in = calloc((size_t)g->n_inputs + 1, sizeof(kiln_array));
  kiln_array *out = calloc((size_t)g->n_outputs + 1, sizeof(kiln_array));
  for (int i = 0; i < g->n_inputs; i++) {
    char *p = tensor_file(c, g->tensors[g->inputs[i]].name);
    in[i] = read_npy_or_fail(p);
    free(p);
  }
  kiln_diag d;
  kiln_diag_init(&d, c->name);
  cr_assert(kiln_interp_run(g, in, out, &d), "%s: the interpreter failed", c->name);
  for (int i = 0; i < g->n_inputs; i++) kiln_array_free(&in[i]);
  free(in);
  return out;
}

static void free_outputs(kiln_array *out, int n) {
  for (int i = 0; i < n; i++) kiln_array_free(&out[i]);
  free(out);
}

Test(ops, interpreter_matches_pytorch) {
  golden_case cases[1024];
  int n = read_cases(cases, 1024);
  for (int k = 0; k < n; k++) {
    kiln_tolerance tol = tolerance_for(cases[k].op);
    kiln_graph *g = load_case(&cases[k]);
    kiln_array *out = interpret_case(&cases[k], g);
    for (int i = 0; i < g->n_outputs; i++) {
      char *p = tensor_file(&cases[k], g->tensors[g->outputs[i]].name);
      kiln_array want = read_npy_or_fail(p);
      char why[512];
      cr_expect(arrays_close(&out[i], &want, tol.atol, tol.rtol, why, sizeof(why)),
                "%s (%s) output %s: %s", cases[k].name, cases[k].op, g->tensors[g->outputs[i]].name,
                why);
      kiln_array_free(&want);
      free(p);
    }
    free_outputs(out, g->n_outputs);
    kiln_graph_free(g);
  }
}

// Builds the case with `kiln build --backend BACKEND`, runs the binary, compares with the
// interpreter.
static void check_generated(const golden_case *c, const char *dir, const char *backend) {
  kiln_graph *g = load_case(c);
  kiln_array *ref = interpret_case(c, g);
  char *model = case_file(c, "model.json");
  char *exe = path_join(dir, c->name);
  char *build[] = {KILN_EXE, "build", model, "--backend", (char *)backend, "-o", exe, NULL};
  run_result r = run_cmd(build, 300);
  cr_expect_eq(r.status, 0, "%s: kiln build failed (%d): %s", c->name, r.status, r.err);
  run_result_free(&r);
  char *args[64] = {exe};
  int na = 1;
  char *owned[64];
  int no = 0;
  for (int i = 0; i < g->n_inputs && i < 8; i++) {
    char *p = tensor_file(c, g->tensors[g->inputs[i]].name);
    size_t len = strlen(p) + strlen(g->tensors[g->inputs[i]].name) + 2;
    char *flag = malloc(len);
    snprintf(flag, len, "%s=%s", g->tensors[g->inputs[i]].name, p);
    free(p);
    args[na++] = "--input";
    args[na++] = owned[no++] = flag;
  }
  char *out_paths[8];
  for (int i = 0; i < g->n_outputs && i < 8; i++) {
    cr_assert(asprintf(&out_paths[i], "%s/%s.out%d.npy", dir, c->name, i) > 0);
    size_t len = strlen(out_paths[i]) + strlen(g->tensors[g->outputs[i]].name) + 2;
    char *flag = malloc(len);
    snprintf(flag, len, "%s=%s", g->tensors[g->outputs[i]].name, out_paths[i]);
    args[na++] = "--output";
    args[na++] = owned[no++] = flag;
  }
  args[na] = NULL;
  r = run_cmd(args, 120);
  cr_expect_eq(r.status, 0, "%s: the generated binary failed (%d): %s", c->name, r.status, r.err);
  run_result_free(&r);
  kiln_tolerance tol = tolerance_for(c->op);
  for (int i = 0; i < g->n_outputs && i < 8; i++) {
    kiln_array got;
    char err[512], why[512];
    if (kiln_npy_read(out_paths[i], &got, err, sizeof(err)) == KILN_OK) {
      cr_expect(arrays_close(&got, &ref[i], tol.atol, tol.rtol, why, sizeof(why)),
                "%s (%s) %s backend vs interpreter: %s", c->name, c->op, backend, why);
      kiln_array_free(&got);
    } else {
      cr_expect_fail("%s: %s", c->name, err);
    }
    free(out_paths[i]);
  }
  for (int i = 0; i < no; i++) free(owned[i]);
  free(model);
  free(exe);
  free_outputs(ref, g->n_outputs);
  kiln_graph_free(g);
}

// Both backends render the same loop IR; each case runs through each, in four shards per backend
// so that `--jobs 2` builds two cases at a time.
typedef struct shard {
  char backend[8];  // an array, not a pointer: Criterion copies parameters into its workers
  int index;
} shard;
enum { SHARDS = 4 };
static shard shards[] = {{"c", 0},    {"c", 1},    {"c", 2},    {"c", 3},
                         {"llvm", 0}, {"llvm", 1}, {"llvm", 2}, {"llvm", 3}};

ParameterizedTestParameters(ops, generated_code_matches_interpreter) {
  return cr_make_param_array(shard, shards, sizeof(shards) / sizeof(shards[0]));
}

ParameterizedTest(shard *s, ops, generated_code_matches_interpreter, .timeout = 900) {
  // Under the sanitizers the LLVM-generated code is not instrumented, so a sixteenth of the cases
  // (one LLVM shard, every fourth case of it), which still run the sanitized compiler through the
  // LLVM path, is enough there.
  bool sanitized_llvm = strcmp(KILN_SANITIZE, "none") != 0 && strcmp(s->backend, "llvm") == 0;
  if (sanitized_llvm && s->index != 0) cr_skip_test("LLVM shard %d: sanitizer build", s->index);
  golden_case cases[1024];
  int n = read_cases(cases, 1024);
  char *dir = make_temp_dir();
  int step = sanitized_llvm ? 4 * SHARDS : SHARDS;
  for (int k = s->index; k < n; k += step) check_generated(&cases[k], dir, s->backend);
  rm_rf(dir);
  free(dir);
}

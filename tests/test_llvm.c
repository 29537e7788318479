// The LLVM backend (backends/llvm): binaries built with `kiln build --backend llvm` and models run
// by `kiln run --jit` must match the PyTorch goldens (samples, within 1e-5) and the interpreter
// (every golden op case, within the op's tolerance); `--emit llvm` must pass LLVM 19's own
// assembler and verifier; `--emit obj` must link with a C program that only has the header and
// the runtime; every sample model must compile; LLVM-side failures are clear errors.
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/backend.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "sample_util.h"

TestSuite(llvm, .fini = check_leaks);

enum { MAX_ARGS = 40, MAX_CASES = 4096 };

static void run_ok(char **args, int timeout_s, const char *what) {
  run_result r = run_cmd(args, timeout_s);
  cr_expect_eq(r.status, 0, "%s failed (%d): %s", what, r.status, r.err);
  run_result_free(&r);
}

// ---- samples: PyTorch goldens ----

static void run_sample(const sample *s, char **prefix, int n, const char *out_path) {
  char in_flag[700], out_flag[700], golden[512];
  sample_golden(s, s->input, golden, sizeof(golden));
  snprintf(in_flag, sizeof(in_flag), "%s=%s", s->input, golden);
  snprintf(out_flag, sizeof(out_flag), "%s=%s", s->output, out_path);
  char *args[MAX_ARGS];
  int na = 0;
  for (int i = 0; i < n; i++) args[na++] = prefix[i];
  args[na++] = "--input";
  args[na++] = in_flag;
  args[na++] = "--output";
  args[na++] = out_flag;
  args[na] = NULL;
  run_ok(args, 300, s->name);
}

static void expect_golden(const sample *s, const char *path, const char *what) {
  char golden[512], why[512];
  sample_golden(s, s->output, golden, sizeof(golden));
  kiln_array want = read_npy_or_fail(golden), got = read_npy_or_fail(path);
  cr_expect(arrays_close(&got, &want, 1e-5, 0, why, sizeof(why)), "%s (%s): %s", s->name, what,
            why);
  kiln_array_free(&want);
  kiln_array_free(&got);
}

Test(llvm, samples_match_pytorch, .timeout = 900) {
  char *dir = make_temp_dir();
  for (int i = 0; i < N_SAMPLES; i++) {
    const sample *s = &samples[i];
    char model[512];
    sample_model(s, model, sizeof(model));
    char *exe = path_join(dir, s->name), *out = path_join(dir, "out.npy");
    const char *targets[] = {"native", "generic"};
    for (int t = 0; t < 2; t++) {
      char *build[] = {KILN_EXE,           "build", model, "--backend", "llvm", "--target",
                       (char *)targets[t], "-o",    exe,   NULL};
      run_ok(build, 300, "kiln build --backend llvm");
      char *prefix[] = {exe};
      run_sample(s, prefix, 1, out);
      expect_golden(s, out, targets[t]);
    }
    char *jit[] = {KILN_EXE, "run", model, "--jit"};
    run_sample(s, jit, 4, out);
    expect_golden(s, out, "kiln run --jit");
    free(exe);
    free(out);
  }
  rm_rf(dir);
  free(dir);
}

// Every model in samples/ compiles to an object (the zoo exercises many ops and shapes), at -O0:
// what is checked is that every model lowers and LLVM accepts it (code quality: the other tests).
// Four shards, so that `--jobs 2` compiles two models at a time.
enum { COMPILE_SHARDS = 4 };
static int compile_shards[COMPILE_SHARDS] = {0, 1, 2, 3};

ParameterizedTestParameters(llvm, every_sample_compiles) {
  return cr_make_param_array(int, compile_shards, COMPILE_SHARDS);
}

ParameterizedTest(int *shard, llvm, every_sample_compiles, .timeout = 900) {
  glob_t files;
  char pattern[600];
  snprintf(pattern, sizeof(pattern), "%s/samples/*.json", KILN_SOURCE_DIR);
  cr_assert_eq(glob(pattern, 0, NULL, &files), 0, "no %s", pattern);
  char *dir = make_temp_dir();
  for (size_t i = (size_t)*shard; i < files.gl_pathc; i += COMPILE_SHARDS) {
    char *args[] = {
        KILN_EXE, "compile", files.gl_pathv[i], "--backend", "llvm", "--emit", "obj", "-O0", "-o",
        dir,      NULL};
    run_ok(args, 600, files.gl_pathv[i]);
  }
  globfree(&files);
  rm_rf(dir);
  free(dir);
}

// The golden op cases run through both backends in test_ops.c.

// ---- --emit llvm and --emit obj ----

static char *sample_path(const char *name) {
  char *p = NULL;
  cr_assert(asprintf(&p, "%s/samples/%s.json", KILN_SOURCE_DIR, name) > 0);
  return p;
}

Test(llvm, emit_llvm_passes_llvm_verifier, .timeout = 300) {
  char *dir = make_temp_dir(), *model = sample_path("lenet5");
  const char *levels[] = {"-O0", "-O3"};
  for (int i = 0; i < 2; i++) {
    char *args[] = {KILN_EXE, "compile",         model, "--backend", "llvm", "--emit",
                    "llvm",   (char *)levels[i], "-o",  dir,         NULL};
    run_ok(args, 300, "kiln compile --emit llvm");
    char *ll = path_join(dir, "lenet5.ll"), *bc = path_join(dir, "lenet5.bc");
    char *as[] = {"llvm-as-19", ll, "-o", bc, NULL};
    run_ok(as, 120, "llvm-as-19");
    char *opt[] = {"opt-19", "-passes=verify", "-disable-output", ll, NULL};
    run_ok(opt, 120, "opt-19 -passes=verify");
    free(ll);
    free(bc);
  }
  free(model);
  rm_rf(dir);
  free(dir);
}

// The busiest basic block of an optimized module (the most llvm.fmuladd calls, a block that
// branches back to itself first): how many calls it has, how many stores and gathers, and the
// narrowest of its multiply-adds (lanes; 1: scalar). In a register-blocked convolution that is the
// microkernel's inner loop (its first tap, peeled before the loop, has as many multiply-adds but
// runs once). widest: the widest float vector anywhere in the module (what the target's vectors
// hold).
typedef struct hot_block {
  int muladds, stores, gathers, lanes;
  bool loop;
  char name[128];
} hot_block;

static bool busier(const hot_block *a, const hot_block *b) {
  if (!a->muladds || !b->muladds) return a->muladds > b->muladds;
  return a->loop != b->loop ? a->loop : a->muladds > b->muladds;
}

// Whether line branches to block `name` (a "br" naming "%name" whole).
static bool branches_to(const char *line, const char *name) {
  if (!*name || !strstr(line, " br ")) return false;
  size_t n = strlen(name);
  for (const char *at = strchr(line, '%'); at; at = strchr(at + 1, '%'))
    if (strncmp(at + 1, name, n) == 0 && strchr(", \n", at[1 + n])) return true;
  return false;
}

static bool is_block_label(const char *line) {
  size_t n = strcspn(line, ": \t\n");
  return n > 0 && line[n] == ':' && line[0] != ' ' && line[0] != ';';
}

static int muladd_lanes(const char *line) {
  const char *at = strstr(line, "@llvm.fmuladd.");
  if (!at || !strstr(line, "call ")) return 0;
  at += strlen("@llvm.fmuladd.");
  return *at == 'v' ? atoi(at + 1) : 1;
}

static int widest_float_vector(const char *line) {
  int widest = 0;
  for (const char *at = strchr(line, '<'); at; at = strchr(at + 1, '<')) {
    char *end = NULL;
    long lanes = strtol(at + 1, &end, 10);
    if (end != at + 1 && strncmp(end, " x float>", 9) == 0 && lanes > widest) widest = (int)lanes;
  }
  return widest;
}

static hot_block busiest_block(const char *ll_path, int *widest) {
  FILE *f = fopen(ll_path, "r");
  cr_assert(f, "cannot read %s", ll_path);
  hot_block best = {0}, cur = {0};
  char *line = NULL;
  size_t cap = 0;
  *widest = 0;
  while (getline(&line, &cap, f) > 0) {
    if (is_block_label(line) || strncmp(line, "define ", 7) == 0 || line[0] == '}') {
      if (busier(&cur, &best)) best = cur;
      cur = (hot_block){0};
      if (is_block_label(line))
        snprintf(cur.name, sizeof cur.name, "%.*s", (int)strcspn(line, ":"), line);
    }
    if (branches_to(line, cur.name)) cur.loop = true;
    int lanes = muladd_lanes(line), w = widest_float_vector(line);
    if (lanes && (!cur.muladds || lanes < cur.lanes)) cur.lanes = lanes;
    if (lanes) cur.muladds++;
    if (strncmp(line, "  store ", 8) == 0) cur.stores++;
    if (strstr(line, "@llvm.masked.gather")) cur.gathers++;
    if (w > *widest) *widest = w;
  }
  if (busier(&cur, &best)) best = cur;
  free(line);
  fclose(f);
  return best;
}

// The busiest block of MODEL compiled by the LLVM backend at -O3 into dir (conv.ll).
static hot_block compiled_hot_block(char *dir, char *model, int *widest) {
  char *args[] = {KILN_EXE, "compile", model, "--backend", "llvm", "--emit",
                  "llvm",   "-O3",     "-o",  dir,         NULL};
  run_ok(args, 300, "kiln compile --emit llvm -O3");
  char *ll = path_join(dir, "conv.ll");
  hot_block hot = busiest_block(ll, widest);
  free(ll);
  return hot;
}

// A convolution with bias (and a ReLU, if relu): lowered to a register-blocked FusedConv whose
// accumulators are a local array, read back by a vectorized epilogue (with gathers, which take
// the array's address). Written to path.
static void write_conv_model(const char *path, int k, int stride, bool relu) {
  FILE *f = fopen(path, "w");
  cr_assert(f, "cannot write %s", path);
  fprintf(
      f,
      "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"conv\",\n"
      " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, 32, 14, 14]}],\n"
      " \"outputs\": [{\"name\": \"y\"}],\n"
      " \"params\": [{\"name\": \"w\", \"dtype\": \"f32\", \"shape\": [32, 32, %d, %d],\n"
      "   \"init\": {\"kind\": \"kaiming_uniform\", \"seed\": 1}},\n"
      "  {\"name\": \"b\", \"dtype\": \"f32\", \"shape\": [32],\n"
      "   \"init\": {\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 2}}],\n"
      " \"nodes\": [{\"op\": \"Conv\", \"name\": \"c\", \"inputs\": [\"x\", \"w\", \"b\"],\n"
      "   \"outputs\": [\"%s\"], \"attrs\": {\"kernel_shape\": [%d, %d], \"strides\": [%d, %d],\n"
      "   \"pads\": [%d, %d, %d, %d]}}",
      k, k, relu ? "c" : "y", k, k, stride, stride, k / 2, k / 2, k / 2, k / 2);
  if (relu)
    fprintf(f,
            ",\n  {\"op\": \"Relu\", \"name\": \"r\", \"inputs\": [\"c\"], \"outputs\": [\"y\"]}");
  fprintf(f, "]}\n");
  cr_assert(fclose(f) == 0, "cannot write %s", path);
}

// The microkernel of a k x k convolution (stride `stride`) compiled at -O3.
static void check_microkernel(int k, int stride, bool relu) {
  char *dir = make_temp_dir(), *model = path_join(dir, "conv.json");
  write_conv_model(model, k, stride, relu);
  int widest = 0;
  hot_block hot = compiled_hot_block(dir, model, &widest);
  cr_expect_geq(hot.muladds, 4, "%dx%d conv: no unrolled multiply-add loop in %s/conv.ll", k, k,
                dir);
  // Accumulators in registers: the loop loads inputs and weights and stores nothing. (Without the
  // local arrays' alias scope, LLVM cannot keep them out of memory once the epilogue's gathers
  // capture the array: 28 vector stores per iteration.)
  cr_expect_eq(hot.stores, 0,
               "%dx%d conv: the microkernel's loop (%d multiply-adds) stores %d times", k, k,
               hot.muladds, hot.stores);
  // The 16-lane channel loop vectorized whole, as wide as the target allows. (Without
  // llvm.loop.unroll.disable the full unroller takes it apart first and SLP regroups it 4 wide.)
  cr_expect_geq(hot.lanes, widest < 16 ? widest : 16,
                "%dx%d conv: the microkernel's multiply-adds are %d lanes wide, the target's %d", k,
                k, hot.lanes, widest);
  free(model);
  rm_rf(dir);
  free(dir);
}

// A 1x1 stride-2 FusedConv on NCHWc (ResNet's downsampling shortcut as the network runs it):
// the microkernel loads each of its 4 channel vectors' weights as one vector. (The index
// ((ob * 4 + r) * C + ic) * 16 + l once became base | l in LLVM's hands, and the loop vectorizer
// gathered the weights of r = 1..3 lane by lane: 2.7x slower than the C backend.)
Test(llvm, blocked_pointwise_conv_loads_weights_whole, .timeout = 300) {
  char *dir = make_temp_dir(), *model = path_join(dir, "conv.json");
  FILE *f = fopen(model, "w");
  cr_assert(f, "cannot write %s", model);
  fputs(
      "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"conv\",\n"
      " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, 4, 28, 28, 16]}],\n"
      " \"outputs\": [{\"name\": \"y\"}],\n"
      " \"params\": [{\"name\": \"w\", \"dtype\": \"f32\", \"shape\": [128, 64, 1, 1],\n"
      "   \"init\": {\"kind\": \"kaiming_uniform\", \"seed\": 1}},\n"
      "  {\"name\": \"b\", \"dtype\": \"f32\", \"shape\": [128],\n"
      "   \"init\": {\"kind\": \"uniform\", \"low\": -0.1, \"high\": 0.1, \"seed\": 2}}],\n"
      " \"nodes\": [{\"op\": \"FusedConv\", \"name\": \"c\", \"inputs\": [\"x\", \"w\", \"b\"],\n"
      "   \"outputs\": [\"y\"], \"attrs\": {\"kernel_shape\": [1, 1], \"strides\": [2, 2],\n"
      "   \"activation\": \"Relu\", \"layout\": \"NCHWc\", \"lanes\": 16,\n"
      "   \"input_layout\": \"NCHWc\"}}]}\n",
      f);
  cr_assert(fclose(f) == 0, "cannot write %s", model);
  int widest = 0;
  hot_block hot = compiled_hot_block(dir, model, &widest);
  cr_expect_geq(hot.muladds, 4, "no unrolled multiply-add loop in %s/conv.ll", dir);
  cr_expect_eq(hot.gathers, 0, "the 1x1 microkernel's loop (%d multiply-adds) gathers %d times",
               hot.muladds, hot.gathers);
  free(model);
  rm_rf(dir);
  free(dir);
}

Test(llvm, conv_microkernels_stay_in_vector_registers, .timeout = 300) {
  check_microkernel(3, 1, true);
  check_microkernel(1, 2, false);  // ResNet's downsampling shortcut
}

// tests/embed_main.c (the C backend's embedding example) links unchanged against the object.
Test(llvm, emit_obj_links_with_a_c_program, .timeout = 300) {
  char *dir = make_temp_dir(), *model = sample_path("lenet5");
  char *args[] = {KILN_EXE, "compile", model, "--backend", "llvm",
                  "--emit", "obj",     "-o",  dir,         NULL};
  run_ok(args, 300, "kiln compile --emit obj");
  char inc[PATH_MAX], lib[PATH_MAX];
  cr_assert(kiln_find_runtime(inc, lib, (int)sizeof(inc)), "cannot find the runtime");
  char *obj = path_join(dir, "lenet5.o"), *exe = path_join(dir, "embed"), *src = NULL;
  char *inc_flag = NULL, *dir_flag = NULL, *lib_a = NULL, *goldens = NULL;
  cr_assert(asprintf(&src, "%s/tests/embed_main.c", KILN_SOURCE_DIR) > 0);
  cr_assert(asprintf(&inc_flag, "-I%s", inc) > 0 && asprintf(&dir_flag, "-I%s", dir) > 0);
  cr_assert(asprintf(&lib_a, "%s/libkiln-runtime.a", lib) > 0);
  cr_assert(asprintf(&goldens, "-DKILN_TEST_GOLDENS_DIR=\"%s\"", KILN_TEST_GOLDENS_DIR) > 0);
  char *cc[] = {
    "cc",
    "-std=c17",
    "-Wall",
    "-Wextra",
    "-Werror",
    goldens,
    inc_flag,
    dir_flag,
    src,
    obj,
    lib_a,
    "-fopenmp",
    "-lm",
#if defined(__SANITIZE_ADDRESS__)
    "-fsanitize=address,undefined",  // the runtime library is instrumented
#endif
    "-o",
    exe,
    NULL
  };
  run_ok(cc, 300, "cc embed_main.c lenet5.o");
  char *weights = path_join(dir, "lenet5.weights");
  char *run[] = {exe, weights, NULL};
  run_ok(run, 120, "the embedding program");
  char *frees[] = {obj, exe, src, inc_flag, dir_flag, lib_a, goldens, weights, model};
  for (size_t i = 0; i < sizeof(frees) / sizeof(frees[0]); i++) free(frees[i]);
  rm_rf(dir);
  free(dir);
}

// ---- errors ----

Test(llvm, unknown_target_is_a_clear_error) {
  char *dir = make_temp_dir(), *model = sample_path("xor_mlp"), *exe = path_join(dir, "x");
  char *args[] = {KILN_EXE,   "build", model, "--backend", "llvm",
                  "--target", "pdp11", "-o",  exe,         NULL};
  run_result r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2, "exit status %d", r.status);
  cr_expect(strstr(r.err, "unknown target 'pdp11'"), "message: %s", r.err);
  run_result_free(&r);
  char *emit[] = {KILN_EXE, "compile", model, "--backend", "c", "--emit", "obj", "-o", dir, NULL};
  r = run_cmd(emit, 60);
  cr_expect_eq(r.status, 2, "--backend c --emit obj: exit status %d", r.status);
  run_result_free(&r);
  free(exe);
  free(model);
  rm_rf(dir);
  free(dir);
}

// A loop program with an operator the backend does not know fails cleanly (no abort, no crash).
Test(llvm, unknown_operator_is_a_clear_error) {
  kiln_lprog *p = kiln_lprog_new("bad");
  kiln_lbuf out = {.name = "y", .kind = KILN_BUF_OUTPUT, .dtype = KILN_F32, .numel = 4};
  int y = kiln_lprog_add_buf(p, &out);
  kiln_lkernel *k = kiln_lprog_add_kernel(p, "Test", "n");
  kiln_lb b;
  kiln_lb_begin(&b, p, k);
  int i = kiln_lb_for_n(&b, "i", 4);
  kiln_lexpr *e = lx_bin(&b, LB_ADD, lx_float(&b, KILN_F32, 1.0), lx_float(&b, KILN_F32, 2.0));
  kiln_lb_store(&b, y, lx_var(&b, i), e);
  kiln_lb_end_for(&b);
  kiln_lb_end(&b);
  e->op = LB_COUNT + 7;  // an operator added to the IR after this backend was written
  char *dir = make_temp_dir();
  FILE *err = tmpfile();
  kiln_diag d;
  kiln_diag_init(&d, "bad");
  d.out = err;
  kiln_llvm_options o = {.opt_level = 1};
  cr_expect(!kiln_llvm_emit_files(p, &o, KILN_LLVM_EMIT_OBJ, dir, &d));
  cr_expect_eq(d.errors, 1);
  char msg[512] = "";
  rewind(err);
  size_t n = fread(msg, 1, sizeof(msg) - 1, err);
  msg[n] = 0;
  cr_expect(strstr(msg, "invalid binary operator"), "message: %s", msg);
  fclose(err);
  kiln_lprog_free(p);
  rm_rf(dir);
  free(dir);
}

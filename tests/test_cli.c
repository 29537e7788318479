// `kiln inspect` (text, --json, --dot, --after), `kiln passes`, --dump-ir-after and -v, and
// `kiln compile` output files, checked against numbers derived by hand from the LeNet-5 layout.
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sample_util.h"

TestSuite(cli, .fini = check_leaks);

// LeNet-5 (28x28 input, conv1 padded by 2): parameters and multiply-accumulates by hand.
//   conv1 6x1x5x5+6 = 156, conv2 16x6x5x5+16 = 2416, fc1 400x120+120 = 48120,
//   fc2 120x84+84 = 10164, fc3 84x10+10 = 850.
static const int64_t LENET5_PARAMS = 156 + 2416 + 48120 + 10164 + 850;
//   conv1 6*28*28*25, conv2 16*10*10*150, fc 400*120 + 120*84 + 84*10.
static const int64_t LENET5_MACS =
    6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10;

static run_result kiln(const char *cmd, const char *extra1, const char *extra2) {
  char model[512];
  sample_model(&samples[2], model, sizeof(model));
  char *args[] = {KILN_EXE, (char *)cmd, model, (char *)extra1, (char *)extra2, NULL};
  run_result r = run_cmd(args, 60);
  cr_assert_eq(r.status, 0, "kiln %s failed: %s", cmd, r.err);
  return r;
}

static int64_t get_int(json_object *o, const char *key) {
  json_object *v;
  cr_assert(json_object_object_get_ex(o, key, &v), "no \"%s\" in inspect --json", key);
  return json_object_get_int64(v);
}

Test(cli, inspect_json_reports_shapes_params_flops_arena) {
  run_result r = kiln("inspect", "--json", NULL);
  json_object *o = json_tokener_parse(r.out);
  cr_assert(o, "inspect --json is not JSON:\n%s", r.out);
  cr_expect_eq(get_int(o, "params"), LENET5_PARAMS);
  cr_expect_geq(get_int(o, "flops"), 2 * LENET5_MACS);
  cr_expect_lt(get_int(o, "flops"), 2 * LENET5_MACS + 200000,
               "flops counts far more than the layers do");
  int64_t arena = get_int(o, "arena_bytes");
  // The largest activation is conv1's (1,6,28,28) f32; two must be live at once somewhere.
  cr_expect_geq(arena, 6 * 28 * 28 * 4);
  cr_expect_lt(arena, 3 * 6 * 28 * 28 * 4 + 4096, "arena larger than liveness allows");
  json_object *inputs, *outputs, *nodes;
  cr_assert(json_object_object_get_ex(o, "inputs", &inputs));
  cr_assert(json_object_object_get_ex(o, "outputs", &outputs));
  cr_assert(json_object_object_get_ex(o, "nodes", &nodes));
  json_object *x = json_object_array_get_idx(inputs, 0), *v;
  cr_assert(json_object_object_get_ex(x, "name", &v));
  cr_expect_str_eq(json_object_get_string(v), "x");
  cr_assert(json_object_object_get_ex(x, "dtype", &v));
  cr_expect_str_eq(json_object_get_string(v), "f32");
  cr_assert(json_object_object_get_ex(x, "shape", &v));
  cr_expect_eq(json_object_array_length(v), 4);
  cr_expect_eq(json_object_get_int(json_object_array_get_idx(v, 2)), 28);
  json_object *y = json_object_array_get_idx(outputs, 0);
  cr_assert(json_object_object_get_ex(y, "shape", &v));
  cr_expect_eq(json_object_get_int(json_object_array_get_idx(v, 1)), 10);
  // After the passes: conv1, act1, pool1, conv2, act2, pool2, flatten, fc1 and fc2 (FusedGemm:
  // their Tanh folded in), fc3.
  cr_expect_geq(json_object_array_length(nodes), 10);
  json_object_put(o);
  run_result_free(&r);
}

Test(cli, inspect_text_matches_json) {
  run_result t = kiln("inspect", NULL, NULL), j = kiln("inspect", "--json", NULL);
  json_object *o = json_tokener_parse(j.out);
  char line[128];
  snprintf(line, sizeof(line), "arena_bytes: %lld", (long long)get_int(o, "arena_bytes"));
  cr_expect(strstr(t.out, line), "text inspect lacks \"%s\":\n%s", line, t.out);
  snprintf(line, sizeof(line), "params: %lld", (long long)LENET5_PARAMS);
  cr_expect(strstr(t.out, line), "text inspect lacks \"%s\"", line);
  json_object_put(o);
  run_result_free(&t);
  run_result_free(&j);
}

Test(cli, inspect_dot_has_shapes_on_edges) {
  run_result r = kiln("inspect", "--dot", NULL);
  cr_expect(strncmp(r.out, "digraph", 7) == 0, "not a dot graph:\n%s", r.out);
  cr_expect(strstr(r.out, "1×6×28×28"), "conv1's output shape is not on an edge");
  cr_expect(strstr(r.out, "Conv"), "no Conv node");
  run_result_free(&r);
  if (access("/usr/bin/dot", X_OK) == 0) {  // Graphviz accepts it
    char *dir = make_temp_dir();
    char *dot = path_join(dir, "g.dot");
    FILE *f = fopen(dot, "w");
    r = kiln("inspect", "--dot", NULL);
    fputs(r.out, f);
    fclose(f);
    char *args[] = {"dot", "-Tsvg", dot, NULL};
    run_result_free(&r);
    r = run_cmd(args, 60);
    cr_expect_eq(r.status, 0, "dot rejects the graph: %s", r.err);
    cr_expect(strstr(r.out, "<svg"), "no svg from dot");
    run_result_free(&r);
    rm_rf(dir);
    free(dot);
    free(dir);
  }
}

Test(cli, inspect_after_pass_stops_there) {
  run_result r = kiln("inspect", "--json", "--after=dce");
  json_object *o = json_tokener_parse(r.out), *v;
  cr_assert(json_object_object_get_ex(o, "arena_bytes", &v));
  cr_expect(json_object_is_type(v, json_type_null), "arena planned although we stopped after dce");
  json_object_put(o);
  run_result_free(&r);
}

Test(cli, dump_ir_after_and_timing) {
  run_result r = kiln("inspect", "--dump-ir-after=lower", "-v");
  cr_expect(strstr(r.out, "IR after lower"), "no dump header");
  cr_expect(strstr(r.out, "kernel k0_conv1"), "no first kernel in the loop IR dump:\n%s", r.out);
  cr_expect(strstr(r.err, "pass schedule"), "no per-pass timing on stderr:\n%s", r.err);
  run_result_free(&r);
  r = kiln("inspect", "--dump-ir-after=dce", NULL);
  cr_expect(strstr(r.out, "graph lenet5"), "no graph IR dump:\n%s", r.out);
  run_result_free(&r);
  char *args[] = {KILN_EXE, "passes", NULL};
  r = run_cmd(args, 30);
  cr_expect(strstr(r.out, "plan-memory") && strstr(r.out, "schedule"), "passes list:\n%s", r.out);
  run_result_free(&r);
}

Test(cli, compile_writes_c_header_and_weights) {
  char *dir = make_temp_dir();
  run_result r = kiln("compile", "-o", dir);
  const char *files[] = {"lenet5.c", "lenet5.h", "lenet5.weights"};
  for (int i = 0; i < 3; i++) {
    char *p = path_join(dir, files[i]);
    cr_expect(access(p, R_OK) == 0, "kiln compile did not write %s", files[i]);
    free(p);
  }
  // The header promises an arena size equal to inspect's.
  char *h = path_join(dir, "lenet5.h");
  FILE *f = fopen(h, "r");
  char text[65536];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  text[n] = '\0';
  fclose(f);
  cr_expect(strstr(text, "LENET5_ARENA_BYTES") || strstr(text, "lenet5_ARENA_BYTES"),
            "no ARENA_BYTES in header");
  run_result_free(&r);
  rm_rf(dir);
  free(h);
  free(dir);
}

// kiln compare builds one binary per variant and reports each against the interpreter.
Test(cli, compare_reports_each_variant) {
  char model[512];
  sample_model(&samples[0], model, sizeof(model));
  char *args[] = {KILN_EXE, "compare",  model,     "--runs",   "3",        "--format",
                  "csv",    "--passes", "cse,dce", "--passes", "in-place", NULL};
  run_result r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "kiln compare failed: %s", r.err);
  static const char header[] =
      "variant,median_ms,speedup,binary_bytes,arena_bytes,max_abs_diff,max_ulp_diff\n";
  cr_expect(strncmp(r.out, header, strlen(header)) == 0, "bad header:\n%s", r.out);
  const char *rows[] = {"all passes,", "-cse,dce,", "-in-place,"};
  for (int i = 0; i < 3; i++) {
    const char *row = strstr(r.out, rows[i]);
    cr_assert(row, "no row %s in:\n%s", rows[i], r.out);
    // The last column is the ULP drift from the interpreter: small for every variant.
    const char *eol = strchr(row, '\n'), *last = eol;
    while (last > row && last[-1] != ',') last--;
    cr_expect_lt(strtod(last, NULL), 64, "variant %s drifts: %.*s", rows[i], (int)(eol - row), row);
  }
  run_result_free(&r);
  char *bad[] = {KILN_EXE, "compare", model, "--passes", "lower", NULL};
  r = run_cmd(bad, 60);
  cr_expect_eq(r.status, 2, "turning off a required pass must be refused: %s", r.err);
  run_result_free(&r);
}

Test(cli, disable_pass_changes_the_plan) {
  run_result with = kiln("inspect", "--json", NULL),
             without = kiln("inspect", "--json", "--disable-pass=in-place");
  json_object *a = json_tokener_parse(with.out), *b = json_tokener_parse(without.out);
  // Without in-place reuse, conv1's output and its Tanh cannot share: the arena grows.
  cr_expect_gt(get_int(b, "arena_bytes"), get_int(a, "arena_bytes"));
  json_object_put(a);
  json_object_put(b);
  run_result_free(&with);
  run_result_free(&without);
}

// ---- --freeze-input ----

// A Reshape whose target shape is a model input: only buildable with the shape frozen.
static const char *const reshape_model =
    "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"frozen_reshape\",\n"
    " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [2, 3]},\n"
    "            {\"name\": \"shape\", \"dtype\": \"i64\", \"shape\": [2]}],\n"
    " \"outputs\": [{\"name\": \"y\"}],\n"
    " \"nodes\": [{\"op\": \"Reshape\", \"name\": \"r\", \"inputs\": [\"x\", \"shape\"],\n"
    "             \"outputs\": [\"y\"]}]}\n";

// Writes a .npy of `count` elements of dtype (shape given) into dir/name; returns the path.
static char *write_array(const char *dir, const char *name, int dtype, int rank,
                         const int64_t *shape, const void *data, size_t nbytes) {
  kiln_array a = {.dtype = dtype, .rank = rank, .data = (void *)data, .nbytes = nbytes};
  memcpy(a.shape, shape, sizeof(int64_t) * (size_t)rank);
  char *path = path_join(dir, name), err[256];
  cr_assert_eq(kiln_npy_write(path, &a, err, sizeof err), KILN_OK, "%s", err);
  return path;
}

typedef struct freeze_case {
  char *dir, *model, *x, *shape;
} freeze_case;

static freeze_case freeze_setup(void) {
  freeze_case c = {.dir = make_temp_dir()};
  c.model = path_join(c.dir, "reshape.json");
  FILE *f = fopen(c.model, "w");
  cr_assert(f);
  fputs(reshape_model, f);
  fclose(f);
  static const float x[6] = {1, 2, 3, 4, 5, 6};
  static const int64_t shape[2] = {3, 2}, xs[2] = {2, 3}, ss[1] = {2};
  c.x = write_array(c.dir, "x.npy", KILN_RT_F32, 2, xs, x, sizeof x);
  c.shape = write_array(c.dir, "shape.npy", KILN_RT_I64, 1, ss, shape, sizeof shape);
  return c;
}

static void freeze_teardown(freeze_case *c) {
  rm_rf(c->dir);
  free(c->dir), free(c->model), free(c->x), free(c->shape);
}

// y must be x's six values in order, shaped (3, 2) (what numpy's reshape gives).
static void expect_reshaped(const char *y_path) {
  kiln_array y;
  char err[256];
  cr_assert_eq(kiln_npy_read(y_path, &y, err, sizeof err), KILN_OK, "%s", err);
  cr_expect(y.rank == 2 && y.shape[0] == 3 && y.shape[1] == 2, "y is not (3, 2)");
  for (int i = 0; i < 6 && y.dtype == KILN_RT_F32; i++)
    cr_expect_eq(((float *)y.data)[i], (float)(i + 1), "y[%d]", i);
  kiln_array_free(&y);
}

static char *freeze_flag(const char *name, const char *file) {
  size_t n = strlen(name) + strlen(file) + 2;
  char *s = malloc(n);
  snprintf(s, n, "%s=%s", name, file);
  return s;
}

Test(cli, freeze_input_builds_and_runs_a_reshape_with_an_input_shape) {
  freeze_case c = freeze_setup();
  char *exe = path_join(c.dir, "model"), *y = path_join(c.dir, "y.npy"),
       *flag = freeze_flag("shape", c.shape);
  char *build[] = {KILN_EXE, "build", c.model, "--freeze-input", flag, "-o", exe, NULL};
  run_result r = run_cmd(build, 120);
  cr_assert_eq(r.status, 0, "kiln build --freeze-input failed: %s", r.err);
  run_result_free(&r);
  char *bin[] = {exe, "--input", c.x, "--output", y, NULL};  // one input left: x
  r = run_cmd(bin, 60);
  cr_assert_eq(r.status, 0, "the binary failed: %s", r.err);
  run_result_free(&r);
  expect_reshaped(y);
  remove(y);
  char *interp[] = {KILN_EXE,   "run", c.model, "--freeze-input", flag, "--input", c.x,
                    "--output", y,     NULL};
  r = run_cmd(interp, 60);
  cr_assert_eq(r.status, 0, "kiln run --freeze-input failed: %s", r.err);
  run_result_free(&r);
  expect_reshaped(y);
  free(exe), free(y), free(flag);
  freeze_teardown(&c);
}

// Exit status 2 and a message naming the flag's input and file (and `want`).
static void expect_freeze_error(const freeze_case *c, const char *name, const char *file,
                                const char *want) {
  char *flag = freeze_flag(name, file);
  char *args[] = {KILN_EXE, "inspect", c->model, "--freeze-input", flag, NULL};
  run_result r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2, "--freeze-input %s: exit %d, expected 2", flag, r.status);
  cr_expect(strstr(r.err, name) && strstr(r.err, file) && strstr(r.err, want),
            "--freeze-input %s: message lacks '%s', '%s' or '%s': %s", flag, name, file, want,
            r.err);
  run_result_free(&r);
  free(flag);
}

Test(cli, freeze_input_errors_name_the_input_and_file) {
  freeze_case c = freeze_setup();
  char *missing = path_join(c.dir, "missing.npy");
  expect_freeze_error(&c, "shape", missing, "--freeze-input");
  expect_freeze_error(&c, "nope", c.shape, "no input named 'nope'");
  static const float as_float[2] = {3, 2};
  static const int64_t three[3] = {3, 2, 1}, s2[1] = {2}, s3[1] = {3};
  char *f32 = write_array(c.dir, "f32.npy", KILN_RT_F32, 1, s2, as_float, sizeof as_float);
  expect_freeze_error(&c, "shape", f32, "input 'shape' is i64 (2,)");
  char *long_shape = write_array(c.dir, "long.npy", KILN_RT_I64, 1, s3, three, sizeof three);
  expect_freeze_error(&c, "shape", long_shape, "holds i64 (3,)");
  free(missing), free(f32), free(long_shape);
  freeze_teardown(&c);
}

// `--shape` on a JSON model: LeNet-5 built for a batch of two. Row 0 is the golden image, whose
// PyTorch logits are known; row 1 is its negation, checked against the batch-1 interpreter.
static kiln_array run_lenet5(char **args, const char *y_path) {
  run_result r = run_cmd(args, 120);
  cr_assert_eq(r.status, 0, "%s %s failed: %s", args[0], args[1], r.err);
  run_result_free(&r);
  return read_npy_or_fail(y_path);
}

static void expect_row(const kiln_array *got, int row, const kiln_array *want, const char *what) {
  const float *g = (const float *)got->data + row * 10, *w = want->data;
  for (int i = 0; i < 10; i++)
    cr_expect(fabsf(g[i] - w[i]) <= 1e-5f, "%s: logit %d is %g, expected %g", what, i, g[i], w[i]);
}

Test(cli, shape_flag_compiles_a_json_model_for_another_batch) {
  char model[512], golden_x[512], golden_y[512];
  sample_model(&samples[2], model, sizeof model);
  sample_golden(&samples[2], "x", golden_x, sizeof golden_x);
  sample_golden(&samples[2], "logits", golden_y, sizeof golden_y);
  kiln_array x = read_npy_or_fail(golden_x), want0 = read_npy_or_fail(golden_y);
  char *dir = make_temp_dir();
  float both[2 * 784], neg[784];
  for (int i = 0; i < 784; i++) both[i] = ((float *)x.data)[i], both[784 + i] = neg[i] = -both[i];
  static const int64_t s2[4] = {2, 1, 28, 28}, s1[4] = {1, 1, 28, 28};
  char *x2 = write_array(dir, "x2.npy", KILN_RT_F32, 4, s2, both, sizeof both);
  char *xn = write_array(dir, "xn.npy", KILN_RT_F32, 4, s1, neg, sizeof neg);
  char *exe = path_join(dir, "lenet5"), *y = path_join(dir, "y.npy");
  char *build[] = {KILN_EXE, "build", model, "--shape", "x=2x1x28x28", "-o", exe, NULL};
  run_result r = run_cmd(build, 120);
  cr_assert_eq(r.status, 0, "kiln build --shape failed: %s", r.err);
  run_result_free(&r);
  char *bin[] = {exe, "--input", x2, "--output", y, NULL};
  kiln_array got = run_lenet5(bin, y);
  cr_assert(got.rank == 2 && got.shape[0] == 2 && got.shape[1] == 10, "logits are not (2, 10)");
  char *one[] = {KILN_EXE, "run", model, "--input", xn, "--output", y, NULL};
  kiln_array want1 = run_lenet5(one, y);
  expect_row(&got, 0, &want0, "row 0 vs PyTorch");
  expect_row(&got, 1, &want1, "row 1 vs the batch-1 interpreter");
  kiln_array_free(&got);
  char *interp[] = {KILN_EXE,  "run", model,      "--shape", "x=2x1x28x28",
                    "--input", x2,    "--output", y,         NULL};
  got = run_lenet5(interp, y);
  expect_row(&got, 1, &want1, "kiln run --shape, row 1");
  kiln_array_free(&got), kiln_array_free(&want1), kiln_array_free(&want0), kiln_array_free(&x);
  rm_rf(dir);
  free(dir), free(x2), free(xn), free(exe), free(y);
}

static void expect_shape_error(const char *flag, const char *want) {
  char model[512];
  sample_model(&samples[2], model, sizeof model);
  char *args[] = {KILN_EXE, "inspect", model, "--shape", (char *)flag, NULL};
  run_result r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2, "--shape %s: exit %d, expected 2", flag, r.status);
  cr_expect(strstr(r.err, "lenet5.json") && strstr(r.err, want),
            "--shape %s: the message lacks the file or '%s': %s", flag, want, r.err);
  run_result_free(&r);
}

Test(cli, shape_flag_errors_name_the_input) {
  expect_shape_error("y=1x1x28x28", "no input named 'y' (its inputs: 'x')");
  expect_shape_error("x=100000000x1x280x280", "absurd size");
  expect_shape_error("x=1x1x2x2", "conv");  // too small for the 5x5 kernels: the node is named
}

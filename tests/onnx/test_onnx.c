// ONNX import tests over tests/onnx/fixtures (made by tools/make_onnx_fixtures.py with PyTorch):
// small exported models must match PyTorch through the interpreter and through `kiln build`;
// `kiln import` must write a JSON model that loads back and gives identical results; bad files
// must be rejected with a clear error and exit status 2; mutated files must never crash.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/frontend.h"
#include "../../compiler/interp.h"
#include "../test_util.h"

#ifndef KILN_TEST_ONNX_DIR
#define KILN_TEST_ONNX_DIR "tests/onnx/fixtures"
#endif

TestSuite(onnx, .fini = check_leaks);

static const double ATOL = 1e-5, RTOL = 1e-4;  // vs PyTorch

static char *fixture(const char *name) { return path_join(KILN_TEST_ONNX_DIR, name); }

static kiln_graph *load_quiet(const char *path, const kiln_load_options *o) {
  kiln_diag d;
  kiln_diag_init(&d, path);
  d.out = fopen("/dev/null", "w");
  kiln_graph *g = kiln_load_model_ex(path, o, &d);
  fclose(d.out);
  return g;
}

// Interprets the single-input, single-output model at path on x; returns y (caller frees).
static kiln_array interpret(const char *path, const kiln_array *x) {
  kiln_graph *g = load_quiet(path, NULL);
  cr_assert(g, "%s does not load", path);
  cr_assert_eq(g->n_inputs, 1);
  cr_assert_eq(g->n_outputs, 1);
  kiln_array out[1] = {{0}};
  kiln_diag d;
  kiln_diag_init(&d, path);
  cr_assert(kiln_interp_run(g, x, out, &d), "%s: the interpreter failed", path);
  kiln_graph_free(g);
  return out[0];
}

static void expect_close(const kiln_array *got, const char *golden, const char *what) {
  char *p = fixture(golden), why[512];
  kiln_array want = read_npy_or_fail(p);
  cr_expect(arrays_close(got, &want, ATOL, RTOL, why, sizeof why), "%s vs PyTorch: %s", what, why);
  kiln_array_free(&want);
  free(p);
}

// `kiln build MODEL -o DIR/bin [extra]`, runs it on x_npy, returns the output.
static kiln_array build_and_run(const char *model, const char *x_npy, const char *dir,
                                const char *extra) {
  char *exe = path_join(dir, "bin"), *y = path_join(dir, "y.npy");
  char *build[] = {KILN_EXE, "build", (char *)model, "-o", exe, (char *)extra, NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build %s failed (%d): %s", model, r.status, r.err);
  run_result_free(&r);
  char *run[] = {exe, "--input", (char *)x_npy, "--output", y, NULL};
  r = run_cmd(run, 120);
  cr_assert_eq(r.status, 0, "%s failed (%d): %s", exe, r.status, r.err);
  run_result_free(&r);
  kiln_array out = read_npy_or_fail(y);
  free(exe);
  free(y);
  return out;
}

static void check_model(const char *model_name, const char *x_name, const char *y_name,
                        const char *extra) {
  char *model = fixture(model_name), *x_path = fixture(x_name), *dir = make_temp_dir();
  kiln_array x = read_npy_or_fail(x_path);
  if (!extra) {
    kiln_array y = interpret(model, &x);
    expect_close(&y, y_name, model_name);
    kiln_array_free(&y);
  }
  kiln_array yb = build_and_run(model, x_path, dir, extra);
  expect_close(&yb, y_name, model_name);
  kiln_array_free(&yb);
  kiln_array_free(&x);
  rm_rf(dir);
  free(dir);
  free(x_path);
  free(model);
}

Test(onnx, opset13_conv_net_matches_pytorch) {
  check_model("tiny_conv.onnx", "x.npy", "y.npy", NULL);
}

Test(onnx, opset7_conv_net_matches_pytorch) {
  check_model("tiny_conv_op7.onnx", "x.npy", "y.npy", NULL);
}

Test(onnx, external_data_and_constant_node) {
  check_model("external.onnx", "ext_x.npy", "ext_y.npy", NULL);
}

Test(onnx, dynamic_batch_fixed_with_shape_flag) {
  check_model("tiny_conv_dyn.onnx", "x.npy", "y.npy", "--shape=x=2x3x8x8");
  char *model = fixture("tiny_conv_dyn.onnx");
  kiln_input_shape s = {.name = "x", .shape = {.rank = 4, .dim = {2, 3, 8, 8}}};
  kiln_load_options o = {.shapes = &s, .n_shapes = 1};
  kiln_graph *g = load_quiet(model, &o);
  cr_expect(g, "--shape x=2x3x8x8 should fix the dynamic batch");
  kiln_graph_free(g);
  s.name = "nope";
  cr_expect_null(load_quiet(model, &o), "--shape for an unknown input must be an error");
  free(model);
}

static bool same_bytes(const kiln_array *a, const kiln_array *b) {
  return a->dtype == b->dtype && a->nbytes == b->nbytes && memcmp(a->data, b->data, a->nbytes) == 0;
}

// `kiln import` writes JSON + safetensors; loading them back gives the same params and the same
// results, bit for bit, as loading the .onnx file.
Test(onnx, import_round_trip) {
  char *model = fixture("tiny_conv.onnx"), *dir = make_temp_dir();
  char *json = path_join(dir, "tiny.json"), *st = path_join(dir, "tiny.safetensors");
  char *cmd[] = {KILN_EXE, "import", model, "-o", json, NULL};
  run_result r = run_cmd(cmd, 120);
  cr_assert_eq(r.status, 0, "kiln import failed (%d): %s", r.status, r.err);
  run_result_free(&r);
  FILE *f = fopen(st, "rb");
  cr_assert(f, "kiln import did not write %s", st);
  fclose(f);
  kiln_graph *a = load_quiet(model, NULL), *b = load_quiet(json, NULL);
  cr_assert(a && b, "the imported JSON does not load back");
  cr_assert_eq(a->n_tensors, b->n_tensors);
  for (int i = 0; i < a->n_tensors; i++) {
    const kiln_tensor *ta = &a->tensors[i], *tb = &b->tensors[i];
    cr_expect_str_eq(ta->name, tb->name);
    cr_expect(kiln_shape_equal(&ta->shape, &tb->shape) && ta->dtype == tb->dtype, "%s", ta->name);
    if (ta->kind == KILN_TENSOR_PARAM) {
      size_t bytes = (size_t)kiln_shape_numel(&ta->shape) * kiln_dtype_size(ta->dtype);
      cr_expect(tb->data && memcmp(ta->data, tb->data, bytes) == 0, "param %s differs", ta->name);
    }
  }
  kiln_graph_free(a);
  kiln_graph_free(b);
  char *x = fixture("x.npy");
  kiln_array xa = read_npy_or_fail(x);
  kiln_array ya = interpret(model, &xa), yb = interpret(json, &xa);
  cr_expect(same_bytes(&ya, &yb), "interpreter: .onnx and imported .json differ");
  kiln_array ba = build_and_run(model, x, dir, NULL), bb = build_and_run(json, x, dir, NULL);
  cr_expect(same_bytes(&ba, &bb), "generated code: .onnx and imported .json differ");
  kiln_array *arrays[] = {&xa, &ya, &yb, &ba, &bb};
  for (int i = 0; i < 5; i++) kiln_array_free(arrays[i]);
  rm_rf(dir);
  free(x), free(json), free(st), free(dir), free(model);
}

// Bad files: exit status 2 and a message naming the problem; never a crash.
Test(onnx, bad_files_are_rejected_clearly) {
  static const struct {
    const char *file, *expect[3];
  } cases[] = {
      {"truncated.onnx", {"not a valid ONNX model", "truncated"}},
      {"not_protobuf.onnx", {"not a valid ONNX model"}},
      {"empty.onnx", {"the model has no graph"}},
      {"wrong_wire_type.onnx", {"not a valid ONNX model"}},
      {"wrong_attr_type.onnx", {"conv1", "kernel_shape", "expects INTS, got FLOAT"}},
      {"missing_initializer.onnx", {"conv1", "W_missing"}},
      {"unknown_ops.onnx",
       {"unsupported ops (3)", "FooOp (node 'foo1'), BarOp (node 'bar1')", "com.example.Baz"}},
      {"float16.onnx", {"W_half", "FLOAT16"}},
      {"escape.onnx", {"external data location", "inside the model's directory"}},
      {"bad_raw.onnx", {"initializer[0] (W)", "raw_data has 212 bytes"}},
      {"tiny_conv_dyn.onnx", {"dynamic shapes (1)", "input 'x' dimension 0 ('N')", "--shape"}},
  };
  char *dir = make_temp_dir(), *exe = path_join(dir, "bin");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *model = fixture(cases[i].file);
    char *cmd[] = {KILN_EXE, "build", model, "-o", exe, NULL};
    run_result r = run_cmd(cmd, 120);
    cr_expect_eq(r.status, 2, "%s: exit status %d, expected 2: %s", cases[i].file, r.status, r.err);
    cr_expect(strstr(r.err, cases[i].file), "%s: the message does not name the file: %s",
              cases[i].file, r.err);
    for (int k = 0; k < 3 && cases[i].expect[k]; k++)
      cr_expect(strstr(r.err, cases[i].expect[k]), "%s: expected '%s' in: %s", cases[i].file,
                cases[i].expect[k], r.err);
    run_result_free(&r);
    free(model);
  }
  rm_rf(dir);
  free(exe);
  free(dir);
}

// Mutated copies of a good model (bytes flipped, truncated, spliced) must load or be rejected,
// never crash (the ASan build runs this too).
Test(onnx, fuzzed_files_never_crash, .timeout = 300) {
  char *model = fixture("tiny_conv.onnx"), *dir = make_temp_dir();
  char *path = path_join(dir, "fuzz.onnx");
  FILE *f = fopen(model, "rb");
  cr_assert(f);
  unsigned char good[1 << 16];
  size_t n = fread(good, 1, sizeof good, f);
  fclose(f);
  cr_assert_gt(n, 100);
  uint64_t s = 0x9e3779b97f4a7c15ULL;
  int loaded = 0;
  for (int iter = 0; iter < 400; iter++) {
    unsigned char buf[1 << 16];
    memcpy(buf, good, n);
    size_t len = n;
    int edits = 1 + iter % 8;
    for (int e = 0; e < edits; e++) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      size_t at = (size_t)(s >> 33) % len;
      switch ((s >> 20) % 4) {
        case 0: buf[at] ^= (unsigned char)(1u << ((s >> 8) % 8)); break;
        case 1: buf[at] = (unsigned char)(s >> 40); break;
        case 2: len = at + 1; break;
        default: buf[at] = 0xff; break;
      }
    }
    f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    kiln_graph *g = load_quiet(path, NULL);
    loaded += g != NULL;
    kiln_graph_free(g);
  }
  cr_log_info("%d of 400 mutated models still loaded", loaded);
  rm_rf(dir);
  free(path);
  free(dir);
  free(model);
}

// --freeze-input on an ONNX model: the input becomes a constant param, so the model has no
// inputs left and computes PyTorch's y from the frozen x; bad flags name the input and file.
static kiln_graph *load_frozen(const char *name, const char *file, char **msg) {
  char *model = fixture("tiny_conv.onnx");
  kiln_frozen_input f = {.name = name, .file = file};
  kiln_load_options o = {.frozen = &f, .n_frozen = 1};
  size_t len = 0;
  kiln_diag d;
  kiln_diag_init(&d, model);
  d.out = open_memstream(msg, &len);
  kiln_graph *g = kiln_load_model_ex(model, &o, &d);
  fclose(d.out);
  free(model);
  return g;
}

Test(onnx, freeze_input_makes_the_input_a_constant) {
  char *x = fixture("x.npy"), *y = fixture("y.npy"), *msg = NULL;
  kiln_graph *g = load_frozen("x", x, &msg);
  cr_assert(g, "tiny_conv.onnx --freeze-input x: %s", msg);
  cr_expect_eq(g->n_inputs, 0);
  kiln_array out[1] = {{0}};
  kiln_diag d;
  kiln_diag_init(&d, "tiny_conv.onnx");
  cr_assert(kiln_interp_run(g, NULL, out, &d), "the interpreter failed");
  expect_close(&out[0], "y.npy", "tiny_conv with x frozen");
  kiln_array_free(&out[0]);
  kiln_graph_free(g);
  free(msg);
  g = load_frozen("nope", x, &msg);
  cr_expect(!g && strstr(msg, "--freeze-input nope=") && strstr(msg, "no input named 'nope'"),
            "unknown input: %s", msg);
  kiln_graph_free(g);
  free(msg);
  g = load_frozen("x", y, &msg);  // y's shape is not x's
  cr_expect(!g && strstr(msg, "--freeze-input x=") && strstr(msg, "but input 'x' is f32"),
            "wrong shape: %s", msg);
  kiln_graph_free(g);
  free(msg);
  free(x);
  free(y);
}

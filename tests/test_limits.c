// Resource limits (ir/resource_limits.h, docs/testing.md): models beyond a limit are refused
// with a message naming the limit, before anything is allocated; limits come from --limits and
// KILN_LIMITS; each boundary is checked on both sides with sizes worked out by hand from LeNet-5.
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sample_util.h"

TestSuite(limits, .fini = check_leaks);

// LeNet-5: 12 nodes; its largest tensor is fc1's weight, 120 x 400 f32 = 192000 bytes
// (187.5 KiB); params alone are 61706 f32 = 246824 bytes.
enum { LENET5_NODES = 12, FC1_BYTES = 120 * 400 * 4 };

static run_result inspect(const char *model, const char *limits) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", KILN_SOURCE_DIR, model);
  char *args[] = {KILN_EXE, "inspect", path, limits ? "--limits" : NULL, (char *)limits, NULL};
  return run_cmd(args, 60);
}

static void expect_refused(run_result r, const char *message) {
  cr_expect_eq(r.status, 2, "expected exit 2, got %d; stderr:\n%s", r.status, r.err);
  cr_expect(strstr(r.err, message), "expected '%s' in stderr:\n%s", message, r.err);
  run_result_free(&r);
}

static void expect_accepted(run_result r) {
  cr_expect_eq(r.status, 0, "expected exit 0, got %d; stderr:\n%s", r.status, r.err);
  run_result_free(&r);
}

// KEY=at passes; KEY=at-1 is refused with message.
static void check_boundary(const char *model, const char *key, int64_t at, const char *message) {
  char ok[64], refused[64];
  snprintf(ok, sizeof ok, "%s=%lld", key, (long long)at);
  snprintf(refused, sizeof refused, "%s=%lld", key, (long long)at - 1);
  expect_accepted(inspect(model, ok));
  expect_refused(inspect(model, refused), message);
}

Test(limits, node_count_boundary) {
  check_boundary("samples/lenet5.json", "nodes", LENET5_NODES,
                 "nodes: error: 12 nodes; the limit is 11 (KILN_LIMITS nodes)");
}

Test(limits, declared_tensor_boundary) {
  check_boundary("samples/lenet5.json", "tensor-bytes", FC1_BYTES,
                 "shape (120, 400) is more than 187.5 KiB of data (KILN_LIMITS tensor-bytes)");
}

Test(limits, total_bytes_counts_params_first) {
  // 246824 bytes of params alone pass 240 KiB (245760) at the first node.
  expect_refused(inspect("samples/lenet5.json", "total-bytes=240K"),
                 "the graph's tensors pass 240 KiB in all at output");
  expect_accepted(inspect("samples/lenet5.json", "total-bytes=1M"));
}

Test(limits, inferred_tensor_refused_before_folding) {
  // ConstantOfShape to (100000, 100000, 100) f32: 4e12 bytes, far past the 16 GiB default.
  expect_refused(inspect("tests/bad/absurd_inferred.json", NULL),
                 "nodes[0] (huge): error: output 'c' would be 3.6 TiB; the limit is 16 GiB");
}

Test(limits, model_file_size_json_and_onnx) {
  expect_refused(inspect("samples/mlp.json", "model-bytes=1K"),
                 "is 1250 bytes; the limit is 1 KiB (KILN_LIMITS model-bytes)");
  expect_refused(inspect("tests/onnx/fixtures/tiny_conv.onnx", "model-bytes=2K"), "is 2468 bytes");
  expect_accepted(inspect("tests/onnx/fixtures/tiny_conv.onnx", "model-bytes=3K"));
}

Test(limits, environment_variable) {
  setenv("KILN_LIMITS", "nodes=4", 1);
  run_result r = inspect("samples/mlp.json", NULL);
  unsetenv("KILN_LIMITS");
  expect_refused(r, "5 nodes; the limit is 4");
}

Test(limits, malformed_specs_are_refused) {
  expect_refused(inspect("samples/mlp.json", "nodes=0"), "expected a whole number >= 1");
  expect_refused(inspect("samples/mlp.json", "nodes=12Q"), "expected a whole number >= 1");
  expect_refused(inspect("samples/mlp.json", "nodes=99999999999T"), "expected a whole number >= 1");
  expect_refused(inspect("samples/mlp.json", "arena=1G"), "KEY one of model-bytes");
}

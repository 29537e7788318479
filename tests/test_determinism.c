// Determinism (docs/testing.md): the same model, inputs, seed and thread count give bit-identical
// results. Inference is also identical across thread counts (parallel loops split outputs; every
// sum runs serially in one fixed order); training steps are compared at a fixed thread count.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample_util.h"

TestSuite(determinism, .fini = check_leaks);

static void expect_same_bytes(const char *a, const char *b) {
  cr_expect(files_equal(a, b), "%s and %s differ", a, b);
}

static void run_ok(char *const argv[], int timeout_s) {
  run_result r = run_cmd(argv, timeout_s);
  cr_assert_eq(r.status, 0, "%s failed (%d):\n%s", argv[0], r.status, r.err);
  run_result_free(&r);
}

static char *build(const char *dir, const char *model, const char *name, bool train) {
  char src[512];
  snprintf(src, sizeof src, "%s/samples/%s.json", KILN_SOURCE_DIR, model);
  char *exe = path_join(dir, name);
  char *with_train[] = {KILN_EXE, "build", "--train", src, "-o", exe, NULL};
  char *plain[] = {KILN_EXE, "build", src, "-o", exe, NULL};
  run_ok(train ? with_train : plain, 300);
  return exe;
}

Test(determinism, inference_is_bit_identical_across_runs_and_thread_counts, .timeout = 300) {
  char *dir = make_temp_dir();
  char *exe = build(dir, "lenet5", "lenet5", false);
  char x[512];
  snprintf(x, sizeof x, "%s/lenet5/x.npy", KILN_TEST_GOLDENS_DIR);
  const char *threads[] = {"1", "1", "2", "2"};
  char *outs[4];
  for (int i = 0; i < 4; i++) {
    char name[32], arg[600];
    snprintf(name, sizeof name, "y%d.npy", i);
    outs[i] = path_join(dir, name);
    snprintf(arg, sizeof arg, "logits=%s", outs[i]);
    char *argv[] = {exe, "--input", x, "--output", arg, "--threads", (char *)threads[i], NULL};
    run_ok(argv, 60);
  }
  for (int i = 1; i < 4; i++) expect_same_bytes(outs[0], outs[i]);
  for (int i = 0; i < 4; i++) free(outs[i]);
  free(exe);
  rm_rf(dir);
  free(dir);
}

// 15 Adam steps (batch 64) of LeNet-5 on Fashion-MNIST (shuffled by the seed) twice: the
// checkpoints (weights, optimizer state, step counter) are the same bytes.
Test(determinism, training_is_bit_identical_for_a_seed, .timeout = 600) {
  char *dir = make_temp_dir();
  char *exe = build(dir, "lenet5", "lenet5-train", true);
  char *ckpt[2] = {path_join(dir, "a.safetensors"), path_join(dir, "b.safetensors")};
  for (int i = 0; i < 2; i++) {
    char *argv[] = {
        exe,      "--train", "fashion-mnist:train", "--max-steps", "15",     "--batch", "64",
        "--seed", "11",      "--threads",           "2",           "--save", ckpt[i],   NULL};
    run_ok(argv, 300);
  }
  expect_same_bytes(ckpt[0], ckpt[1]);
  free(ckpt[0]);
  free(ckpt[1]);
  free(exe);
  rm_rf(dir);
  free(dir);
}

// Bad input must fail cleanly: a clear message naming the file and the place, exit status 2, no
// crash, no hang, no half-written output. Under the ASan+UBSan build the same runs also prove
// there is no leak or undefined behaviour on these paths (a report changes the exit status).
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sample_util.h"

TestSuite(errors, .fini = check_leaks);

static void expect_clean_failure(const run_result *r, const char *what, const char *needle) {
  cr_expect_eq(r->status, 2, "%s: exit status %d, expected 2; stderr:\n%s", what, r->status,
               r->err);
  cr_expect(strstr(r->err, needle), "%s: stderr lacks \"%s\":\n%s", what, needle, r->err);
  cr_expect(!strstr(r->err, "Sanitizer") && !strstr(r->err, "runtime error"),
            "%s: sanitizer report:\n%s", what, r->err);
}

Test(errors, each_bad_model_is_reported) {
  char *list = path_join(KILN_TEST_BAD_DIR, "expected.txt");
  FILE *f = fopen(list, "r");
  cr_assert(f, "cannot open %s", list);
  char line[1024];
  int cases = 0;
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!line[0] || line[0] == '#') continue;
    char *space = strchr(line, ' ');
    cr_assert(space, "malformed line in %s: %s", list, line);
    *space = '\0';
    char *model = path_join(KILN_TEST_BAD_DIR, line);
    char *args[] = {KILN_EXE, "inspect", model, NULL};
    run_result r = run_cmd(args, 60);
    expect_clean_failure(&r, line, space + 1);
    cr_expect(strstr(r.err, line), "%s: the message does not name the file:\n%s", line, r.err);
    run_result_free(&r);
    free(model);
    cases++;
  }
  fclose(f);
  free(list);
  cr_expect_gt(cases, 15, "expected one bad model per error class, found %d", cases);
}

// ---- a built binary fed bad files ----

typedef struct fixture {
  char *dir, *exe;
} fixture;

static fixture build_lenet5(void) {
  fixture fx = {make_temp_dir(), NULL};
  fx.exe = path_join(fx.dir, "lenet5");
  char model[512];
  sample_model(&samples[2], model, sizeof(model));
  char *args[] = {KILN_EXE, "build", model, "-o", fx.exe, NULL};
  run_result r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "kiln build failed: %s", r.err);
  run_result_free(&r);
  return fx;
}

static void free_fixture(fixture *fx) {
  rm_rf(fx->dir);
  free(fx->dir);
  free(fx->exe);
}

static char *write_array(const fixture *fx, const char *name, int dtype, int rank,
                         const int64_t *shape) {
  kiln_array a = {.dtype = dtype, .rank = rank};
  memcpy(a.shape, shape, sizeof(int64_t) * (size_t)rank);
  a.nbytes = (size_t)kiln_array_numel(&a) * kiln_rt_dtype_size(dtype);
  a.data = calloc(1, a.nbytes);
  char *path = path_join(fx->dir, name), err[512];
  cr_assert_eq(kiln_npy_write(path, &a, err, sizeof(err)), KILN_OK, "%s", err);
  free(a.data);
  return path;
}

static char *write_text(const fixture *fx, const char *name, const char *text, size_t n) {
  char *path = path_join(fx->dir, name);
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  fwrite(text, 1, n, f);
  fclose(f);
  return path;
}

static run_result run_binary(const fixture *fx, const char *input, const char *output) {
  char *args[] = {fx->exe, "--input", (char *)input, "--output", (char *)output, NULL};
  return run_cmd(args, 60);
}

Test(errors, binary_rejects_bad_inputs, .timeout = 300) {
  fixture fx = build_lenet5();
  char *out = path_join(fx.dir, "y.npy");
  const int64_t good[] = {1, 1, 28, 28}, bad[] = {1, 1, 27, 28}, batch_bad[] = {3, 1, 28, 27};
  char *wrong_dtype = write_array(&fx, "f64.npy", KILN_RT_F64, 4, good);
  char *wrong_shape = write_array(&fx, "shape.npy", KILN_RT_F32, 4, bad);
  char *wrong_batch = write_array(&fx, "batch.npy", KILN_RT_F32, 4, batch_bad);
  char *not_npy = write_text(&fx, "text.npy", "hello, world\n", 13);
  char *good_npy = write_array(&fx, "good.npy", KILN_RT_F32, 4, good);
  struct {
    const char *input, *needle;
  } cases[] = {
      {"/nonexistent/x.npy", "/nonexistent/x.npy"},
      {wrong_dtype, "dtype"},
      {wrong_shape, "shape"},
      {wrong_batch, "shape"},
      {not_npy, "text.npy"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_result r = run_binary(&fx, cases[i].input, out);
    expect_clean_failure(&r, cases[i].input, cases[i].needle);
    cr_expect(access(out, F_OK) != 0, "%s: an output file was written despite the error",
              cases[i].input);
    run_result_free(&r);
  }
  // A truncated copy of a valid file.
  FILE *f = fopen(good_npy, "rb");
  char buf[4096];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  char *truncated = write_text(&fx, "truncated.npy", buf, n / 2);
  run_result r = run_binary(&fx, truncated, out);
  expect_clean_failure(&r, "truncated.npy", "truncated.npy");
  run_result_free(&r);
  // An output in a directory that does not exist: error, nothing half-written.
  r = run_binary(&fx, good_npy, "/nonexistent/dir/y.npy");
  expect_clean_failure(&r, "unwritable output", "/nonexistent/dir/y.npy");
  run_result_free(&r);
  free(wrong_dtype), free(wrong_shape), free(wrong_batch), free(not_npy), free(good_npy),
      free(truncated);
  free(out);
  free_fixture(&fx);
}

Test(errors, binary_rejects_foreign_weights, .timeout = 300) {
  fixture fx = build_lenet5();
  char *weights = path_join(fx.dir, "lenet5.weights");
  // Flip one byte of the payload: the checksum must catch it.
  FILE *f = fopen(weights, "r+b");
  cr_assert(f, "no weights file beside the binary");
  fseek(f, KILN_WEIGHTS_HEADER_BYTES + 100, SEEK_SET);
  int c = fgetc(f);
  fseek(f, KILN_WEIGHTS_HEADER_BYTES + 100, SEEK_SET);
  fputc(c ^ 0x40, f);
  fclose(f);
  const int64_t good[] = {1, 1, 28, 28};
  char *in = write_array(&fx, "x.npy", KILN_RT_F32, 4, good);
  char *out = path_join(fx.dir, "y.npy");
  run_result r = run_binary(&fx, in, out);
  expect_clean_failure(&r, "corrupt weights", "checksum");
  run_result_free(&r);
  truncate(weights, 1000);
  r = run_binary(&fx, in, out);
  expect_clean_failure(&r, "truncated weights", "lenet5.weights");
  run_result_free(&r);
  free(in), free(out), free(weights);
  free_fixture(&fx);
}

Test(errors, cli_rejects_bad_flags) {
  char model[512];
  sample_model(&samples[0], model, sizeof(model));
  struct {
    char *args[8];
    const char *needle;
  } cases[] = {
      {{KILN_EXE, "frobnicate", model, NULL}, "unknown command"},
      {{KILN_EXE, "inspect", model, "--bogus", NULL}, "--bogus"},
      {{KILN_EXE, "inspect", model, "--after", "no-such-pass", NULL}, "no-such-pass"},
      {{KILN_EXE, "build", model, "-o", "/tmp/kiln-never", "--target", "vax", NULL}, "vax"},
      {{KILN_EXE, "compile", model, NULL}, "-o"},
      {{KILN_EXE, "inspect", "/nonexistent/model.json", NULL}, "/nonexistent/model.json"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_result r = run_cmd(cases[i].args, 60);
    expect_clean_failure(&r, cases[i].args[1], cases[i].needle);
    run_result_free(&r);
  }
}

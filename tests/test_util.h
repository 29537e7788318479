// Helpers shared by the Criterion tests: running commands, temporary directories, comparing arrays
// with a tolerance and reading golden files.
#ifndef KILN_TEST_UTIL_H
#define KILN_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "../runtime/kiln_runtime.h"

#ifndef KILN_TEST_DATA_DIR
#define KILN_TEST_DATA_DIR "tests/data"
#endif
#ifndef KILN_TEST_GOLDENS_DIR
#define KILN_TEST_GOLDENS_DIR "tests/goldens"
#endif
#ifndef KILN_TEST_BAD_DIR
#define KILN_TEST_BAD_DIR "tests/bad"
#endif
#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif
#ifndef KILN_EXE
#define KILN_EXE "kiln"
#endif

typedef struct run_result {
  int status;  // exit code, or 128 + signal
  char *out;   // captured stdout (NUL-terminated, owned)
  char *err;   // captured stderr
} run_result;

// Runs argv (NULL-terminated) without a shell, capturing stdout and stderr; kills it after
// timeout_s seconds (status 128 + SIGKILL).
run_result run_cmd(char *const argv[], int timeout_s);
void run_result_free(run_result *r);

// A fresh directory under $TMPDIR; rm_rf removes it.
char *make_temp_dir(void);
void rm_rf(const char *path);
char *path_join(const char *a, const char *b);  // malloc'd "a/b"
// True if both files can be read and hold the same bytes.
bool files_equal(const char *a, const char *b);

// a (got) against b (expected): false if dtypes or shapes differ or any element is outside
// |a - b| <= atol + rtol*|b|, with the worst element described in why[whylen]. An infinite b
// must be matched by the same infinity exactly; NaN anywhere is a failure (tests/array_compare.h).
bool arrays_close(const kiln_array *a, const kiln_array *b, double atol, double rtol, char *why,
                  size_t whylen);
// The same, but a NaN in b is matched by a NaN in a (for references that legitimately hold NaN).
bool arrays_close_nan_equal(const kiln_array *a, const kiln_array *b, double atol, double rtol,
                            char *why, size_t whylen);
// Under AddressSanitizer, aborts (so the test fails) if the test leaked: Criterion ignores leaks
// reported when a worker exits. Use as every suite's .fini.
void check_leaks(void);

// Reads an .npy or aborts the test with a message.
kiln_array read_npy_or_fail(const char *path);

// Loads a model (JSON or ONNX) or fails the test naming it.
struct kiln_graph *model_or_fail(const char *path);

// Loads `model` with its training section and builds the training graph, or fails the test.
struct kiln_graph *training_graph_or_fail(const char *model);
// A safetensors entry (the expected values) against `got`, raw data of its dtype and shape:
// arrays_close with the entry as the reference.
bool st_entry_close(const kiln_st_entry *want, const void *got, double atol, double rtol, char *why,
                    size_t whylen);

// The mean of the per-step losses (third CSV column) of a trainer's --log in steps [from, to);
// aborts the test when the log is missing or shorter.
double mean_logged_loss(const char *log, int from, int to);

#endif

// Fuzz target: the standalone binary's driver (runtime/main.c: argument parsing, binding .npy
// files to inputs and outputs, batch chunking), on samples/xor_mlp.json compiled with its weights
// embedded. Input layout: command-line arguments separated by '\n', then a NUL byte, then the
// bytes of a file `in.npy` in the scratch directory (the working directory) that the arguments
// may name.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "xor_mlp.h"

enum { MAX_ARGS = 32 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int in_dir;
  if (!in_dir) in_dir = chdir(fuzz_dir()) == 0 ? 1 : (abort(), 0);
  const uint8_t *nul = memchr(data, 0, size);
  size_t args_len = nul ? (size_t)(nul - data) : size;
  if (nul) fuzz_file("in.npy", nul + 1, size - args_len - 1);
  char *text = malloc(args_len + 1);
  memcpy(text, data, args_len);
  text[args_len] = 0;
  char *argv[MAX_ARGS + 2] = {"xor_mlp"};
  int argc = 1;
  for (char *s = text, *next; s && argc <= MAX_ARGS; s = next) {
    next = strchr(s, '\n');
    if (next) *next++ = 0;
    argv[argc++] = s;
  }
  argv[argc] = NULL;
  // `--bench N` runs the model N times, as asked: millions take seconds without being a bug
  // (a fuzzer finding: --bench 5077777). Such inputs are passed over.
  for (int i = 1; i < argc; i++) {
    const char *count = strncmp(argv[i], "--bench=", 8) == 0              ? argv[i] + 8
                        : strcmp(argv[i], "--bench") == 0 && i + 1 < argc ? argv[i + 1]
                                                                          : "0";
    if (atol(count) > 1000) {
      free(text);
      return 0;
    }
  }
  // stdout/stderr chatter is the driver's normal behaviour; libFuzzer's -close_fd_mask hides it.
  kiln_main(&xor_mlp_desc, argc, argv);
  free(text);
  return 0;
}

// Fuzz target: the .npy reader (runtime/npy.c). A file that reads must write back and read again
// to the same array.
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  kiln_array a = {0}, b = {0};
  if (kiln_npy_read(fuzz_file("in.npy", data, size), &a, err, sizeof(err)) != KILN_OK) return 0;
  const char *copy = fuzz_file("copy.npy", "", 0);
  if (kiln_npy_write(copy, &a, err, sizeof(err)) != KILN_OK) abort();
  if (kiln_npy_read(copy, &b, err, sizeof(err)) != KILN_OK) abort();
  size_t bytes = (size_t)kiln_array_numel(&a) * kiln_rt_dtype_size(a.dtype);
  if (a.rank != b.rank || a.dtype != b.dtype || memcmp(a.data, b.data, bytes) != 0) abort();
  kiln_array_free(&a);
  kiln_array_free(&b);
  return 0;
}

// Fuzz target: the .safetensors reader (runtime/safetensors.c); every entry it returns must lie
// inside the file's data section and be findable by name.
#include <stdlib.h>

#include "../../runtime/kiln_runtime.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  kiln_safetensors st = {0};
  if (kiln_safetensors_read(fuzz_file("in.safetensors", data, size), &st, err, sizeof(err)) !=
      KILN_OK)
    return 0;
  for (int i = 0; i < st.count; i++)
    if (kiln_safetensors_find(&st, st.entries[i].name) == NULL) abort();
  kiln_safetensors_free(&st);
  return 0;
}

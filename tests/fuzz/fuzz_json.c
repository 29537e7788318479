// Fuzz target: the JSON model loader (compiler/frontend.c), through shape inference and the whole
// pass pipeline down to loop IR for models that load.
#include "../../compiler/frontend.h"
#include "../../compiler/passes/pipeline.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file("model.json", data, size);
  kiln_diag d;
  kiln_diag_init(&d, path);
  d.out = fuzz_devnull();
  kiln_graph *g = kiln_load_model(path, &d);
  if (!g) return 0;
  kiln_compilation c;
  kiln_compilation_init(&c, g);
  kiln_compile_pipeline(&c, &d);
  kiln_compilation_free(&c);
  return 0;
}

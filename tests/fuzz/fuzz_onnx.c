// Fuzz target: the ONNX importer (compiler/onnx) and, for files that import, the JSON frontend's
// checks and shape inference on the result.
#include "../../compiler/frontend.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file("model.onnx", data, size);
  kiln_diag d;
  kiln_diag_init(&d, path);
  d.out = fuzz_devnull();
  kiln_graph *g = kiln_load_model_ex(path, NULL, &d);
  if (g) kiln_graph_free(g);
  return 0;
}

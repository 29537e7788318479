// ONNX import (docs/onnx.md): an .onnx file → a Kiln JSON model document (docs/model-format.md)
// plus its weights in memory. The JSON frontend then checks and builds the graph exactly as it
// does for a .json file, so both formats get the same checks and the same shape inference.
//
// The ONNX protobuf schema is parsed with protoc-c bindings generated at build time from Debian's
// onnx.proto (compiler/onnx/meson.build).
#ifndef KILN_ONNX_IMPORT_H
#define KILN_ONNX_IMPORT_H

#include <json-c/json.h>
#include <stdbool.h>

#include "../../ir/diag.h"
#include "../../runtime/kiln_runtime.h"
#include "../frontend.h"

// An imported model. `weights` is a view of names[]/arrays[] (its entries point into them) that
// the frontend reads instead of a .safetensors file.
typedef struct kiln_onnx_model {
  json_object *json;  // a kiln-model v1 document; params have no `init` and no `weights` file
  int count, cap;     // params
  char **names;
  kiln_array *arrays;
  kiln_safetensors weights;
} kiln_onnx_model;

// Reads and converts path. Input shapes that are dynamic in the file (or any others) come from
// shapes[n_shapes]. Reports every problem through d (all unsupported ops, opsets, dtypes and
// dynamic dimensions in one message); false if there was any.
bool kiln_onnx_import(const char *path, const kiln_input_shape *shapes, int n_shapes, kiln_diag *d,
                      kiln_onnx_model *out);
// kiln_onnx_import with the load options' --shape and --freeze-input flags (o may be NULL).
bool kiln_onnx_import_ex(const char *path, const kiln_load_options *o, kiln_diag *d,
                         kiln_onnx_model *out);
void kiln_onnx_model_free(kiln_onnx_model *m);

// `kiln import`: writes m as a JSON model at json_path (which must end in ".json") and its params
// as NAME.safetensors beside it (NAME = json_path without ".json"; the JSON's `weights` names
// it). Both go through a temporary file renamed into place. Errors name the file.
bool kiln_onnx_write(kiln_onnx_model *m, const char *json_path, kiln_diag *d);

// Reads a serialized TensorProto (the input_N.pb / output_N.pb files of the ONNX backend tests)
// into an owned array; *name (may be NULL) receives its name, malloc'd ("" if none). Returns a
// kiln_status; err names the file and the problem.
int kiln_onnx_read_tensor_file(const char *path, kiln_array *out, char **name, char *err,
                               size_t errlen);

#endif

// Shared between the ONNX importer's files only: TensorProto decoding and dtype mapping.
#ifndef KILN_ONNX_INTERNAL_H
#define KILN_ONNX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "../../ir/dtype.h"
#include "../../ir/resource_limits.h"
#include "../../runtime/kiln_runtime.h"
#include "onnx/onnx.pb-c.h"

// Largest .onnx or external data file read: KILN_LIMITS model-bytes (ir/resource_limits.h; the
// default is protobuf's own limit, 2 GiB).
#define KILN_ONNX_MAX_FILE_BYTES ((size_t)kiln_limits_get()->model_bytes)

// ONNX TensorProto.DataType → Kiln dtype; false for the types Kiln has no dtype for.
bool kiln_onnx_dtype(int onnx_type, kiln_dtype *out);
// "FLOAT16", "STRING", ... for messages; "type 42" for unknown numbers (buf holds 32 bytes).
const char *kiln_onnx_dtype_name(int onnx_type, char *buf);

typedef enum {
  KILN_ONNX_TENSOR_OK,
  KILN_ONNX_TENSOR_DTYPE,  // a valid tensor of a dtype Kiln does not support
  KILN_ONNX_TENSOR_BAD,    // malformed: sizes, data fields, external data
} kiln_onnx_tensor_status;

// Decodes t into an owned array (64-byte aligned data). Data comes from raw_data, the typed field
// for its dtype, or an external file resolved against model_dir (NULL: external data is an error).
// Messages go to err and describe the problem, not the tensor (the caller names it).
kiln_onnx_tensor_status kiln_onnx_tensor_to_array(const Onnx__TensorProto *t, const char *model_dir,
                                                  kiln_array *out, char *err, size_t errlen);

// Reads a whole file (at most `limit` bytes) into a malloc'd buffer; NULL with err set otherwise.
unsigned char *kiln_onnx_read_file(const char *path, size_t limit, size_t *len, char *err,
                                   size_t errlen);

#endif

// Post-training static INT8 quantization (docs/quantization.md): `kiln build --quantize int8
// --calibrate FILES`. The pass `quantize` runs the reference interpreter over the calibration
// samples, takes each activation's range (min/max, percentile or entropy), and rewrites every
// Conv, Gemm and MatMul with constant weights into
//   QuantizeLinear -> QLinearConv / QLinearMatMul -> DequantizeLinear
// (u8 activations, i8 symmetric per-output-channel weights, i32 bias; a Relu reading the layer
// is fused: its range starts at 0, so the u8 saturation at zero point 0 is the Relu). Chains of
// quantized layers hand over u8 tensors directly. Layers named by --quant-skip stay in FP32.
#ifndef KILN_QUANT_PTQ_H
#define KILN_QUANT_PTQ_H

#include "../passes/pipeline.h"
#include "calibrate.h"

enum { KILN_QUANT_MAX_FILES = 16, KILN_QUANT_MAX_SKIP = 64 };

// How the calibration samples are run (--calib-run): compiled when the interpreter would be slow.
typedef enum {
  KILN_CALIB_RUN_AUTO,
  KILN_CALIB_RUN_INTERP,
  KILN_CALIB_RUN_BINARY
} kiln_calib_engine;

// Bias correction (--quant-bias-correction on|off): the default is ptq.c's choice.
typedef enum {
  KILN_BIAS_CORRECTION_DEFAULT,
  KILN_BIAS_CORRECTION_ON,
  KILN_BIAS_CORRECTION_OFF
} kiln_bias_correction;

typedef struct kiln_quant_options {
  // --calibrate A.npy[,B.npy...]: samples of the model's (only) input, dim 0 the sample axis
  const char *files[KILN_QUANT_MAX_FILES];
  int n_files;
  kiln_calib_method method;  // --calib-method (mse by default: zero)
  double percentile;         // --calib-percentile (99.99 by default)
  int64_t max_samples;       // --calib-samples: at most this many samples are used (0: all)
  kiln_calib_engine engine;  // --calib-run auto|interp|binary
  const char *report;        // --quant-report FILE.md: the per-layer table
  const char *skip[KILN_QUANT_MAX_SKIP];  // --quant-skip NAME: layers (node names) kept in FP32
  int n_skip;
  double min_sqnr;  // --quant-min-sqnr DB: a layer below it is to be kept in FP32 (0: off)
  kiln_bias_correction bias_correction;  // --quant-bias-correction: fold mean errors into biases
  bool head_int8;  // --quant-head int8: the classifier head quantized too (default: kept FP32)
  // Set by the pass: the first layer whose SQNR is below min_sqnr (NULL: none) and its SQNR.
  const char *below_threshold;
  double below_sqnr;
} kiln_quant_options;

// Parses a --calibrate list ("a.npy,b.npy") into o->files (copies); false after printing why.
bool kiln_quant_parse_files(const char *list, kiln_quant_options *o);
// "auto", "interp", "binary"; false for anything else.
bool kiln_calib_engine_parse(const char *s, kiln_calib_engine *out);
// "on", "off"; false for anything else.
bool kiln_bias_correction_parse(const char *s, kiln_bias_correction *out);
// --quant-head "fp32" (false) or "int8" (true); false for anything else.
bool kiln_quant_head_parse(const char *s, bool *head_int8);
// Adds a layer to o->skip (a copy of name); false after printing why (too many).
bool kiln_quant_keep_fp32(kiln_quant_options *o, const char *name);
// Frees the copied file and layer names.
void kiln_quant_options_free(kiln_quant_options *o);

#endif

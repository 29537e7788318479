// Kiln runtime: the small static library generated code and standalone binaries link against.
// Nothing here allocates while a model runs; loading files does.
//   - status codes and messages
//   - .npy read/write (v1/v2 headers, little-endian f32/f64/i8/u8/i32/i64/bool, C order)
//   - .safetensors read/write
//   - the weights blob format written by `kiln compile`
//   - an arena, timers, medians, parallel_for over OpenMP
//   - kiln_main(): the command-line driver of a standalone model binary
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  KILN_OK = 0,
  KILN_ERR_ARG = 1,      // a NULL pointer, a bad size or a bad flag
  KILN_ERR_IO = 2,       // a file could not be opened, read or written
  KILN_ERR_FORMAT = 3,   // a file is not what it claims to be (bad magic, bad header, truncated)
  KILN_ERR_SHAPE = 4,    // an array has the wrong shape
  KILN_ERR_DTYPE = 5,    // an array has the wrong element type
  KILN_ERR_NOMEM = 6,    // an allocation failed
  KILN_ERR_WEIGHTS = 7,  // the weights do not belong to this model (size or checksum)
  KILN_ERR_CPU = 8,      // the model uses AMX tiles, which this CPU or OS does not provide
} kiln_status;
const char *kiln_status_str(int status);

// Element types; the numbering is shared with the compiler's IR.
typedef enum {
  KILN_RT_F32 = 0,
  KILN_RT_F64 = 1,
  KILN_RT_I8 = 2,
  KILN_RT_U8 = 3,
  KILN_RT_I32 = 4,
  KILN_RT_I64 = 5,
  KILN_RT_BOOL = 6,
  KILN_RT_DTYPE_COUNT = 7
} kiln_rt_dtype;
size_t kiln_rt_dtype_size(int dtype);
const char *kiln_rt_dtype_name(int dtype);  // "f32", ...

#define KILN_RT_MAX_RANK 8

// An owned n-dimensional array (row-major).
typedef struct kiln_array {
  int dtype;
  int rank;
  int64_t shape[KILN_RT_MAX_RANK];
  void *data;  // 64-byte aligned; free with kiln_array_free
  size_t nbytes;
} kiln_array;
int64_t kiln_array_numel(const kiln_array *a);
// Element i of a row-major array of `dtype`, converted through double (i64 beyond 2^53 rounds).
double kiln_element_get(const void *data, int dtype, int64_t i);
void kiln_element_set(void *data, int dtype, int64_t i, double v);  // converts as C casts do
void kiln_array_free(kiln_array *a);

// Error messages are written to err[errlen] (always NUL-terminated) and name the file.
int kiln_npy_read(const char *path, kiln_array *out, char *err, size_t errlen);
// Writes to a temporary file beside `path` and renames it into place.
int kiln_npy_write(const char *path, const kiln_array *a, char *err, size_t errlen);

typedef struct kiln_st_entry {
  char *name;
  int dtype;
  int rank;
  int64_t shape[KILN_RT_MAX_RANK];
  const void *data;  // points into the file's data (not aligned)
  size_t nbytes;
} kiln_st_entry;
typedef struct kiln_safetensors {
  kiln_st_entry *entries;
  int count;
  void *file;  // the whole file
  size_t file_size;
} kiln_safetensors;
// Supports dtypes F32, F64, I8, U8, I32, I64, BOOL; any other dtype is an error naming the tensor.
int kiln_safetensors_read(const char *path, kiln_safetensors *out, char *err, size_t errlen);
const kiln_st_entry *kiln_safetensors_find(const kiln_safetensors *st, const char *name);
void kiln_safetensors_free(kiln_safetensors *st);
int kiln_safetensors_write(const char *path, int count, const char *const *names,
                           const kiln_array *arrays, char *err, size_t errlen);

// Weights blob: a 64-byte header (KILN_WEIGHTS_MAGIC, u64 payload bytes, u64
// kiln_weights_checksum of the payload, zero padding) followed by the payload. Offsets in generated
// code are payload offsets. (Format 1, "KILNWTS1", had an FNV-1a checksum; reading one is an error
// that says to rebuild.)
#define KILN_WEIGHTS_HEADER_BYTES 64
#define KILN_WEIGHTS_MAGIC \
  { 'K', 'I', 'L', 'N', 'W', 'T', 'S', '2' }
uint64_t kiln_weights_checksum(const void *data, size_t n);
uint64_t kiln_fnv1a64(const void *data, size_t n);  // for short strings (names, keys)
int kiln_weights_write(const char *path, const void *payload, size_t bytes, char *err,
                       size_t errlen);
// Reads a blob file into a 64-byte aligned allocation holding the payload; checks size and
// checksum.
int kiln_weights_read(const char *path, size_t expect_bytes, uint64_t expect_checksum,
                      void **payload, char *err, size_t errlen);
// Checks an in-memory blob (header included); on success *payload points inside it.
int kiln_weights_check(const void *blob, size_t blob_bytes, size_t expect_bytes,
                       uint64_t expect_checksum, const void **payload);

// rename(2) for the writers' temporary files (temp + rename: no reader sees half a file), except
// that an existing special file at `path` (a device or FIFO: /dev/null, /dev/stdout) receives a
// copy and stays what it is. 0 on success, -1 with errno set.
int kiln_rename_into_place(const char *tmp, const char *path);

// Arena: one aligned allocation handed out in 64-byte aligned pieces.
// 64-byte aligned, NULL on failure; free with kiln_aligned_free.
void *kiln_aligned_alloc(size_t bytes);
void kiln_aligned_free(void *p);

// Timing.
double kiln_now_ms(void);                   // monotonic clock
double kiln_median(double *values, int n);  // sorts values in place

// Threads.
void kiln_set_threads(int n);  // n <= 0: leave OpenMP's default (OMP_NUM_THREADS)
int kiln_get_threads(void);
typedef void (*kiln_range_fn)(int64_t begin, int64_t end, void *ctx);
// Splits [0, n) into one contiguous range per thread.
void kiln_parallel_for(int64_t n, kiln_range_fn fn, void *ctx);

// AMX tiles (tiles.c), for code compiled with --target native on an AMX host. kiln_tiles_init
// asks Linux for the tile state once (the generated init functions call it): KILN_OK or
// KILN_ERR_CPU. kiln_tile_dot is the loop IR's LS_TILEDOT (ir/loop.h): for i < rows <= 32,
// j < cols <= 32: c[i * c_row + j * c_col] = sum over kk < k of a[i * a_ld + (kk / run_k) * run_ld
// + kk % run_k] * w[(j / 16) * w_ld + (kk / 4) * 64 + (j % 16) * 4 + kk % 4] (u8 x i8, exact
// i32); c_col or c_row is 1.
int kiln_tiles_init(void);
void kiln_tile_dot(int32_t *c, int64_t c_row, int64_t c_col, const uint8_t *a, int64_t a_ld,
                   int64_t run_ld, int64_t run_k, int64_t k, const int8_t *w, int64_t w_ld,
                   int64_t rows, int64_t cols);

// What a standalone binary knows about its model; emitted by the C backend.
typedef struct kiln_io_desc {
  const char *name;
  int dtype;
  int rank;
  int64_t shape[KILN_RT_MAX_RANK];
} kiln_io_desc;

typedef struct kiln_model_desc {
  const char *name;
  int n_inputs, n_outputs;
  const kiln_io_desc *inputs, *outputs;
  size_t arena_bytes, weights_bytes;
  uint64_t weights_checksum;                              // FNV-1a-64 of the weights payload
  size_t ctx_bytes;                                       // sizeof the model's context struct
  int (*init_file)(void *ctx, const char *weights_path);  // allocates weights and arena
  int (*init_embedded)(void *ctx);                        // NULL unless weights are embedded
  int (*run)(void *ctx, const void *const *inputs, void *const *outputs);
  void (*release)(void *ctx);
} kiln_model_desc;

// The standalone binary's main:
//   BIN --input [NAME=]X.npy ... --output [NAME=]Y.npy ... [--weights FILE] [--bench N] [--threads
//   N]
// Inputs must match the model's dtype and shape, except that the leading dimension may be any
// multiple of the model's: the batch is then run in model-sized chunks and outputs are stacked.
// --bench N runs the first chunk N times after a warm-up and prints `median_ms=<float>`.
// The default weights file is the binary's path + ".weights". Returns the process exit code:
// 0, 2 for bad input (files, flags, shapes), 1 for internal errors.
int kiln_main(const kiln_model_desc *m, int argc, char **argv);

// ---- Training (docs/training.md; runtime/train.c) ----

// One STATE tensor of a training build: a trainable param or optimizer state, living at `offset`
// in the context's private, writable weights payload.
typedef struct kiln_state_desc {
  const char *name;
  int dtype;
  int rank;
  int64_t shape[KILN_RT_MAX_RANK];
  size_t offset;
} kiln_state_desc;

struct kiln_adversarial_desc;

// What the generated trainer knows about a training build. model->run is one training step
// (forward, loss, backward, update); eval runs the forward pass and the loss only. Inputs: the
// model's, then the label (and per-sample weights); outputs: the loss (1), then the model's.
typedef struct kiln_train_desc {
  const kiln_model_desc *model;
  int (*eval)(void *ctx, const void *const *inputs, void *const *outputs);
  void *(*state)(void *ctx);  // the context's weights payload
  int n_state;
  const kiln_state_desc *states;
  int label_input, weight_input;  // input indices (weight_input -1 if none)
  int logits_output;              // output the loss reads, or -1
  int classification;             // cross_entropy: report accuracy
  uint64_t seed;                  // training.seed
  // Data-parallel builds only (docs/distributed.md), else NULL and 0: model->run split in two.
  // grads runs the forward pass, the loss and the backward pass, writing every trainable param's
  // gradient to outputs [first_grad_output, first_grad_output + n_grads); apply then clips those
  // gradients, updates the weights and advances the step counter. The context's arena must not
  // be used in between.
  int (*grads)(void *ctx, const void *const *inputs, void *const *outputs);
  int (*apply)(void *ctx, const void *const *inputs, void *const *outputs);
  int first_grad_output, n_grads;
  // training.augment / training.normalize as a spec for runtime/augment.h ("hflip p=0.5; ..."),
  // or NULL: applied to the samples by the trainer (docs/training.md).
  const char *augment;
  // Adversarial builds (docs/training.md §8), else NULL: this is the discriminator's step.
  const struct kiln_adversarial_desc *adversarial;
} kiln_train_desc;

// An adversarial build: the generator's step, a second training build linked beside the
// discriminator's (its weights in OUT.g.weights). The trainer runs n_critic D steps (one batch of
// data each) per G step; after each step it copies the params the step trained (by name) into
// the other step's context.
typedef struct kiln_adversarial_desc {
  const kiln_train_desc *g;
  int64_t n_critic;
  const char *const *d_params, *const *g_params;  // NULL-terminated too
  int n_d_params, n_g_params;
} kiln_adversarial_desc;

// Writes every STATE tensor to a .safetensors file, atomically (temporary file + rename).
int kiln_state_save(const kiln_train_desc *t, void *ctx, const char *path, char *err,
                    size_t errlen);
// Reads STATE tensors by name from a .safetensors file (dtype and shape checked). strict: every
// STATE tensor must be present (a checkpoint); otherwise missing ones keep their values (trained
// weights without optimizer state).
int kiln_state_load(const kiln_train_desc *t, void *ctx, const char *path, int strict, char *err,
                    size_t errlen);
// The generated trainer's main (docs/training.md §5):
//   T --train SRC [--test SRC] [--epochs N] [--batch N] [--save CKPT] [--resume CKPT]
//     [--max-steps N] [--seed S] [--log FILE.csv] [--weights FILE] [--threads N]
// SRC: X.npy,Y.npy | IDX images,labels (plain or .gz) | fashion-mnist:train|test |
// mnist:train|test | FILE.csv (label last). Returns the exit code (0, 2 bad input/data, 1).
int kiln_train_main(const kiln_train_desc *t, int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif

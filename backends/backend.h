// Backends render a loop program. The C backend writes NAME.c, NAME.h and NAME.weights;
// `kiln build` compiles them with the runtime into a standalone binary.
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <stdbool.h>

#include "../ir/diag.h"
#include "../ir/loop.h"

// A training build (docs/training.md §4): what the program's inputs and outputs mean.
typedef struct kiln_c_state_shape {
  const char *name;  // a STATE tensor (the loop buffer's name)
  int rank;
  int64_t dim[8];
} kiln_c_state_shape;
struct kiln_c_adversarial;
typedef struct kiln_c_train {
  int label_input, weight_input;  // input indices; weight_input -1 if none
  int logits_output;              // the output the loss reads, or -1
  bool classification;            // cross_entropy
  uint64_t seed;
  const kiln_c_state_shape *shapes;  // the STATE tensors' shapes (checkpoints keep them)
  int n_shapes;
  // Data-parallel builds (kiln build --distributed mpi; docs/distributed.md): outputs
  // [first_grad_output, first_grad_output + n_grads) are the gradients; the step is also emitted
  // in two halves, NAME_train_grads and NAME_apply_update, and the main stub calls
  // kiln_train_mpi_main, linked from libkiln-runtime-mpi.a with MPI.
  bool distributed;
  int first_grad_output, n_grads;
  const char *augment;  // training.augment/normalize as the trainer's spec (runtime/augment.h)
  // An adversarial build (docs/training.md §8), else NULL: this program is the discriminator's
  // step; the generator's is a second program emitted and linked beside it.
  const struct kiln_c_adversarial *adversarial;
} kiln_c_train;

typedef struct kiln_c_adversarial {
  const kiln_lprog *g_prog;     // the generator's step (its C name: the model's + "_g")
  const kiln_c_train *g_train;  // its inputs and outputs
  int64_t n_critic;             // discriminator steps per generator step
  const char *const *d_params;  // trained by the D step, copied into the G step's context
  const char *const *g_params;  // trained by the G step, copied into the D step's context
  int n_d_params, n_g_params;
} kiln_c_adversarial;

typedef struct kiln_c_options {
  bool embed_weights;  // inline the weights payload as a C array instead of NAME.weights
  bool main_stub;      // also emit `int main` calling kiln_main (for kiln build)
  // Training build: NAME_train_step, NAME_eval, NAME_save, NAME_load_state, NAME_train_desc;
  // the main stub calls kiln_train_main. NULL for inference.
  const kiln_c_train *train;
  // With train: emit only the training glue (the STATE table, NAME_train_desc, NAME_train_step,
  // NAME_save, NAME_load_state and main), for the LLVM backend, whose object holds the kernels
  // and the rest of the API.
  bool train_glue_only;
} kiln_c_options;

// Renders p as C17 into the open files. `h_name` is the header's file name, as #included.
bool kiln_emit_c_source(const kiln_lprog *p, const kiln_c_options *o, const char *h_name, FILE *c);
bool kiln_emit_c_header(const kiln_lprog *p, const kiln_c_options *o, FILE *h);
// Writes DIR/NAME.c, DIR/NAME.h and (unless embedded) DIR/NAME.weights, each through a temporary
// file renamed into place. Creates DIR if needed.
bool kiln_emit_c_files(const kiln_lprog *p, const kiln_c_options *o, const char *dir, kiln_diag *d);

typedef struct kiln_build_options {
  const char *cc;            // compiler command; default $CC or "cc"
  const char *target;        // native | avx512 | avx2 | generic
  const char *extra_cflags;  // appended (e.g. sanitizers); default $KILN_CFLAGS
  bool embed_weights;
  bool keep_sources;          // leave the generated C beside the binary as OUT.c / OUT.h
  bool verbose;               // print the compiler command line
  const kiln_c_train *train;  // a training build (links the trainer; see kiln_c_options)
  // An object file holding the model's kernels and API (the LLVM backend's): with train, the
  // generated C is then only the training glue (kiln_c_options.train_glue_only).
  const char *extra_object;
} kiln_build_options;

// Compiles p into the executable `out` (and `out.weights` unless embedded), linked with the
// runtime library. Writes through temporary files renamed into place.
bool kiln_build_binary(const kiln_lprog *p, const kiln_build_options *o, const char *out,
                       kiln_diag *d);

// ---- The LLVM backend (backends/llvm, LLVM 19's C API): the same loop program as LLVM IR. ----
typedef struct kiln_llvm_options {
  const char *target;  // native | avx512 | avx2 | generic (default native)
  int opt_level;       // 0..3: the new pass manager's default<ON> pipeline
  bool embed_weights;  // the weights blob as a constant in the module (NAME_init_embedded)
  bool main_stub;      // also define `int main` calling kiln_main
  // A training build: also NAME_eval (the forward pass and the loss), and NAME_init_blob copies
  // the weights (the step writes them). The trainer's glue comes from the C backend
  // (kiln_c_options.train_glue_only), linked in by kiln_llvm_build_binary.
  const kiln_c_train *train;
} kiln_llvm_options;

typedef enum { KILN_LLVM_EMIT_LLVM, KILN_LLVM_EMIT_OBJ } kiln_llvm_emit;

// Writes DIR/NAME.ll (textual IR) or DIR/NAME.o (an object exporting the API of the C backend's
// header), plus DIR/NAME.h and (unless embedded) DIR/NAME.weights. Creates DIR if needed.
bool kiln_llvm_emit_files(const kiln_lprog *p, const kiln_llvm_options *o, kiln_llvm_emit what,
                          const char *dir, kiln_diag *d);
// Like kiln_build_binary, with object code from LLVM linked (by the C compiler driver) with the
// runtime library. Uses o's target and optimization level; b's cc, flags, embed, verbose.
bool kiln_llvm_build_binary(const kiln_lprog *p, const kiln_llvm_options *o,
                            const kiln_build_options *b, const char *out, kiln_diag *d);

// Compiles p in memory with ORC LLJIT (weights embedded) and returns its kiln_model_desc, valid
// until kiln_llvm_jit_free. NULL after reporting an error.
typedef struct kiln_llvm_jit kiln_llvm_jit;
kiln_llvm_jit *kiln_llvm_jit_create(const kiln_lprog *p, const kiln_llvm_options *o, kiln_diag *d);
const struct kiln_model_desc *kiln_llvm_jit_desc(const kiln_llvm_jit *j);
void kiln_llvm_jit_free(kiln_llvm_jit *j);

// Where the runtime's header and static library are: $KILN_RUNTIME_DIR, the build tree, or the
// install prefix. Returns false if none has them.
bool kiln_find_runtime(char *inc_dir, char *lib_dir, int size);

#endif

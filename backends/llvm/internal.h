// Shared between the LLVM backend's files; not part of the backend's public interface.
//   llvm_emit.c    kernels: loop IR statements and expressions -> LLVM IR functions
//   llvm_glue.c    the model's API in IR (NAME_run, NAME_init_*, NAME_release, NAME_desc, main)
//   llvm_target.c  targets, target machines, the optimization pipeline, .ll / .o output
//   llvm_build.c   `kiln compile --backend llvm` files and `kiln build --backend llvm` binaries
//   llvm_jit.c     ORC LLJIT for `kiln run --jit`
#ifndef KILN_BACKENDS_LLVM_INTERNAL_H
#define KILN_BACKENDS_LLVM_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <stdbool.h>

#include "../../ir/diag.h"
#include "../../ir/loop.h"
#include "../backend.h"

// Per buffer: how a kernel uses it.
enum { LL_USE_READ = 1, LL_USE_WRITE = 2 };

// The state of one module being generated.
typedef struct lgen {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  const kiln_lprog *p;
  const kiln_llvm_options *o;
  kiln_diag *d;
  bool failed;
  char model[64];  // the model's C identifier: the prefix of every exported symbol
  LLVMTypeRef ptr, i1, i8, i32, i64, f32, f64, void_t;
  LLVMValueRef *kernel_fn;     // per kernel: its function
  unsigned char **kernel_use;  // per kernel: per buffer LL_USE_* flags
  // The function being generated.
  int kernel;  // kernel index (for messages), -1 outside kernels
  LLVMValueRef fn;
  LLVMValueRef *var_slot;  // per kernel variable: its alloca
  LLVMValueRef *buf_ptr;   // per buffer: its pointer in this function (NULL: not a parameter)
  bool in_parallel, in_vector;
  int vector_var;  // the variable of the vectorized loop the statements are in (-1: none)
  // The vectorized reduction loop the statements are in (NULL: none): its accumulators' updates
  // may be reassociated.
  const kiln_lstmt *reduction;
  int n_outlined;
  // Alias scopes: local arrays live in their own scope, which no buffer access can touch (as in C,
  // a local array is a distinct object), so LLVM keeps accumulators in registers across loops
  // that read buffers even when a vectorized loop elsewhere takes the array's address.
  LLVMValueRef
      locals_scope;  // !{scope}: !alias.scope of local-array accesses, !noalias of buffer ones
} lgen;

// Reports an error (the first one only) naming the kernel being generated.
void ll_fail(lgen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

LLVMTypeRef ll_type(lgen *g, kiln_dtype t);
LLVMValueRef ll_i32(lgen *g, int64_t v);
LLVMValueRef ll_i64(lgen *g, int64_t v);
LLVMValueRef ll_declare(lgen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n);
LLVMValueRef ll_call(lgen *g, LLVMValueRef fn, LLVMValueRef *args, int n);
LLVMBasicBlockRef ll_block(lgen *g, const char *name);
void ll_add_fn_attr(lgen *g, LLVMValueRef fn, const char *name);

// Checks kernel k and records which buffers it reads and writes (g->kernel_use[k]).
bool ll_analyze_kernel(lgen *g, int k);
// Whether the kernel's parameter for buffer a may be noalias, given the kernel's other buffers.
bool ll_param_noalias(const lgen *g, const unsigned char *use, int a);
// Defines the functions of every kernel (after ll_analyze_kernel for all of them).
bool ll_emit_kernels(lgen *g);
// Defines NAME_run_arena, NAME_run, the init functions, NAME_release, NAME_desc and (with
// main_stub) main.
bool ll_emit_glue(lgen *g);

// Builds the whole module for p in ctx (which the caller owns). Returns NULL after reporting.
LLVMModuleRef kiln_llvm_build_module(const kiln_lprog *p, const kiln_llvm_options *o,
                                     LLVMContextRef ctx, kiln_diag *d);

// A target machine for o->target ("native" when NULL) at o->opt_level. Reports and returns NULL
// for an unknown or unsupported target.
LLVMTargetMachineRef kiln_llvm_target_machine(const kiln_llvm_options *o, kiln_diag *d);
// Sets the module's triple and data layout and every function's target-cpu / target-features;
// verifies the module; runs the new pass manager's default<ON> pipeline.
bool kiln_llvm_prepare_module(LLVMModuleRef mod, LLVMTargetMachineRef tm,
                              const kiln_llvm_options *o, kiln_diag *d);

// The module as textual IR or as an object file, in a kiln_xmalloc'd buffer.
bool kiln_llvm_render(LLVMModuleRef mod, LLVMTargetMachineRef tm, kiln_llvm_emit what, char **data,
                      size_t *size, kiln_diag *d);

#endif

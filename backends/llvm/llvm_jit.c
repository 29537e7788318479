// LLVM backend, in-memory compilation for `kiln run --jit`: the module (weights embedded, no
// `main`) is optimized as for an object file and handed to ORC's LLJIT. The runtime functions
// the module calls are defined in the JIT as absolute symbols (this process's own copies); the
// C library and libm resolve through the process. The result is the module's NAME_desc, which
// the runtime's standalone driver (kiln_main) runs like a built binary's.
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../c/internal.h"
#include "internal.h"

struct kiln_llvm_jit {
  LLVMOrcLLJITRef jit;
  const kiln_model_desc *desc;
};

static void dispose_jit(LLVMOrcLLJITRef jit) {
  LLVMErrorRef err = LLVMOrcDisposeLLJIT(jit);
  if (err) LLVMConsumeError(err);
}

static bool orc_ok(LLVMErrorRef err, const char *what, kiln_diag *d) {
  if (!err) return true;
  char *msg = LLVMGetErrorMessage(err);
  kiln_diag_error(d, "LLVM JIT", "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return false;
}

// The runtime's functions generated code calls, by name and address in this process.
static LLVMErrorRef define_runtime(LLVMOrcLLJITRef jit) {
  static const struct {
    const char *name;
    void (*addr)(void);
  } fns[] = {
      {"kiln_parallel_for", (void (*)(void))kiln_parallel_for},
      {"kiln_weights_read", (void (*)(void))kiln_weights_read},
      {"kiln_weights_check", (void (*)(void))kiln_weights_check},
      {"kiln_aligned_alloc", (void (*)(void))kiln_aligned_alloc},
      {"kiln_aligned_free", (void (*)(void))kiln_aligned_free},
      {"kiln_main", (void (*)(void))kiln_main},
      {"kiln_tiles_init", (void (*)(void))kiln_tiles_init},
      {"kiln_tile_dot", (void (*)(void))kiln_tile_dot},
  };
  enum { N = sizeof(fns) / sizeof(fns[0]) };
  LLVMOrcCSymbolMapPair pairs[N];
  for (int i = 0; i < N; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, fns[i].name);
    pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)fns[i].addr;
    pairs[i].Sym.Flags.GenericFlags =
        LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    pairs[i].Sym.Flags.TargetFlags = 0;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
  return LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), mu);
}

static LLVMOrcLLJITRef make_jit(const kiln_llvm_options *o, kiln_diag *d) {
  LLVMTargetMachineRef tm = kiln_llvm_target_machine(o, d);
  if (!tm) return NULL;
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  // The builder takes the target machine builder, which takes the target machine.
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
  LLVMOrcLLJITRef jit = NULL;
  if (!orc_ok(LLVMOrcCreateLLJIT(&jit, builder), "cannot create the JIT", d)) return NULL;
  LLVMOrcDefinitionGeneratorRef gen = NULL;
  LLVMErrorRef err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
  if (orc_ok(err, "cannot search this process's libraries", d)) {
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen);
    if (orc_ok(define_runtime(jit), "cannot define the runtime's symbols", d)) return jit;
  }
  dispose_jit(jit);
  return NULL;
}

// Builds and optimizes the module in a thread-safe context and adds it to the JIT.
static bool add_module(LLVMOrcLLJITRef jit, const kiln_lprog *p, const kiln_llvm_options *o,
                       kiln_diag *d) {
  LLVMTargetMachineRef tm = kiln_llvm_target_machine(o, d);
  if (!tm) return false;
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef mod = kiln_llvm_build_module(p, o, LLVMOrcThreadSafeContextGetContext(tsc), d);
  bool ok = mod && kiln_llvm_prepare_module(mod, tm, o, d);
  LLVMDisposeTargetMachine(tm);
  if (ok) {
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    mod = NULL;  // owned by tsm
    LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm);
    ok = orc_ok(err, "cannot add the module", d);
    if (!ok) LLVMOrcDisposeThreadSafeModule(tsm);
  }
  if (mod) LLVMDisposeModule(mod);
  LLVMOrcDisposeThreadSafeContext(tsc);  // the module keeps its context alive
  return ok;
}

kiln_llvm_jit *kiln_llvm_jit_create(const kiln_lprog *p, const kiln_llvm_options *o, kiln_diag *d) {
  kiln_llvm_options opts = o ? *o : (kiln_llvm_options){.opt_level = 3};
  opts.embed_weights = true;
  opts.main_stub = false;
  LLVMOrcLLJITRef jit = make_jit(&opts, d);
  if (!jit) return NULL;
  if (!add_module(jit, p, &opts, d)) {
    dispose_jit(jit);
    return NULL;
  }
  char ident[64], name[96];
  snprintf(name, sizeof(name), "%s_desc", kiln_c_model_ident(p, ident, sizeof(ident)));
  LLVMOrcExecutorAddress addr = 0;
  if (!orc_ok(LLVMOrcLLJITLookup(jit, &addr, name), "cannot compile the model", d)) {
    dispose_jit(jit);
    return NULL;
  }
  kiln_llvm_jit *j = kiln_xcalloc(1, sizeof(*j));
  j->jit = jit;
  j->desc = (const kiln_model_desc *)(uintptr_t)addr;
  return j;
}

const struct kiln_model_desc *kiln_llvm_jit_desc(const kiln_llvm_jit *j) { return j->desc; }

void kiln_llvm_jit_free(kiln_llvm_jit *j) {
  if (!j) return;
  dispose_jit(j->jit);
  free(j);
}

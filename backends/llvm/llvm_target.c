// LLVM backend, targets: the target machine for --target (native: the host's CPU and features;
// avx512: skylake-avx512 preferring 512-bit vectors; avx2: haswell; generic: x86-64), the module's
// triple and data layout, the verifier, the new pass manager's default<ON> pipeline, and the
// module rendered as textual IR or as an object file in memory. LLVM's own failures come back as
// Kiln errors.
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct target_spec {
  const char *name, *cpu, *prefer_width;  // cpu NULL: the host's
} target_spec;

static const target_spec targets[] = {
    {"native", NULL, NULL},    {"native-noamx", NULL, NULL}, {"avx512", "skylake-avx512", "512"},
    {"avx2", "haswell", NULL}, {"generic", "x86-64", NULL},
};

static const target_spec *find_target(const char *name) {
  for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
    if (strcmp(targets[i].name, name) == 0) return &targets[i];
  return NULL;
}

static const char *target_name(const kiln_llvm_options *o) {
  return o && o->target && *o->target ? o->target : "native";
}

static int opt_level(const kiln_llvm_options *o) {
  int l = o ? o->opt_level : 3;
  return l < 0 ? 0 : l > 3 ? 3 : l;
}

static bool init_native(kiln_diag *d) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter()) {
    kiln_diag_error(d, "LLVM backend", "this LLVM has no code generator for the host");
    return false;
  }
  return true;
}

// The feature string: the host's for native, the CPU's own otherwise; on x86 plus
// prefer-no-scatter. LLVM's cost model takes AVX-512 scatters for cheap and turns the
// register-blocked kernels' transposing epilogues (a tile of accumulators stored by columns) into
// scatters, several times slower than the scalar stores gcc emits (its x86 tunings never use
// scatters). kiln_xmalloc'd.
static char *target_features(const target_spec *spec, const char *triple) {
  char *host = spec->cpu ? NULL : LLVMGetHostCPUFeatures();
  const char *extra = strncmp(triple, "x86_64", 6) == 0 ? "+prefer-no-scatter" : "";
  size_t n = (host ? strlen(host) : 0) + strlen(extra) + 2;
  char *f = kiln_xmalloc(n);
  snprintf(f, n, "%s%s%s", host ? host : "", host && *host && *extra ? "," : "", extra);
  LLVMDisposeMessage(host);
  return f;
}

LLVMTargetMachineRef kiln_llvm_target_machine(const kiln_llvm_options *o, kiln_diag *d) {
  const char *name = target_name(o);
  const target_spec *spec = find_target(name);
  if (!spec) {
    kiln_diag_error(d, "--target",
                    "unknown target '%s' (expected native, native-noamx, avx512, avx2 or generic)",
                    name);
    return NULL;
  }
  if (!init_native(d)) return NULL;
  char *triple = LLVMGetDefaultTargetTriple();
  if (spec->cpu && strncmp(triple, "x86_64", 6) != 0) {
    kiln_diag_error(d, "--target", "target '%s' needs an x86-64 host; this one is %s", name,
                    triple);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  LLVMTargetRef target = NULL;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    kiln_diag_error(d, "--target", "LLVM does not support %s: %s", triple, err ? err : "?");
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  char *cpu = spec->cpu ? NULL : LLVMGetHostCPUName();
  char *features = target_features(spec, triple);
  static const LLVMCodeGenOptLevel levels[] = {LLVMCodeGenLevelNone, LLVMCodeGenLevelLess,
                                               LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive};
  // PIC: Debian's C compiler links position-independent executables.
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(target, triple, spec->cpu ? spec->cpu : cpu, features ? features : "",
                              levels[opt_level(o)], LLVMRelocPIC, LLVMCodeModelDefault);
  if (!tm) kiln_diag_error(d, "--target", "LLVM cannot make a target machine for %s", name);
  LLVMDisposeMessage(cpu);
  free(features);
  LLVMDisposeMessage(triple);
  return tm;
}

// Every defined function gets the machine's CPU and features (so the JIT, `opt` and `llc` see
// the same target as the object file), and avx512 (or a native CPU with AVX-512) the 512-bit
// vector preference: LLVM's default for these CPUs is 256 bits, which halves the width of the
// register-blocked kernels (gcc gets -mprefer-vector-width=512 likewise).
static void set_function_targets(LLVMModuleRef mod, LLVMTargetMachineRef tm,
                                 const target_spec *spec) {
  LLVMContextRef ctx = LLVMGetModuleContext(mod);
  char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
  const char *width = spec->prefer_width;
  if (!width && !spec->cpu && features && strstr(features, "+avx512f")) width = "512";
  for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn)) {
    if (LLVMIsDeclaration(fn)) continue;
    const char *kv[3][2] = {
        {"target-cpu", cpu}, {"target-features", features}, {"prefer-vector-width", width}};
    for (int i = 0; i < 3; i++) {
      if (!kv[i][1] || !*kv[i][1]) continue;
      LLVMAttributeRef a = LLVMCreateStringAttribute(ctx, kv[i][0], (unsigned)strlen(kv[i][0]),
                                                     kv[i][1], (unsigned)strlen(kv[i][1]));
      LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a);
    }
  }
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
}

static bool verify(LLVMModuleRef mod, const char *when, kiln_diag *d) {
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    kiln_diag_error(d, "LLVM backend", "the module %s does not verify: %s", when, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return false;
  }
  LLVMDisposeMessage(msg);
  return true;
}

bool kiln_llvm_prepare_module(LLVMModuleRef mod, LLVMTargetMachineRef tm,
                              const kiln_llvm_options *o, kiln_diag *d) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, layout);
  LLVMDisposeTargetData(layout);
  set_function_targets(mod, tm, find_target(target_name(o)));
  if (!verify(mod, "as generated", d)) return false;

  char pipeline[32];
  snprintf(pipeline, sizeof(pipeline), "default<O%d>", opt_level(o));
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, opt_level(o) >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(po, opt_level(o) >= 2);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, opt_level(o) >= 2);
  LLVMErrorRef err = LLVMRunPasses(mod, pipeline, tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (err) {
    char *msg = LLVMGetErrorMessage(err);
    kiln_diag_error(d, "LLVM backend", "the %s pipeline failed: %s", pipeline, msg);
    LLVMDisposeErrorMessage(msg);
    return false;
  }
  return verify(mod, "after optimization", d);
}

bool kiln_llvm_render(LLVMModuleRef mod, LLVMTargetMachineRef tm, kiln_llvm_emit what, char **data,
                      size_t *size, kiln_diag *d) {
  *data = NULL;
  *size = 0;
  if (what == KILN_LLVM_EMIT_LLVM) {
    char *text = LLVMPrintModuleToString(mod);
    *size = strlen(text);
    *data = kiln_xmalloc(*size + 1);
    memcpy(*data, text, *size + 1);
    LLVMDisposeMessage(text);
    return true;
  }
  LLVMMemoryBufferRef buf = NULL;
  char *err = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &err, &buf)) {
    kiln_diag_error(d, "LLVM backend", "cannot emit object code: %s", err ? err : "?");
    LLVMDisposeMessage(err);
    return false;
  }
  *size = LLVMGetBufferSize(buf);
  *data = kiln_xmalloc(*size + 1);
  memcpy(*data, LLVMGetBufferStart(buf), *size);
  LLVMDisposeMemoryBuffer(buf);
  return true;
}

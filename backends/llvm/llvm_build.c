// LLVM backend, files and binaries.
//   kiln compile --backend llvm --emit llvm|obj: DIR/NAME.ll or DIR/NAME.o, DIR/NAME.h (the C
//     backend's header: the object implements exactly its API) and DIR/NAME.weights.
//   kiln build --backend llvm: NAME.o (with `main`) in a private temporary directory, linked by
//     the C compiler driver with the runtime library (no C is compiled):
//       $CC (default cc) OBJ <runtime lib>/libkiln-runtime.a -fopenmp -lm [-fsanitize=...]
//       -o OUT.tmp.XXXXXX <extra flags or $KILN_CFLAGS>
//     then OUT (and OUT.weights unless embedded) are renamed into place; with keep_sources the
//     optimized IR is left as OUT.ll.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../runtime/kiln_runtime.h"
#include "../c/internal.h"
#include "internal.h"

#ifndef KILN_SANITIZE
#define KILN_SANITIZE "none"
#endif

static const kiln_llvm_options default_options = {.opt_level = 3};

// Compiles p to textual IR and/or object code (either output may be NULL).
static bool compile_program(const kiln_lprog *p, const kiln_llvm_options *o, char **ll,
                            size_t *ll_size, char **obj, size_t *obj_size, kiln_diag *d) {
  LLVMTargetMachineRef tm = kiln_llvm_target_machine(o, d);
  if (!tm) return false;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = kiln_llvm_build_module(p, o, ctx, d);
  bool ok = mod && kiln_llvm_prepare_module(mod, tm, o, d);
  if (ok && ll) ok = kiln_llvm_render(mod, tm, KILN_LLVM_EMIT_LLVM, ll, ll_size, d);
  if (ok && obj) ok = kiln_llvm_render(mod, tm, KILN_LLVM_EMIT_OBJ, obj, obj_size, d);
  if (mod) LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return ok;
}

static char *cat3(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *r = kiln_xmalloc(n);
  snprintf(r, n, "%s%s%s", a, b, c);
  return r;
}

static char *join(const char *dir, const char *base, const char *ext) {
  bool slash = dir[0] && dir[strlen(dir) - 1] != '/';
  char *a = cat3(dir, slash ? "/" : "", base), *r = cat3(a, ext, "");
  free(a);
  return r;
}

// Writes bytes to path through a temporary file renamed into place.
static bool write_file(const char *path, const char *data, size_t size, kiln_diag *d) {
  kiln_c_file cf;
  if (!kiln_c_file_open(&cf, path, d)) return false;
  if (size && fwrite(data, 1, size, cf.f) != size) {
    kiln_diag_error(d, path, "cannot write: %s", strerror(errno));
    kiln_c_file_abort(&cf);
    return false;
  }
  return kiln_c_file_commit(&cf, d);
}

static bool write_header(const kiln_lprog *p, const kiln_llvm_options *o, const char *path,
                         kiln_diag *d) {
  kiln_c_file cf;
  if (!kiln_c_file_open(&cf, path, d)) return false;
  kiln_c_options co = {.embed_weights = o->embed_weights};
  if (!kiln_emit_c_header(p, &co, cf.f)) {
    kiln_diag_error(d, path, "cannot render the header");
    kiln_c_file_abort(&cf);
    return false;
  }
  return kiln_c_file_commit(&cf, d);
}

bool kiln_llvm_emit_files(const kiln_lprog *p, const kiln_llvm_options *o, kiln_llvm_emit what,
                          const char *dir, kiln_diag *d) {
  if (!o) o = &default_options;
  kiln_llvm_options opts = *o;
  opts.main_stub = false;
  if (!kiln_c_mkdirs(dir, d)) return false;
  char ident[64];
  const char *base = kiln_c_model_ident(p, ident, sizeof(ident));
  char *data = NULL;
  size_t size = 0;
  bool text = what == KILN_LLVM_EMIT_LLVM;
  bool ok = compile_program(p, &opts, text ? &data : NULL, &size, text ? NULL : &data, &size, d);
  char *out = join(dir, base, text ? ".ll" : ".o"), *h = join(dir, base, ".h");
  char *w = join(dir, base, ".weights");
  ok = ok && write_file(out, data, size, d) && write_header(p, &opts, h, d);
  if (ok && !opts.embed_weights) ok = kiln_c_write_weights(p, w, d);
  free(data);
  free(out);
  free(h);
  free(w);
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Linking.

typedef struct argv_t {
  char **v;
  int n, cap;
} argv_t;

static void arg(argv_t *a, const char *s) {
  char *c = cat3(s, "", "");
  KILN_VEC_PUSH(a->v, a->n, a->cap, c);
}

static void args_split(argv_t *a, const char *s) {
  while (s && *s) {
    s += strspn(s, " \t\n");
    size_t n = strcspn(s, " \t\n");
    if (n == 0) break;
    char *c = kiln_xmalloc(n + 1);
    memcpy(c, s, n);
    c[n] = 0;
    KILN_VEC_PUSH(a->v, a->n, a->cap, c);
    s += n;
  }
}

static void args_free(argv_t *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
}

// Runs the command (stdout to stderr); reports failure to start, an exit status or a signal.
static bool run(argv_t *a, bool verbose, kiln_diag *d) {
  KILN_VEC_PUSH(a->v, a->n, a->cap, NULL);
  a->n--;
  if (verbose) {
    for (int i = 0; i < a->n; i++) fprintf(stderr, "%s%s", i ? " " : "", a->v[i]);
    fputc('\n', stderr);
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    kiln_diag_error(d, a->v[0], "cannot fork: %s", strerror(errno));
    return false;
  }
  if (pid == 0) {
    dup2(STDERR_FILENO, STDOUT_FILENO);
    execvp(a->v[0], a->v);
    fprintf(stderr, "kiln: cannot run %s: %s (set CC or --cc)\n", a->v[0], strerror(errno));
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR) {
      kiln_diag_error(d, a->v[0], "waitpid failed: %s", strerror(errno));
      return false;
    }
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return true;
  if (WIFSIGNALED(st))
    kiln_diag_error(d, a->v[0], "the linker was killed by signal %d", WTERMSIG(st));
  else
    kiln_diag_error(d, a->v[0], "linking failed with exit status %d (messages above)",
                    WEXITSTATUS(st));
  return false;
}

static bool link_binary(const char *obj, const char *lib, const kiln_build_options *b,
                        const char *exe, kiln_diag *d) {
  argv_t a = {0};
  const char *cc = b->cc && *b->cc ? b->cc : getenv("CC");
  args_split(&a, cc && *cc ? cc : "cc");
  if (a.n == 0) arg(&a, "cc");
  arg(&a, obj);
  char *rt = cat3(lib, "/libkiln-runtime.a", "");
  arg(&a, rt);
  free(rt);
  arg(&a, "-fopenmp");
  arg(&a, "-lm");
  if (strcmp(KILN_SANITIZE, "none") != 0 &&
      strcmp(KILN_SANITIZE, "") != 0) {  // the runtime is instrumented
    char *f = cat3("-fsanitize=", KILN_SANITIZE, "");
    arg(&a, f);
    free(f);
  }
  arg(&a, "-o");
  arg(&a, exe);
  args_split(&a, b->extra_cflags ? b->extra_cflags : getenv("KILN_CFLAGS"));
  bool ok = run(&a, b->verbose, d);
  args_free(&a);
  return ok;
}

// Removes the temporary directory's files, then the directory.
static void remove_tmp(const char *dir, const char *obj) {
  if (obj) unlink(obj);
  rmdir(dir);
}

static bool check_out(const char *out, kiln_diag *d) {
  if (!out || !*out) {
    kiln_diag_error(d, NULL, "no output path given");
    return false;
  }
  const char *slash = strrchr(out, '/');
  if (slash && !slash[1]) {
    kiln_diag_error(d, out, "the output path names a directory, not a file");
    return false;
  }
  char *dir = slash ? kiln_xmalloc((size_t)(slash - out) + 2) : NULL;
  if (dir) {
    memcpy(dir, out, (size_t)(slash - out) + 1);
    dir[slash - out + (slash == out)] = 0;
  }
  struct stat st;
  bool ok = stat(dir ? dir : ".", &st) == 0 && S_ISDIR(st.st_mode);
  if (!ok) kiln_diag_error(d, out, "the output directory %s does not exist", dir ? dir : ".");
  free(dir);
  return ok;
}

// Writes the weights to a temporary file beside OUT.weights (renamed by the caller).
static bool stage_weights(const kiln_lprog *p, kiln_c_file *w, const char *out, kiln_diag *d) {
  char *path = cat3(out, ".weights", "");
  bool ok = kiln_c_file_open(w, path, d);
  free(path);
  if (!ok) return false;
  fclose(w->f);
  w->f = NULL;
  char err[512] = "";
  static const unsigned char none[1] = {0};
  int st = kiln_weights_write(w->tmp, p->weights ? p->weights : none, (size_t)p->weights_bytes, err,
                              sizeof(err));
  if (st != KILN_OK) kiln_diag_error(d, w->path, "%s", err[0] ? err : kiln_status_str(st));
  return st == KILN_OK;
}

static bool rename_into_place(const char *from, const char *to, kiln_diag *d) {
  if (kiln_rename_into_place(from, to) == 0) return true;
  kiln_diag_error(d, to, "cannot rename %s into place: %s", from, strerror(errno));
  return false;
}

// A trainer: the kernels and the model's API from LLVM, as an object that kiln_build_binary links
// with the training glue the C backend writes (kiln_c_options.train_glue_only) and the runtime.
static bool build_trainer(const kiln_lprog *p, const kiln_llvm_options *o,
                          const kiln_build_options *b, const char *out, kiln_diag *d) {
  char *obj = NULL;
  size_t obj_size = 0;
  if (!compile_program(p, o, NULL, NULL, &obj, &obj_size, d)) return false;
  const char *tmp_root = getenv("TMPDIR");
  char *tmp_dir = cat3(tmp_root && *tmp_root ? tmp_root : "/tmp", "/kiln-llvm-", "XXXXXX");
  char *obj_path = NULL;
  bool ok = false;
  if (!mkdtemp(tmp_dir)) {
    kiln_diag_error(d, tmp_dir, "cannot create a temporary directory: %s", strerror(errno));
  } else {
    obj_path = cat3(tmp_dir, "/model", ".o");
    kiln_build_options with_obj = *b;
    with_obj.extra_object = obj_path;
    ok = write_file(obj_path, obj, obj_size, d) && kiln_build_binary(p, &with_obj, out, d);
    remove_tmp(tmp_dir, obj_path);
  }
  free(obj_path);
  free(tmp_dir);
  free(obj);
  return ok;
}

bool kiln_llvm_build_binary(const kiln_lprog *p, const kiln_llvm_options *o,
                            const kiln_build_options *b, const char *out, kiln_diag *d) {
  static const kiln_build_options no_build_options = {0};
  if (!b) b = &no_build_options;
  kiln_llvm_options opts = o ? *o : default_options;
  opts.main_stub = !opts.train;  // a trainer's main is in the C glue
  opts.embed_weights = b->embed_weights;
  if (!check_out(out, d)) return false;
  if (opts.train) return build_trainer(p, &opts, b, out, d);
  char inc[PATH_MAX], lib[PATH_MAX];
  if (!kiln_find_runtime(inc, lib, (int)sizeof(inc))) {
    kiln_diag_error(d, NULL,
                    "cannot find the Kiln runtime (kiln_runtime.h and libkiln-runtime.a); set "
                    "KILN_RUNTIME_DIR to the directory holding both");
    return false;
  }
  char *ll = NULL, *obj = NULL;
  size_t ll_size = 0, obj_size = 0;
  if (!compile_program(p, &opts, b->keep_sources ? &ll : NULL, &ll_size, &obj, &obj_size, d))
    return false;

  const char *tmp_root = getenv("TMPDIR");
  char *tmp_dir = cat3(tmp_root && *tmp_root ? tmp_root : "/tmp", "/kiln-llvm-", "XXXXXX");
  char *obj_path = NULL, *exe_tmp = NULL, *ll_path = NULL;
  kiln_c_file weights = {0};
  bool ok = false;
  if (!mkdtemp(tmp_dir)) {
    kiln_diag_error(d, tmp_dir, "cannot create a temporary directory: %s", strerror(errno));
    free(tmp_dir);
    free(ll);
    free(obj);
    return false;
  }
  obj_path = cat3(tmp_dir, "/model", ".o");
  ll_path = cat3(out, ".ll", "");
  exe_tmp = cat3(out, ".tmp.", "XXXXXX");
  int fd = mkstemp(exe_tmp);
  if (fd < 0) {
    kiln_diag_error(d, out, "cannot create a temporary file beside it: %s", strerror(errno));
    goto done;
  }
  close(fd);
  if (!write_file(obj_path, obj, obj_size, d)) goto done;
  if (ll && !write_file(ll_path, ll, ll_size, d)) goto done;
  if (!b->embed_weights && !stage_weights(p, &weights, out, d)) goto done;
  if (!link_binary(obj_path, lib, b, exe_tmp, d)) goto done;
  mode_t mask = umask(0);
  umask(mask);
  if (chmod(exe_tmp, 0777 & ~mask) != 0) {
    kiln_diag_error(d, exe_tmp, "cannot make executable: %s", strerror(errno));
    goto done;
  }
  if (!b->embed_weights) {
    if (!rename_into_place(weights.tmp, weights.path, d)) goto done;
    free(weights.tmp);
    weights.tmp = NULL;
  }
  ok = rename_into_place(exe_tmp, out, d);

done:
  if (!ok && exe_tmp) unlink(exe_tmp);
  kiln_c_file_abort(&weights);
  remove_tmp(tmp_dir, obj_path);
  free(obj_path);
  free(exe_tmp);
  free(ll_path);
  free(tmp_dir);
  free(ll);
  free(obj);
  return ok;
}

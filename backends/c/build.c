// `kiln build`: renders the program as C into a private temporary directory, compiles it with the
// system C compiler (fork/execvp, no shell) against the runtime library, and renames the
// executable (and OUT.weights) into place.
//
// Output names: the executable is OUT, its weights OUT.weights (unless embedded). With
// keep_sources the generated C is left as OUT.c and OUT.h (OUT.c includes "OUT.h", so the pair
// rebuilds as is); if OUT's file name has characters unfit for an #include ("[A-Za-z0-9._+-]"
// only), they are written as DIR/NAME.c and DIR/NAME.h instead, DIR being OUT's directory and NAME
// the model's C name.
//
// Compiler flags, identical for compiling and linking:
//   $CC (default cc; split on spaces) -std=c17 -O3 -fopenmp -Wall -Wextra -Werror <target flags>
//   [-fsanitize=<b_sanitize> when kiln itself was built with a sanitizer] -I<runtime include>
//   NAME.c <runtime lib>/libkiln-runtime.a -lm -o OUT.tmp.XXXXXX <extra flags or $KILN_CFLAGS>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../compiler/target.h"
#include "../../runtime/kiln_runtime.h"
#include "internal.h"

#ifndef KILN_SANITIZE
#define KILN_SANITIZE "none"
#endif

// ---------------------------------------------------------------------------------------------
// Argument vectors.

typedef struct args {
  char **v;
  int n, cap;
} args;

static void args_add(args *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *c = kiln_xmalloc(n);
  memcpy(c, s, n);
  KILN_VEC_PUSH(a->v, a->n, a->cap, c);
}

// Splits s on blanks (no quoting) and appends the words.
static void args_split(args *a, const char *s) {
  while (s && *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    size_t n = strcspn(s, " \t\n");
    if (n == 0) break;
    char *c = kiln_xmalloc(n + 1);
    memcpy(c, s, n);
    c[n] = 0;
    KILN_VEC_PUSH(a->v, a->n, a->cap, c);
    s += n;
  }
}

static void args_free(args *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
  memset(a, 0, sizeof(*a));
}

// ---------------------------------------------------------------------------------------------
// Finding the runtime.

static bool has_file(const char *dir, const char *name) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) return false;
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool set_dirs(char *inc_dir, char *lib_dir, int size, const char *inc, const char *lib) {
  if ((int)strlen(inc) >= size || (int)strlen(lib) >= size) return false;
  snprintf(inc_dir, (size_t)size, "%s", inc);
  snprintf(lib_dir, (size_t)size, "%s", lib);
  return true;
}

#if defined(KILN_BUILD_RUNTIME_DIR) && defined(KILN_SOURCE_RUNTIME_DIR)
// Whether this executable lives under the build tree that KILN_BUILD_RUNTIME_DIR belongs to.
static bool running_from_build_tree(void) {
  char exe[PATH_MAX], root[PATH_MAX], real_root[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return false;
  exe[n] = 0;
  snprintf(root, sizeof(root), "%s", KILN_BUILD_RUNTIME_DIR);
  char *slash = strrchr(root, '/');
  if (!slash || slash == root) return false;
  *slash = 0;  // the build root: the runtime's build dir is BUILD/runtime
  if (!realpath(root, real_root)) return false;
  size_t len = strlen(real_root);
  return strncmp(exe, real_root, len) == 0 && exe[len] == '/';
}
#endif

#if defined(KILN_INSTALL_BIN_REL) && defined(KILN_INSTALL_INCLUDE_REL) && \
    defined(KILN_INSTALL_LIB_REL)
// An installed tree, wherever it now lives: this executable is PREFIX/BINDIR/kiln, the runtime
// PREFIX/INCLUDEDIR/kiln and PREFIX/LIBDIR (the configured dirs, when relative to the prefix).
static bool installed_beside_exe(char *inc_dir, char *lib_dir, int size) {
  char exe[PATH_MAX], inc[PATH_MAX + 64], lib[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0 || KILN_INSTALL_BIN_REL[0] == '/') return false;
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (!slash) return false;
  *slash = 0;  // exe is now the directory, PREFIX/BINDIR
  size_t len = strlen(exe), rel = strlen("/" KILN_INSTALL_BIN_REL);
  if (len < rel || strcmp(exe + len - rel, "/" KILN_INSTALL_BIN_REL) != 0) return false;
  exe[len - rel] = 0;  // PREFIX
  snprintf(inc, sizeof inc, "%s/%s", exe, KILN_INSTALL_INCLUDE_REL);
  snprintf(lib, sizeof lib, "%s/%s", exe, KILN_INSTALL_LIB_REL);
  return has_file(inc, "kiln_runtime.h") && has_file(lib, "libkiln-runtime.a") &&
         set_dirs(inc_dir, lib_dir, size, inc, lib);
}
#endif

bool kiln_find_runtime(char *inc_dir, char *lib_dir, int size) {
  const char *env = getenv("KILN_RUNTIME_DIR");
  if (env && *env) {
    if (has_file(env, "kiln_runtime.h") && has_file(env, "libkiln-runtime.a"))
      return set_dirs(inc_dir, lib_dir, size, env, env);
    fprintf(stderr,
            "kiln: error: KILN_RUNTIME_DIR=%s must contain kiln_runtime.h and libkiln-runtime.a\n",
            env);
    return false;
  }
#if defined(KILN_BUILD_RUNTIME_DIR) && defined(KILN_SOURCE_RUNTIME_DIR)
  if (running_from_build_tree() && has_file(KILN_SOURCE_RUNTIME_DIR, "kiln_runtime.h") &&
      has_file(KILN_BUILD_RUNTIME_DIR, "libkiln-runtime.a"))
    return set_dirs(inc_dir, lib_dir, size, KILN_SOURCE_RUNTIME_DIR, KILN_BUILD_RUNTIME_DIR);
#endif
#if defined(KILN_INSTALL_BIN_REL) && defined(KILN_INSTALL_INCLUDE_REL) && \
    defined(KILN_INSTALL_LIB_REL)
  if (installed_beside_exe(inc_dir, lib_dir, size)) return true;
#endif
#if defined(KILN_INSTALL_INCLUDE_DIR) && defined(KILN_INSTALL_LIB_DIR)
  if (has_file(KILN_INSTALL_INCLUDE_DIR, "kiln_runtime.h") &&
      has_file(KILN_INSTALL_LIB_DIR, "libkiln-runtime.a"))
    return set_dirs(inc_dir, lib_dir, size, KILN_INSTALL_INCLUDE_DIR, KILN_INSTALL_LIB_DIR);
#endif
  return false;
}

// ---------------------------------------------------------------------------------------------
// Running the compiler.

static void print_command(const args *a) {
  for (int i = 0; i < a->n; i++) {
    const char *s = a->v[i];
    bool plain = *s && strspn(s,
                              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                              "_-+=/.,:@%") == strlen(s);
    if (i) fputc(' ', stderr);
    if (plain) {
      fputs(s, stderr);
    } else {
      fputc('\'', stderr);
      for (; *s; s++) {
        if (*s == '\'')
          fputs("'\\''", stderr);
        else
          fputc(*s, stderr);
      }
      fputc('\'', stderr);
    }
  }
  fputc('\n', stderr);
}

// Runs argv (NULL-terminated) with stdout redirected to stderr, so kiln's stdout stays clean.
// Reports failure to start, a non-zero exit status or a signal.
static bool run_command(char **argv, kiln_diag *d) {
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) {
    kiln_diag_error(d, argv[0], "cannot create a pipe: %s", strerror(errno));
    return false;
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    kiln_diag_error(d, argv[0], "cannot fork: %s", strerror(errno));
    close(pfd[0]);
    close(pfd[1]);
    return false;
  }
  if (pid == 0) {
    close(pfd[0]);
    dup2(STDERR_FILENO, STDOUT_FILENO);
    execvp(argv[0], argv);
    int e = errno;
    ssize_t w = write(pfd[1], &e, sizeof(e));
    (void)w;
    _exit(127);
  }
  close(pfd[1]);
  int exec_errno = 0;
  ssize_t r;
  do r = read(pfd[0], &exec_errno, sizeof(exec_errno));
  while (r < 0 && errno == EINTR);
  close(pfd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      kiln_diag_error(d, argv[0], "waitpid failed: %s", strerror(errno));
      return false;
    }
  }
  if (r == (ssize_t)sizeof(exec_errno)) {
    kiln_diag_error(d, argv[0], "cannot run the C compiler: %s (set CC or --cc)",
                    strerror(exec_errno));
    return false;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  if (WIFSIGNALED(status))
    kiln_diag_error(d, argv[0], "the C compiler was killed by signal %d", WTERMSIG(status));
  else
    kiln_diag_error(d, argv[0],
                    "the C compiler failed with exit status %d (its messages are above)",
                    WEXITSTATUS(status));
  return false;
}

// ---------------------------------------------------------------------------------------------
// Files.

static char *strdup_x(const char *s) {
  size_t n = strlen(s) + 1;
  char *r = kiln_xmalloc(n);
  memcpy(r, s, n);
  return r;
}

static char *cat3(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *r = kiln_xmalloc(n);
  snprintf(r, n, "%s%s%s", a, b, c);
  return r;
}

// Copies src to dst through a temporary file beside dst.
static bool copy_file(const char *src, const char *dst, kiln_diag *d) {
  FILE *in = fopen(src, "rb");
  if (!in) {
    kiln_diag_error(d, src, "cannot open: %s", strerror(errno));
    return false;
  }
  kiln_c_file cf;
  if (!kiln_c_file_open(&cf, dst, d)) {
    fclose(in);
    return false;
  }
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
    if (fwrite(buf, 1, n, cf.f) != n) break;
  }
  bool read_ok = !ferror(in);
  fclose(in);
  if (!read_ok) {
    kiln_diag_error(d, src, "cannot read");
    kiln_c_file_abort(&cf);
    return false;
  }
  return kiln_c_file_commit(&cf, d);
}

// Removes the temporary directory and what is in it (no subdirectories are created there).
static void remove_dir(const char *dir) {
  DIR *dp = opendir(dir);
  if (dp) {
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      char *path = cat3(dir, "/", e->d_name);
      unlink(path);
      free(path);
    }
    closedir(dp);
  }
  rmdir(dir);
}

// ---------------------------------------------------------------------------------------------
// MPI (kiln build --train --distributed mpi; docs/distributed.md): the trainer links
// libkiln-runtime-mpi.a (built only when Meson found MPI) and MPI's own flags, asked of the
// wrapper compiler ($MPICC, default mpicc) with Open MPI's --showme:compile / --showme:link.

// Runs argv (NULL-terminated) and appends the words of its stdout to a; false if it cannot run
// or fails.
static bool capture_words(char **argv, args *a) {
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) != 0) return false;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    return false;
  }
  if (pid == 0) {
    dup2(pfd[1], STDOUT_FILENO);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(pfd[1]);
  char buf[4096];
  size_t len = 0;
  ssize_t r;
  while ((r = read(pfd[0], buf + len, sizeof(buf) - 1 - len)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    len += (size_t)r;
    if (len == sizeof(buf) - 1) break;
  }
  buf[len] = 0;
  close(pfd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  args_split(a, buf);
  return true;
}

// Appends libkiln-runtime-mpi.a and MPI's compile and link flags, or reports what is missing.
static bool add_mpi_flags(args *cmd, const char *lib, kiln_diag *d) {
  if (!has_file(lib, "libkiln-runtime-mpi.a")) {
    kiln_diag_error(d, "--distributed",
                    "this Kiln was built without MPI (%s/libkiln-runtime-mpi.a is missing): "
                    "install libopenmpi-dev and openmpi-bin, then reconfigure and rebuild Kiln",
                    lib);
    return false;
  }
  const char *env = getenv("MPICC");
  char *mpicc = strdup_x(env && *env ? env : "mpicc");
  char *show_compile[] = {mpicc, "--showme:compile", NULL};
  char *show_link[] = {mpicc, "--showme:link", NULL};
  char *f = cat3(lib, "/libkiln-runtime-mpi.a", "");
  args_add(cmd, f);
  free(f);
  bool ok = capture_words(show_compile, cmd) && capture_words(show_link, cmd);
  if (!ok)
    kiln_diag_error(d, "--distributed",
                    "cannot ask %s for MPI's flags (%s --showme:compile / --showme:link): install "
                    "Open MPI (libopenmpi-dev, openmpi-bin) or set MPICC to its wrapper compiler",
                    mpicc, mpicc);
  free(mpicc);
  return ok;
}

// The target's -march flags; false for an unknown target. Where the lowering blocked by 16 f32
// lanes (compiler/target.h), also -mprefer-vector-width=512: gcc's tuning for AVX-512 CPUs
// (skylake-avx512, and what -march=native makes of newer Xeons, e.g. rocketlake) prefers 256
// bits, which splits every register tile in two and halves the convolutions' speed (ResNet-18
// 53 -> 31 ms on a Xeon with AMX that gcc 12 takes for a rocketlake).
static bool target_flags(const char *target, args *a) {
  if (strcmp(target, "native") == 0 || strcmp(target, "native-noamx") == 0) {
    args_add(a, "-march=native");
  } else if (strcmp(target, "avx512") == 0) {
    args_add(a, "-march=skylake-avx512");
  } else if (strcmp(target, "avx2") == 0) {
    args_add(a, "-march=haswell");
  } else if (strcmp(target, "generic") == 0) {
    args_add(a, "-march=x86-64");
  } else {
    return false;
  }
  if (kiln_target_f32_lanes(target) == 16) args_add(a, "-mprefer-vector-width=512");
  return true;
}

static bool include_safe(const char *base) {
  return *base && strspn(base,
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "._+-") == strlen(base);
}

// Adversarial builds (docs/training.md §8): the generator's step, a second program, as
// DIR/BASE_g.c and .h (no main); returns the .c file's path (malloc'd) or NULL after reporting.
static char *write_generator_sources(const kiln_build_options *o, const char *dir, const char *base,
                                     kiln_diag *d) {
  const kiln_c_adversarial *a = o->train->adversarial;
  kiln_c_options co = {.embed_weights = o->embed_weights, .train = a->g_train};
  char *g_base = cat3(base, "_g", "");
  char *path = kiln_c_write_sources(a->g_prog, &co, dir, g_base, d) ? cat3(dir, "/", g_base) : NULL;
  char *c_path = path ? cat3(path, ".c", "") : NULL;
  free(path);
  free(g_base);
  return c_path;
}

// Its weights: OUT.g.weights (the trainer's default path for them).
static bool write_generator_weights(const kiln_build_options *o, const char *out, kiln_diag *d) {
  if (o->embed_weights) return true;
  char *path = cat3(out, ".g.weights", "");
  bool ok = kiln_c_write_weights(o->train->adversarial->g_prog, path, d);
  free(path);
  return ok;
}

bool kiln_build_binary(const kiln_lprog *p, const kiln_build_options *o, const char *out,
                       kiln_diag *d) {
  static const kiln_build_options defaults = {0};
  if (!o) o = &defaults;
  if (!out || !*out) {
    kiln_diag_error(d, NULL, "no output path given");
    return false;
  }
  const char *target = o->target && *o->target ? o->target : "native";
  args target_args = {0};
  if (!target_flags(target, &target_args)) {
    kiln_diag_error(d, "--target",
                    "unknown target '%s' (expected native, native-noamx, avx512, avx2 or generic)",
                    target);
    return false;
  }
  char inc[PATH_MAX], lib[PATH_MAX];
  if (!kiln_find_runtime(inc, lib, (int)sizeof(inc))) {
    kiln_diag_error(d, NULL,
                    "cannot find the Kiln runtime (kiln_runtime.h and libkiln-runtime.a); set "
                    "KILN_RUNTIME_DIR to the directory holding both");
    args_free(&target_args);
    return false;
  }

  // Names: OUT's directory and file name; the generated sources' base name.
  char *out_dir = strdup_x(out);
  char *slash = strrchr(out_dir, '/');
  const char *out_base = slash ? slash + 1 : out;
  if (slash == out_dir)
    out_dir[1] = 0;
  else if (slash)
    *slash = 0;
  else
    snprintf(out_dir, strlen(out_dir) + 1, ".");
  if (!*out_base) {
    kiln_diag_error(d, out, "the output path names a directory, not a file");
    free(out_dir);
    args_free(&target_args);
    return false;
  }
  struct stat dir_st;
  if (stat(out_dir, &dir_st) != 0 || !S_ISDIR(dir_st.st_mode)) {
    kiln_diag_error(d, out, "the output directory %s does not exist", out_dir);
    free(out_dir);
    args_free(&target_args);
    return false;
  }
  char ident[64];
  const char *model = kiln_c_model_ident(p, ident, sizeof(ident));
  bool out_named = include_safe(out_base);
  const char *src_base = out_named ? out_base : model;

  const char *tmp_root = getenv("TMPDIR");
  if (!tmp_root || !*tmp_root) tmp_root = "/tmp";
  char *tmp_dir = cat3(tmp_root, "/kiln-build-", "XXXXXX");
  char *c_path = NULL, *h_path = NULL, *exe_tmp = NULL, *w_path = NULL, *g_c_path = NULL;
  bool adversarial = o->train && o->train->adversarial;
  kiln_c_file weights = {0};
  args cmd = {0};
  bool ok = false, have_tmp_dir = false;

  if (!mkdtemp(tmp_dir)) {
    kiln_diag_error(d, tmp_dir, "cannot create a temporary directory: %s", strerror(errno));
    goto done;
  }
  have_tmp_dir = true;
  kiln_c_options co = {.embed_weights = o->embed_weights,
                       .main_stub = true,
                       .train = o->train,
                       .train_glue_only = o->train && o->extra_object};
  if (!kiln_c_write_sources(p, &co, tmp_dir, src_base, d)) goto done;
  if (adversarial && !(g_c_path = write_generator_sources(o, tmp_dir, src_base, d))) goto done;
  c_path = cat3(tmp_dir, "/", src_base);
  h_path = cat3(c_path, ".h", "");
  {
    char *c = cat3(c_path, ".c", "");
    free(c_path);
    c_path = c;
  }
  if (o->keep_sources) {  // before compiling, so a failed build can be inspected
    char *dst_c = cat3(out_dir, "/", src_base), *dst_h = cat3(dst_c, ".h", "");
    char *dst_c2 = cat3(dst_c, ".c", "");
    bool copied = copy_file(c_path, dst_c2, d) && copy_file(h_path, dst_h, d);
    free(dst_c);
    free(dst_c2);
    free(dst_h);
    if (!copied) goto done;
  }

  // The weights go to a temporary file first, renamed only once the executable is built.
  if (!o->embed_weights) {
    w_path = cat3(out, ".weights", "");
    if (p->weights_bytes > 0 && !p->weights) {
      kiln_diag_error(d, w_path, "the loop program has no weights payload");
      goto done;
    }
    if (!kiln_c_file_open(&weights, w_path, d)) goto done;
    fclose(weights.f);
    weights.f = NULL;
    char err[512] = "";
    static const unsigned char none[1] = {0};
    int st = kiln_weights_write(weights.tmp, p->weights ? p->weights : none,
                                (size_t)p->weights_bytes, err, sizeof(err));
    if (st != KILN_OK) {
      kiln_diag_error(d, w_path, "%s", err[0] ? err : kiln_status_str(st));
      goto done;
    }
  }

  // The executable: compiled to OUT.tmp.XXXXXX beside OUT.
  exe_tmp = cat3(out, ".tmp.", "XXXXXX");
  int fd = mkstemp(exe_tmp);
  if (fd < 0) {
    kiln_diag_error(d, out, "cannot create a temporary file beside it: %s", strerror(errno));
    free(exe_tmp);
    exe_tmp = NULL;
    goto done;
  }
  close(fd);

  const char *cc = o->cc && *o->cc ? o->cc : getenv("CC");
  args_split(&cmd, cc && *cc ? cc : "cc");
  if (cmd.n == 0) args_add(&cmd, "cc");
  static const char *const base_flags[] = {"-std=c17", "-O3",     "-fopenmp",
                                           "-Wall",    "-Wextra", "-Werror"};
  for (size_t i = 0; i < sizeof(base_flags) / sizeof(base_flags[0]); i++)
    args_add(&cmd, base_flags[i]);
  for (int i = 0; i < target_args.n; i++) args_add(&cmd, target_args.v[i]);
  if (strcmp(KILN_SANITIZE, "none") != 0 && strcmp(KILN_SANITIZE, "") != 0) {
    // The runtime library is instrumented too and needs the same sanitizer runtime.
    char *f = cat3("-fsanitize=", KILN_SANITIZE, "");
    args_add(&cmd, f);
    free(f);
  }
  {
    char *f = cat3("-I", inc, "");
    args_add(&cmd, f);
    free(f);
    args_add(&cmd, c_path);
    if (g_c_path) args_add(&cmd, g_c_path);
    if (o->extra_object) args_add(&cmd, o->extra_object);
    // A data-parallel trainer: its MPI library comes before the runtime it calls into.
    if (o->train && o->train->distributed && !add_mpi_flags(&cmd, lib, d)) goto done;
    f = cat3(lib, "/libkiln-runtime.a", "");
    args_add(&cmd, f);
    free(f);
  }
  if (o->train) args_add(&cmd, "-lz");       // the trainer reads .gz datasets
  if (o->train) args_add(&cmd, "-lpng16");   // and plots its learning curves (runtime/plot.c)
  if (o->train) args_add(&cmd, "-pthread");  // and prepares batches on a worker thread
  args_add(&cmd, "-lm");
  args_add(&cmd, "-o");
  args_add(&cmd, exe_tmp);
  const char *extra = o->extra_cflags ? o->extra_cflags : getenv("KILN_CFLAGS");
  args_split(&cmd, extra);
  KILN_VEC_PUSH(cmd.v, cmd.n, cmd.cap, NULL);
  cmd.n--;  // keep the terminating NULL out of the count
  if (o->verbose) print_command(&cmd);
  if (!run_command(cmd.v, d)) goto done;

  mode_t mask = umask(0);
  umask(mask);
  if (chmod(exe_tmp, 0777 & ~mask) != 0) {
    kiln_diag_error(d, exe_tmp, "cannot make executable: %s", strerror(errno));
    goto done;
  }
  if (adversarial && !write_generator_weights(o, out, d)) goto done;
  if (!o->embed_weights) {
    if (kiln_rename_into_place(weights.tmp, weights.path) != 0) {
      kiln_diag_error(d, w_path, "cannot rename %s into place: %s", weights.tmp, strerror(errno));
      goto done;
    }
    free(weights.tmp);
    weights.tmp = NULL;
  }
  if (kiln_rename_into_place(exe_tmp, out) != 0) {
    kiln_diag_error(d, out, "cannot rename %s into place: %s", exe_tmp, strerror(errno));
    goto done;
  }
  free(exe_tmp);
  exe_tmp = NULL;
  ok = true;

done:
  if (exe_tmp) unlink(exe_tmp);
  kiln_c_file_abort(&weights);  // removes the temporary weights file unless renamed
  if (have_tmp_dir) remove_dir(tmp_dir);
  free(exe_tmp);
  free(w_path);
  free(c_path);
  free(g_c_path);
  free(h_path);
  free(tmp_dir);
  free(out_dir);
  args_free(&cmd);
  args_free(&target_args);
  return ok;
}

// Backends render a loop program. The C backend writes NAME.c, NAME.h and NAME.weights;
// `kiln build` compiles them with the runtime into a standalone binary.
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <stdbool.h>

#include "../ir/diag.h"
#include "../ir/loop.h"

typedef struct kiln_c_options {
  bool embed_weights;  // inline the weights payload as a C array instead of NAME.weights
  bool main_stub;      // also emit `int main` calling kiln_main (for kiln build)
} kiln_c_options;

// Renders p as C17 into the open files. `h_name` is the header's file name, as #included.
bool kiln_emit_c_source(const kiln_lprog *p, const kiln_c_options *o, const char *h_name, FILE *c);
bool kiln_emit_c_header(const kiln_lprog *p, const kiln_c_options *o, FILE *h);
// Writes DIR/NAME.c, DIR/NAME.h and (unless embedded) DIR/NAME.weights, each through a temporary
// file renamed into place. Creates DIR if needed.
bool kiln_emit_c_files(const kiln_lprog *p, const kiln_c_options *o, const char *dir, kiln_diag *d);

typedef struct kiln_build_options {
  const char *cc;       // compiler command; default $CC or "cc"
  const char *target;   // native | avx512 | avx2 | generic
  const char *extra_cflags;  // appended (e.g. sanitizers); default $KILN_CFLAGS
  bool embed_weights;
  bool keep_sources;    // leave the generated C beside the binary as OUT.c / OUT.h
  bool verbose;         // print the compiler command line
} kiln_build_options;

// Compiles p into the executable `out` (and `out.weights` unless embedded), linked with the
// runtime library. Writes through temporary files renamed into place.
bool kiln_build_binary(const kiln_lprog *p, const kiln_build_options *o, const char *out, kiln_diag *d);

// Where the runtime's header and static library are: $KILN_RUNTIME_DIR, the build tree, or the
// install prefix. Returns false if none has them.
bool kiln_find_runtime(char *inc_dir, char *lib_dir, int size);

#endif

// Shared helpers of the fuzz harnesses (tests/fuzz, docs/testing.md). Every harness defines
// LLVMFuzzerTestOneInput(); it is linked either with libFuzzer (clang, -Dfuzz=true) or with
// replay.c, which runs saved inputs through it (the regression tests of the normal build).
#ifndef KILN_FUZZ_H
#define KILN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Writes bytes to NAME in this process's private scratch directory (created on first use under
// $TMPDIR or /tmp, removed at exit) and returns the file's path (static storage per NAME slot:
// valid until the next call with the same name).
const char *fuzz_file(const char *name, const void *bytes, size_t n);
// The scratch directory itself.
const char *fuzz_dir(void);
// /dev/null as a FILE, for diagnostics the harnesses do not need to see.
FILE *fuzz_devnull(void);

#endif

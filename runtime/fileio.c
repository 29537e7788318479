// File helpers shared by the writers: whole-file writes through a temporary file in the same
// directory that is renamed into place, so readers never see a half-written file.
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L  // mkstemp, fchmod, fileno
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln_rt_internal.h"

static const char tmp_suffix[] = ".tmp.XXXXXX";

// Writes all of data to fd, retrying short writes and interrupted calls.
static bool write_all(int fd, const void *data, size_t size) {
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= (size_t)n;
  }
  return true;
}

static bool write_parts(int fd, const kiln_rt_span *parts, int nparts) {
  for (int i = 0; i < nparts; i++) {
    if (parts[i].size > 0 && !write_all(fd, parts[i].data, parts[i].size)) return false;
  }
  return true;
}

// Fills the temporary file, flushes it to disk (so the rename never exposes a file whose data
// a crash could lose) and closes fd; false (errno set) on any failure.
static bool fill_and_close(int fd, const kiln_rt_span *parts, int nparts) {
  bool ok = fchmod(fd, 0644) == 0 && write_parts(fd, parts, nparts) && fsync(fd) == 0;
  int saved = errno;
  if (close(fd) != 0 && ok) return false;
  errno = saved;
  return ok;
}

int kiln_rt_write_atomic(const char *path, const kiln_rt_span *parts, int nparts, char *err,
                         size_t errlen) {
  size_t len = strlen(path);
  char *tmp = malloc(len + sizeof tmp_suffix);
  if (!tmp) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  memcpy(tmp, path, len);
  memcpy(tmp + len, tmp_suffix, sizeof tmp_suffix);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    kiln_rt_errf(err, errlen, "%s: cannot create a temporary file beside it: %s", path,
                 strerror(errno));
    free(tmp);
    return KILN_ERR_IO;
  }
  int status = KILN_OK;
  if (!fill_and_close(fd, parts, nparts)) {
    kiln_rt_errf(err, errlen, "%s: write failed: %s", path, strerror(errno));
    status = KILN_ERR_IO;
  } else if (kiln_rename_into_place(tmp, path) != 0) {
    kiln_rt_errf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    status = KILN_ERR_IO;
  }
  if (status != KILN_OK) unlink(tmp);
  free(tmp);
  return status;
}

// Copies file `from` into the existing special file `to` (a device or a FIFO: /dev/null,
// /dev/stdout), which must not be replaced by a regular file.
static int copy_into(const char *from, const char *to) {
  int in = open(from, O_RDONLY), out = in >= 0 ? open(to, O_WRONLY) : -1;
  char buf[1 << 16];
  ssize_t n = 0;
  bool ok = out >= 0;
  while (ok && (n = read(in, buf, sizeof buf)) != 0)
    ok = n > 0 ? write_all(out, buf, (size_t)n) : errno == EINTR;
  int saved = errno;
  if (in >= 0) close(in);
  if (out >= 0 && close(out) != 0 && ok) ok = false, saved = errno;
  if (ok) unlink(from);
  errno = saved;
  return ok ? 0 : -1;
}

int kiln_rename_into_place(const char *tmp, const char *path) {
  struct stat st;
  bool special = stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
  return special ? copy_into(tmp, path) : rename(tmp, path);
}

bool kiln_rt_file_size(FILE *f, uint64_t *size) {
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = (uint64_t)st.st_size;
  return true;
}

#include "pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kiln_pool_block {
  kiln_pool_block *next;
  size_t used, size;
  _Alignas(16) unsigned char data[];
};

enum { POOL_BLOCK = 64 * 1024 };

static void out_of_memory(size_t bytes) {
  fprintf(stderr, "kiln: internal error: out of memory allocating %zu bytes\n", bytes);
  exit(1);
}

void *kiln_xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) out_of_memory(bytes);
  return p;
}

void *kiln_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) out_of_memory(n * size);
  return p;
}

void *kiln_pool_alloc(kiln_pool *p, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  kiln_pool_block *b = p->head;
  if (!b || b->used + bytes > b->size) {
    size_t size = bytes > POOL_BLOCK ? bytes : POOL_BLOCK;
    b = kiln_xmalloc(sizeof(*b) + size);
    b->next = p->head;
    b->used = 0;
    b->size = size;
    p->head = b;
  }
  void *r = b->data + b->used;
  b->used += bytes;
  memset(r, 0, bytes);
  return r;
}

char *kiln_pool_strdup(kiln_pool *p, const char *s) {
  size_t n = strlen(s) + 1;
  char *r = kiln_pool_alloc(p, n);
  memcpy(r, s, n);
  return r;
}

char *kiln_pool_printf(kiln_pool *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *tmp = NULL;
  int n = vasprintf(&tmp, fmt, ap);
  va_end(ap);
  if (n < 0) out_of_memory(strlen(fmt));
  char *r = kiln_pool_strdup(p, tmp);
  free(tmp);
  return r;
}

void kiln_pool_free(kiln_pool *p) {
  while (p->head) {
    kiln_pool_block *next = p->head->next;
    free(p->head);
    p->head = next;
  }
}

void *kiln_grow(void *ptr, int *cap, int need, size_t elem) {
  if (need <= *cap) return ptr;
  int c = *cap ? *cap * 2 : 8;
  while (c < need) c *= 2;
  void *r = realloc(ptr, (size_t)c * elem);
  if (!r) out_of_memory((size_t)c * elem);
  *cap = c;
  return r;
}

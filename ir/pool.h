// A bump allocator: IR objects live in a pool and are freed together.
#ifndef KILN_IR_POOL_H
#define KILN_IR_POOL_H

#include <stddef.h>

typedef struct kiln_pool_block kiln_pool_block;
typedef struct kiln_pool {
  kiln_pool_block *head;
} kiln_pool;

void *kiln_pool_alloc(kiln_pool *p, size_t bytes);  // zeroed, 16-byte aligned; aborts on OOM
char *kiln_pool_strdup(kiln_pool *p, const char *s);
char *kiln_pool_printf(kiln_pool *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kiln_pool_free(kiln_pool *p);

// Growable array helper used across the compiler: KILN_VEC_PUSH(ptr, count, cap, value).
void *kiln_grow(void *ptr, int *cap, int need, size_t elem);
#define KILN_VEC_PUSH(ptr, count, cap, value)                      \
  do {                                                             \
    (ptr) = kiln_grow((ptr), &(cap), (count) + 1, sizeof(*(ptr))); \
    (ptr)[(count)++] = (value);                                    \
  } while (0)

// Allocation that aborts with a message instead of returning NULL.
void *kiln_xmalloc(size_t bytes);
void *kiln_xcalloc(size_t n, size_t size);

#endif

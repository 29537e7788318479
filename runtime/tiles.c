// The loop IR's tile dot product (LS_TILEDOT, ir/loop.h) on AMX: kiln_tile_dot and the permission
// request (kiln_tiles_init). Only code compiled for an AMX host (kiln --target native there)
// calls them; the functions carry the AMX target attribute, so the library builds anywhere.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // syscall
#endif
#include <stdbool.h>
#include <string.h>

#include "kiln_runtime.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };

// Linux grants the tile data state to a process only when asked, once, before the first tile
// instruction (otherwise that instruction raises SIGILL).
int kiln_tiles_init(void) {
  static int status = -1;
  if (status < 0) {
    __builtin_cpu_init();
    bool cpu = __builtin_cpu_supports("avx512f");  // AMX hosts have it; the bits are checked next
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    cpu = cpu && (d >> 24 & 1) && (d >> 25 & 1);  // AMX-TILE, AMX-INT8
    status = cpu && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
                 ? KILN_OK
                 : KILN_ERR_CPU;
  }
  return status;
}

#define KILN_AMX __attribute__((target("amx-tile,amx-int8")))

// Palette 1's 64-byte configuration: rows and bytes per row of each of the 8 tile registers.
typedef struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

// Palette 1's configuration for tiles of rows x cols sums over chunk bytes of k. Tiles: C (i, j)
// = 2 i + j (i32 sums, rows of A tile i by columns of B tile j), A i = 4 + i (u8, chunk bytes of
// k), B j = 6 + j (i8, chunk / 4 rows of 16 columns x 4 bytes).
static void set_config(tile_config *cfg, int64_t rows, int64_t cols, int64_t chunk) {
  memset(cfg, 0, sizeof *cfg);
  cfg->palette = 1;
  for (int i = 0; i < 2; i++) {
    int64_t r = rows - 16 * i > 16 ? 16 : rows - 16 * i,
            n = cols - 16 * i > 16 ? 16 : cols - 16 * i;
    for (int j = 0; j < 2 && r > 0; j++) {
      int64_t nj = cols - 16 * j > 16 ? 16 : cols - 16 * j;
      if (nj > 0) cfg->rows[2 * i + j] = (uint8_t)r, cfg->colsb[2 * i + j] = (uint16_t)(4 * nj);
    }
    if (r > 0) cfg->rows[4 + i] = (uint8_t)r, cfg->colsb[4 + i] = (uint16_t)chunk;
    if (n > 0) cfg->rows[6 + i] = (uint8_t)(chunk / 4), cfg->colsb[6 + i] = (uint16_t)(4 * n);
  }
}

// Loads that configuration unless it is this thread's current one (LDTILECFG is slow and zeroes
// the tiles, which are stored before the next statement).
KILN_AMX static void configure(int64_t rows, int64_t cols, int64_t chunk) {
  static _Thread_local int64_t current[3];
  if (current[0] == rows && current[1] == cols && current[2] == chunk) return;
  current[0] = rows, current[1] = cols, current[2] = chunk;
  tile_config cfg;
  set_config(&cfg, rows, cols, chunk);
  // gcc's _tile_loadconfig tells the compiler it reads 8 bytes: make all 64 bytes stored first
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

typedef struct tile_args {
  int32_t *c;
  const uint8_t *a;
  const int8_t *w;
  int64_t c_ld, a_ld, run_ld, run_k, k, w_ld;
} tile_args;

// The products of k bytes [k0, k0 + chunk) of every run, added to the C tiles (mt x nt of them).
#define KILN_TILE_STEP(mt, nt)                                 \
  do {                                                         \
    for (int64_t s = 0; s < t->k / t->run_k; s++)              \
      for (int64_t k0 = first; k0 < last; k0 += 64) {          \
        const uint8_t *a = t->a + s * t->run_ld + k0;          \
        const int8_t *w = t->w + (s * t->run_k + k0) * 16;     \
        _tile_loadd(4, a, t->a_ld);                            \
        if (mt > 1) _tile_loadd(5, a + 16 * t->a_ld, t->a_ld); \
        _tile_loadd(6, w, 64);                                 \
        if (nt > 1) _tile_loadd(7, w + t->w_ld, 64);           \
        _tile_dpbusd(0, 4, 6);                                 \
        if (nt > 1) _tile_dpbusd(1, 4, 7);                     \
        if (mt > 1) _tile_dpbusd(2, 5, 6);                     \
        if (mt > 1 && nt > 1) _tile_dpbusd(3, 5, 7);           \
      }                                                        \
  } while (0)

// C tiles from (load) or to memory.
#define KILN_TILE_MOVE(op, mt, nt)                             \
  do {                                                         \
    int64_t ld = t->c_ld * 4;                                  \
    op(0, t->c, ld);                                           \
    if (nt > 1) op(1, t->c + 16, ld);                          \
    if (mt > 1) op(2, t->c + 16 * t->c_ld, ld);                \
    if (mt > 1 && nt > 1) op(3, t->c + 16 * t->c_ld + 16, ld); \
  } while (0)

// Chunks [first, last) of each run, 64 bytes each but the last; `fresh`: C starts at 0.
#define KILN_TILE_PASS(mt, nt)             \
  do {                                     \
    if (fresh) {                           \
      _tile_zero(0);                       \
      if (nt > 1) _tile_zero(1);           \
      if (mt > 1) _tile_zero(2);           \
      if (mt > 1 && nt > 1) _tile_zero(3); \
    } else {                               \
      KILN_TILE_MOVE(_tile_loadd, mt, nt); \
    }                                      \
    KILN_TILE_STEP(mt, nt);                \
    KILN_TILE_MOVE(_tile_stored, mt, nt);  \
  } while (0)

KILN_AMX static void pass(const tile_args *t, int mt, int nt, int64_t first, int64_t last,
                          bool fresh) {
  if (mt > 1 && nt > 1)
    KILN_TILE_PASS(2, 2);
  else if (mt > 1)
    KILN_TILE_PASS(2, 1);
  else if (nt > 1)
    KILN_TILE_PASS(1, 2);
  else
    KILN_TILE_PASS(1, 1);
}

// 16 x 16 sums src[i * 32 + j] (i < 16, j < 16) stored transposed: dst[j * ld + i] for j < cols,
// i where `rows` has bit i. 128-bit lanes: after the 32- and 64-bit interleaves, u[4 i + q]'s lane
// L holds column 4 L + q of rows 4 i to 4 i + 3; a 4 x 4 transpose of lanes finishes.
__attribute__((target("avx512f"))) static void transpose16(const int32_t *src, int32_t *dst,
                                                           int64_t ld, int64_t cols,
                                                           __mmask16 rows) {
  __m512i r[16], u[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i++) r[i] = _mm512_load_si512(src + 32 * i);
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    u[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    u[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_unpacklo_epi64(u[4 * i], u[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(u[4 * i], u[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(u[4 * i + 1], u[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(u[4 * i + 1], u[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) {
    __m512i a = _mm512_shuffle_i32x4(r[q], r[4 + q], 0x44);
    __m512i b = _mm512_shuffle_i32x4(r[q], r[4 + q], 0xee);
    __m512i c = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0x44);
    __m512i d = _mm512_shuffle_i32x4(r[8 + q], r[12 + q], 0xee);
    u[q] = _mm512_shuffle_i32x4(a, c, 0x88), u[4 + q] = _mm512_shuffle_i32x4(a, c, 0xdd);
    u[8 + q] = _mm512_shuffle_i32x4(b, d, 0x88), u[12 + q] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
#pragma GCC unroll 16
  for (int64_t j = 0; j < 16; j++)
    if (j < cols) _mm512_mask_storeu_epi32(dst + j * ld, rows, u[j]);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

void kiln_tile_dot(int32_t *c, int64_t c_row, int64_t c_col, const uint8_t *a, int64_t a_ld,
                   int64_t run_ld, int64_t run_k, int64_t k, const int8_t *w, int64_t w_ld,
                   int64_t rows, int64_t cols) {
  // Sums stored by columns (c_col > 1) are made row by row in `sums`, then transposed.
  static _Thread_local int32_t sums[32 * 32] __attribute__((aligned(64)));
  bool by_cols = c_col != 1;
  tile_args t = {by_cols ? sums : c, a, w, by_cols ? 32 : c_row, a_ld, run_ld, run_k, k, w_ld};
  int mt = rows > 16 ? 2 : 1, nt = cols > 16 ? 2 : 1;
  int64_t whole = run_k / 64 * 64, tail = run_k - whole;
  if (whole) {
    configure(rows, cols, 64);
    pass(&t, mt, nt, 0, whole, true);
  }
  if (tail) {  // the rest of each run: A tiles of `tail` bytes, B tiles of tail / 4 rows
    configure(rows, cols, tail);
    pass(&t, mt, nt, whole, run_k, whole == 0);
  }
  for (int64_t i = 0; by_cols && i < rows; i += 16)
    for (int64_t j = 0; j < cols; j += 16) {
      __mmask16 valid = (__mmask16)((1u << min64(16, rows - i)) - 1);
      transpose16(sums + 32 * i + j, c + j * c_col + i, c_col, min64(16, cols - j), valid);
    }
}
#else
int kiln_tiles_init(void) { return KILN_ERR_CPU; }
void kiln_tile_dot(int32_t *c, int64_t c_row, int64_t c_col, const uint8_t *a, int64_t a_ld,
                   int64_t run_ld, int64_t run_k, int64_t k, const int8_t *w, int64_t w_ld,
                   int64_t rows, int64_t cols) {
  (void)c, (void)c_row, (void)c_col, (void)a, (void)a_ld, (void)run_ld, (void)run_k, (void)k,
      (void)w, (void)w_ld;
  (void)rows, (void)cols;
}
#endif

// Learning-curve plots and image grids (plot.h): everything is drawn here into an RGB buffer
// (frames, grid lines, curves as 2-pixel lines with square markers, tick labels and legends in a
// 5x7 bitmap font scaled 2x), and libpng's simplified API encodes the buffer.
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln_rt_internal.h"

enum { FONT_SCALE = 2, GLYPH_W = 5, GLYPH_H = 7, ADVANCE = (GLYPH_W + 1) * FONT_SCALE };
enum { MARGIN_LEFT = 76, MARGIN_RIGHT = 16, MARGIN_TOP = 40, MARGIN_BOTTOM = 56 };

// ---- The 5x7 font: 7 rows of 5 bits, the most significant bit leftmost ----

typedef struct glyph {
  char c;
  uint8_t rows[GLYPH_H];
} glyph;

static const glyph font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}},
    {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}},
    {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}},
    {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
};

static const uint8_t *glyph_rows(char c) {
  for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
    if (font[i].c == c) return font[i].rows;
  return NULL;  // drawn as a blank
}

// ---- Pixels ----

static const uint8_t BLACK[3] = {0, 0, 0}, GRID[3] = {225, 225, 225}, WHITE[3] = {255, 255, 255};

static void put(kiln_canvas *c, int x, int y, const uint8_t *rgb) {
  if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
  memcpy(c->rgb + ((size_t)y * (size_t)c->width + (size_t)x) * 3, rgb, 3);
}

static void fill_rect(kiln_canvas *c, int x0, int y0, int w, int h, const uint8_t *rgb) {
  for (int y = y0; y < y0 + h; y++)
    for (int x = x0; x < x0 + w; x++) put(c, x, y, rgb);
}

// Bresenham, with a 2x2 brush.
static void line(kiln_canvas *c, int x0, int y0, int x1, int y1, const uint8_t *rgb) {
  int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  for (int e = dx + dy;;) {
    fill_rect(c, x0, y0, 2, 2, rgb);
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * e;
    if (e2 >= dy) e += dy, x0 += sx;
    if (e2 <= dx) e += dx, y0 += sy;
  }
}

static void text(kiln_canvas *c, int x, int y, const char *s, const uint8_t *rgb) {
  for (; *s; s++, x += ADVANCE) {
    const uint8_t *rows = glyph_rows(*s);
    for (int r = 0; rows && r < GLYPH_H; r++)
      for (int b = 0; b < GLYPH_W; b++)
        if (rows[r] & (0x10 >> b))
          fill_rect(c, x + b * FONT_SCALE, y + r * FONT_SCALE, FONT_SCALE, FONT_SCALE, rgb);
  }
}

static int text_width(const char *s) { return (int)strlen(s) * ADVANCE - FONT_SCALE; }

// ---- Axes ----

typedef struct axis {
  double lo, hi, step;  // tick positions: multiples of step in [lo, hi]
  int decimals;
} axis;

// A "nice" step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over [lo, hi].
static axis nice_axis(double lo, double hi, int ticks) {
  if (!(hi > lo)) lo -= 0.5, hi += 0.5;
  double raw = (hi - lo) / ticks, p = pow(10, floor(log10(raw))), f = raw / p;
  double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  return (axis){floor(lo / step) * step, ceil(hi / step) * step, step, decimals};
}

typedef struct frame {
  int x0, y0, x1, y1;  // the plotting area, pixels (y0 top)
  axis xa, ya;
} frame;

static int px(const frame *f, double x) {
  return f->x0 + (int)lround((x - f->xa.lo) / (f->xa.hi - f->xa.lo) * (f->x1 - f->x0));
}
static int py(const frame *f, double y) {
  return f->y1 - (int)lround((y - f->ya.lo) / (f->ya.hi - f->ya.lo) * (f->y1 - f->y0));
}

static void draw_axes(kiln_canvas *c, const frame *f, const char *x_label) {
  char label[32];
  for (double v = f->ya.lo; v <= f->ya.hi + f->ya.step * 1e-6; v += f->ya.step) {
    int y = py(f, v);
    line(c, f->x0, y, f->x1, y, GRID);
    snprintf(label, sizeof label, "%.*f", f->ya.decimals, fabs(v) < f->ya.step * 1e-6 ? 0.0 : v);
    text(c, f->x0 - 8 - text_width(label), y - GLYPH_H * FONT_SCALE / 2, label, BLACK);
  }
  for (double v = f->xa.lo; v <= f->xa.hi + 1e-6; v += f->xa.step) {
    int x = px(f, v);
    line(c, x, f->y1, x, f->y1 + 5, BLACK);
    snprintf(label, sizeof label, "%.0f", v);
    text(c, x - text_width(label) / 2, f->y1 + 10, label, BLACK);
  }
  line(c, f->x0, f->y0, f->x0, f->y1, BLACK);
  line(c, f->x0, f->y1, f->x1, f->y1, BLACK);
  text(c, (f->x0 + f->x1 - text_width(x_label)) / 2, f->y1 + 34, x_label, BLACK);
}

static void draw_curve(kiln_canvas *c, const frame *f, const kiln_curve *k) {
  int last_x = 0, last_y = 0;
  bool have_last = false;
  for (int i = 0; i < k->n; i++) {
    if (!isfinite(k->y[i])) {
      have_last = false;
      continue;
    }
    int x = px(f, i + 1), y = py(f, k->y[i]);
    if (have_last) line(c, last_x, last_y, x, y, k->rgb);
    fill_rect(c, x - 2, y - 2, 6, 6, k->rgb);
    last_x = x, last_y = y, have_last = true;
  }
}

static void draw_panel(kiln_canvas *c, const kiln_panel *p, int left, int width,
                       const char *x_label) {
  double lo = INFINITY, hi = -INFINITY;
  int n = 1;
  for (int k = 0; k < p->n_curves; k++) {
    if (p->curves[k].n > n) n = p->curves[k].n;
    for (int i = 0; i < p->curves[k].n; i++)
      if (isfinite(p->curves[k].y[i]))
        lo = fmin(lo, p->curves[k].y[i]), hi = fmax(hi, p->curves[k].y[i]);
  }
  if (!isfinite(lo)) lo = 0, hi = 1;
  frame f = {.x0 = left + MARGIN_LEFT,
             .y0 = MARGIN_TOP,
             .x1 = left + width - MARGIN_RIGHT,
             .y1 = c->height - MARGIN_BOTTOM,
             .xa = nice_axis(1, n > 1 ? n : 2, 8),
             .ya = nice_axis(lo, hi, 5)};
  if (f.xa.lo < 1) f.xa.lo = f.xa.step < 1 ? 1 : 0;
  if (f.xa.step < 1) f.xa = (axis){1, n > 1 ? n : 2, 1, 0};
  draw_axes(c, &f, x_label);
  for (int k = 0; k < p->n_curves; k++) draw_curve(c, &f, &p->curves[k]);
  text(c, f.x0, 12, p->title ? p->title : "", BLACK);
  int x = f.x1;  // legend: right-aligned at the top
  for (int k = p->n_curves - 1; k >= 0; k--) {
    const char *label = p->curves[k].label ? p->curves[k].label : "";
    x -= text_width(label);
    text(c, x, 12, label, p->curves[k].rgb);
    fill_rect(c, x - 22, 12 + GLYPH_H * FONT_SCALE / 2 - 2, 16, 4, p->curves[k].rgb);
    x -= 40;
  }
}

static int render(const kiln_panel *panels, int n_panels, int width, int height,
                  const char *x_label, kiln_canvas *canvas) {
  if (n_panels < 1 || width < 64 * n_panels || height < 64 || width > 8192 || height > 8192)
    return KILN_ERR_ARG;
  canvas->width = width, canvas->height = height;
  canvas->rgb = malloc((size_t)width * (size_t)height * 3);
  if (!canvas->rgb) return KILN_ERR_NOMEM;
  fill_rect(canvas, 0, 0, width, height, WHITE);
  for (int i = 0; i < n_panels; i++)
    draw_panel(canvas, &panels[i], i * width / n_panels, width / n_panels, x_label);
  return KILN_OK;
}

// Writes 8-bit pixels (PNG_FORMAT_RGB or PNG_FORMAT_GRAY, rows top to bottom) to path as a PNG,
// through path.tmp renamed into place (a special file such as /dev/null is written to instead).
static int write_png(const char *path, const void *pixels, int width, int height,
                     png_uint_32 format, char *err, size_t errlen) {
  size_t n = strlen(path) + 8;
  char *tmp = malloc(n);
  if (!tmp) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  snprintf(tmp, n, "%s.tmp", path);
  png_image img = {.version = PNG_IMAGE_VERSION,
                   .width = (png_uint_32)width,
                   .height = (png_uint_32)height,
                   .format = format};
  int st = KILN_OK;
  if (!png_image_write_to_file(&img, tmp, 0, pixels, 0, NULL) ||
      kiln_rename_into_place(tmp, path) != 0) {
    kiln_rt_errf(err, errlen, "%s: cannot write the PNG: %s", path,
                 img.message[0] ? img.message : strerror(errno));
    unlink(tmp);
    st = KILN_ERR_IO;
  }
  png_image_free(&img);
  free(tmp);
  return st;
}

int kiln_plot_render(const kiln_panel *panels, int n_panels, int width, int height,
                     kiln_canvas *canvas) {
  return render(panels, n_panels, width, height, "epoch", canvas);
}

int kiln_plot_png(const char *path, const kiln_panel *panels, int n_panels, int width, int height,
                  char *err, size_t errlen) {
  return kiln_plot_png_x(path, panels, n_panels, width, height, "epoch", err, errlen);
}

int kiln_plot_png_x(const char *path, const kiln_panel *panels, int n_panels, int width, int height,
                    const char *x_label, char *err, size_t errlen) {
  kiln_canvas c;
  int st = render(panels, n_panels, width, height, x_label, &c);
  if (st != KILN_OK) {
    kiln_rt_errf(err, errlen, "%s: cannot draw the plot (%s)", path, kiln_status_str(st));
    return st;
  }
  st = write_png(path, c.rgb, width, height, PNG_FORMAT_RGB, err, errlen);
  free(c.rgb);
  return st;
}

// ---- Image grids ----

void kiln_image_grid_size(const kiln_image_grid *g, int *width, int *height) {
  int cols = g->n < g->cols ? g->n : g->cols, rows = (g->n + g->cols - 1) / g->cols;
  *width = cols * (g->w + g->pad) + g->pad;
  *height = rows * (g->h + g->pad) + g->pad;
}

static uint8_t to_byte(float v, float lo, float hi) {
  float t = hi > lo ? (v - lo) / (hi - lo) : 0.0f;
  t = t > 0 ? (t < 1 ? t : 1) : 0;  // NaN -> 0
  return (uint8_t)lrintf(255.0f * t);
}

void kiln_image_grid_render(const kiln_image_grid *g, uint8_t *gray) {
  int width, height;
  kiln_image_grid_size(g, &width, &height);
  memset(gray, 0, (size_t)width * (size_t)height);
  for (int k = 0; k < g->n; k++) {
    int x0 = g->pad + (k % g->cols) * (g->w + g->pad),
        y0 = g->pad + (k / g->cols) * (g->h + g->pad);
    const float *img = g->pixels + (size_t)k * (size_t)g->h * (size_t)g->w;
    for (int y = 0; y < g->h; y++)
      for (int x = 0; x < g->w; x++)
        gray[(size_t)(y0 + y) * (size_t)width + (size_t)(x0 + x)] =
            to_byte(img[(size_t)y * (size_t)g->w + (size_t)x], g->lo, g->hi);
  }
}

int kiln_image_grid_png(const char *path, const kiln_image_grid *g, char *err, size_t errlen) {
  if (!g || g->n < 1 || g->h < 1 || g->w < 1 || g->cols < 1 || g->pad < 0) {
    kiln_rt_errf(err, errlen, "%s: an image grid needs n, h, w, cols >= 1", path);
    return KILN_ERR_ARG;
  }
  int width, height;
  kiln_image_grid_size(g, &width, &height);
  uint8_t *gray = malloc((size_t)width * (size_t)height);
  if (!gray) {
    kiln_rt_errf(err, errlen, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  kiln_image_grid_render(g, gray);
  int st = write_png(path, gray, width, height, PNG_FORMAT_GRAY, err, errlen);
  free(gray);
  return st;
}

// ---- RGB pictures ----

int kiln_rgb_png(const char *path, const uint8_t *rgb, int width, int height, char *err,
                 size_t errlen) {
  if (!rgb || width < 1 || height < 1) {
    kiln_rt_errf(err, errlen, "%s: an RGB picture needs pixels and a size of at least 1 x 1", path);
    return KILN_ERR_ARG;
  }
  return write_png(path, rgb, width, height, PNG_FORMAT_RGB, err, errlen);
}

// Line plots of learning curves as PNG files (runtime/plot.c): panels side by side, each with its
// curves over epochs 1..n, axes, ticks labelled with a 5x7 bitmap font, and a legend. Drawn into
// an RGB buffer here; libpng only encodes it. Private to the runtime (and its tests).
#ifndef KILN_PLOT_H
#define KILN_PLOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kiln_curve {
  const char *label;  // legend text (lower-case letters, digits, '.', '-', ' ')
  const double *y;    // y[i] is epoch i + 1's value; non-finite values are skipped
  int n;
  uint8_t rgb[3];
} kiln_curve;

typedef struct kiln_panel {
  const char *title;  // same alphabet as the labels
  const kiln_curve *curves;
  int n_curves;
} kiln_panel;

typedef struct kiln_canvas {
  int width, height;
  uint8_t *rgb;  // width * height * 3, row-major
} kiln_canvas;

// Draws the panels side by side on a white canvas (the caller frees canvas->rgb).
int kiln_plot_render(const kiln_panel *panels, int n_panels, int width, int height,
                     kiln_canvas *canvas);
// Renders and writes an RGB PNG (through a temporary file renamed into place).
int kiln_plot_png(const char *path, const kiln_panel *panels, int n_panels, int width, int height,
                  char *err, size_t errlen);
// The same with another x axis label than "epoch" (an adversarial run's groups of steps).
int kiln_plot_png_x(const char *path, const kiln_panel *panels, int n_panels, int width, int height,
                    const char *x_label, char *err, size_t errlen);

// ---- Image grids (generative models' pictures: inputs vs reconstructions, samples, traversals)

// n grayscale images of h x w floats (row-major, image after image) tiled `cols` to a row,
// ceil(n / cols) rows, with a `pad`-pixel black border around and between the tiles. A value v
// becomes the byte round(255 * clamp((v - lo) / (hi - lo), 0, 1)).
typedef struct kiln_image_grid {
  const float *pixels;
  int n, h, w, cols, pad;
  float lo, hi;
} kiln_image_grid;

// The grid's size in pixels.
void kiln_image_grid_size(const kiln_image_grid *g, int *width, int *height);
// Renders the grid into gray[width * height] (from kiln_image_grid_size).
void kiln_image_grid_render(const kiln_image_grid *g, uint8_t *gray);
// Writes it as an 8-bit grayscale PNG, atomically (a temporary file renamed into place).
int kiln_image_grid_png(const char *path, const kiln_image_grid *g, char *err, size_t errlen);

// Writes width x height RGB pixels (rgb[(y * width + x) * 3 + c]) as an 8-bit RGB PNG,
// atomically (a temporary file renamed into place): the YOLO recipe's detections
// (tools/kiln-detect.c).
int kiln_rgb_png(const char *path, const uint8_t *rgb, int width, int height, char *err,
                 size_t errlen);

#endif

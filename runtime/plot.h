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

#endif

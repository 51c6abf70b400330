// Labelled image grids drawn with Cairo and written as PNG, atomically:
// show_batch's batch preview and predict's results use the same drawing.
#pragma once

#include <cairo.h>

#include <string>
#include <vector>

#include "stages/image/image.h"

namespace flowrun::stages {

struct GridTile {
  Image image;        // 8-bit RGB or gray
  std::string title;  // drawn under the image
  bool highlight = false;  // title in red (a wrong prediction)
};

// An encoded PNG and its size in pixels.
struct Png {
  std::string bytes;
  int width = 0, height = 0;
};

// Draws the tiles row by row, `columns` per row, each scaled to `tile_px`
// (the longer side), and writes the PNG to `path` via a temporary file.
// Returns the PNG written (the run's TensorBoard file shows it too).
// Throws std::runtime_error naming the file on failure.
Png write_image_grid(const std::string& path, const std::vector<GridTile>& tiles, int columns, int tile_px);

// A Cairo surface as PNG bytes; throws naming `what` on failure.
std::string encode_png(cairo_surface_t* surface, const std::string& what);

// Writes a Cairo surface as a PNG via a temporary file and a rename (the
// parent folder is made when missing). Throws naming the file on failure.
void write_png(const std::string& path, cairo_surface_t* surface);

}  // namespace flowrun::stages

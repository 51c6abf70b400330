#include "stages/report/image_grid.h"

#include <cairo.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "pipeline/atomic_file.h"

namespace flowrun::stages {

namespace {

// A Cairo surface holding the image's pixels (RGB24: 0x00RRGGBB per pixel).
cairo_surface_t* to_surface(const Image& image) {
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, image.width, image.height);
  cairo_surface_flush(surface);
  unsigned char* data = cairo_image_surface_get_data(surface);
  int stride = cairo_image_surface_get_stride(surface);
  for (int y = 0; y < image.height; ++y) {
    auto* row = reinterpret_cast<uint32_t*>(data + static_cast<size_t>(y) * stride);
    const uint8_t* src = image.row(y);
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* p = src + x * image.channels;
      uint32_t r = p[0], g = image.channels >= 3 ? p[1] : p[0], b = image.channels >= 3 ? p[2] : p[0];
      row[x] = (r << 16) | (g << 8) | b;
    }
  }
  cairo_surface_mark_dirty(surface);
  return surface;
}

}  // namespace

Png write_image_grid(const std::string& path, const std::vector<GridTile>& tiles, int columns, int tile_px) {
  if (tiles.empty()) throw std::runtime_error(path + ": nothing to draw");
  const int rows = (static_cast<int>(tiles.size()) + columns - 1) / columns;
  const int label_h = std::max(12, tile_px / 8), pad = 4;
  const int cell_w = tile_px + 2 * pad, cell_h = tile_px + label_h + 2 * pad;
  cairo_surface_t* canvas = cairo_image_surface_create(CAIRO_FORMAT_RGB24, columns * cell_w, rows * cell_h);
  cairo_t* cr = cairo_create(canvas);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  for (size_t i = 0; i < tiles.size(); ++i) {
    const GridTile& tile = tiles[i];
    const int x0 = static_cast<int>(i % columns) * cell_w + pad, y0 = static_cast<int>(i / columns) * cell_h + pad;
    if (!tile.image.empty()) {
      cairo_surface_t* picture = to_surface(tile.image);
      double scale = static_cast<double>(tile_px) / std::max(tile.image.width, tile.image.height);
      cairo_save(cr);
      cairo_translate(cr, x0 + (tile_px - tile.image.width * scale) / 2, y0 + (tile_px - tile.image.height * scale) / 2);
      cairo_scale(cr, scale, scale);
      cairo_set_source_surface(cr, picture, 0, 0);
      cairo_pattern_set_filter(cairo_get_source(cr), scale > 1 ? CAIRO_FILTER_NEAREST : CAIRO_FILTER_GOOD);
      cairo_paint(cr);
      cairo_restore(cr);
      cairo_surface_destroy(picture);
    }
    // The title, shrunk to fit the cell.
    double size = label_h * 0.8;
    cairo_set_font_size(cr, size);
    cairo_text_extents_t extents;
    cairo_text_extents(cr, tile.title.c_str(), &extents);
    if (extents.width > cell_w - 2) {
      size *= (cell_w - 2) / extents.width;
      cairo_set_font_size(cr, size);
      cairo_text_extents(cr, tile.title.c_str(), &extents);
    }
    if (tile.highlight) cairo_set_source_rgb(cr, 0.8, 0, 0);
    else cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, x0 + (tile_px - extents.width) / 2 - extents.x_bearing, y0 + tile_px + label_h * 0.85);
    cairo_show_text(cr, tile.title.c_str());
  }
  cairo_destroy(cr);
  Png png;
  png.width = cairo_image_surface_get_width(canvas);
  png.height = cairo_image_surface_get_height(canvas);
  try {
    png.bytes = encode_png(canvas, path);
    write_file_atomically(path, png.bytes);
  } catch (...) {
    cairo_surface_destroy(canvas);
    throw;
  }
  cairo_surface_destroy(canvas);
  return png;
}

std::string encode_png(cairo_surface_t* surface, const std::string& what) {
  std::string bytes;
  auto write = [](void* closure, const unsigned char* data, unsigned int length) {
    static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
    return CAIRO_STATUS_SUCCESS;
  };
  cairo_status_t status = cairo_surface_write_to_png_stream(surface, write, &bytes);
  if (status != CAIRO_STATUS_SUCCESS)
    throw std::runtime_error(what + ": error: cannot write PNG: " + cairo_status_to_string(status));
  return bytes;
}

void write_png(const std::string& path, cairo_surface_t* surface) {
  // Through the atomic writer: a temporary beside the target, flushed, renamed.
  write_file_atomically(path, encode_png(surface, path));
}

}  // namespace flowrun::stages

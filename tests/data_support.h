// Helpers for the data-path tests: images made in memory and written as
// JPEG/PNG files, image folders, and the stage directory stand-in.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "pipeline/stage.h"
#include "stages/image/image.h"

namespace flowrun::test {

// A smooth, colourful test image (gradients and a few shapes).
stages::Image pattern_image(int width, int height, int seed = 0);

std::vector<uint8_t> encode_jpeg(const stages::Image& image, int quality = 95, bool grayscale = false);
std::vector<uint8_t> encode_cmyk_jpeg(const uint8_t cmyk[4], int width, int height);
// color_type: PNG_COLOR_TYPE_RGB, _GRAY, _RGBA...; bit_depth 8 or 16.
// RGBA is opaque, or with `transparent_outside_disc` (8 bit) fully
// transparent outside a centred disc, the colour stored there unchanged.
std::vector<uint8_t> encode_png(const stages::Image& image, int color_type, int bit_depth = 8,
                                bool transparent_outside_disc = false);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

// root/<class>/<class>_<i>.jpg for each class, `per_class` images of w x h.
std::string make_jpeg_folder(const std::vector<std::string>& classes, int per_class, int width, int height);

// Builds stages from graph text outside any run, to test them directly.
class StageBench : public StageDirectory {
 public:
  explicit StageBench(const std::string& graph_text, uint64_t seed = 0);
  Stage& stage(const std::string& name);  // the first op of the named stage
  std::vector<Stage*> find(const std::string& name) const override;
  const ResolvedGraph* resolved_graph() const override { return &graph_; }

 private:
  ResolvedGraph graph_;
  RunInfo run_;
  Services services_;
  std::map<std::string, std::vector<std::unique_ptr<Stage>>> stages_;
};

}  // namespace flowrun::test

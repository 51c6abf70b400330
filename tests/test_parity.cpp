// Parity with torchvision: with no randomness, decode + resize + center_crop
// + normalize give the same tensor as torchvision's transforms on the same
// file (Debian's python3-torchvision is the oracle).
//
// Tolerance: max |difference| <= 1e-6 on normalized values. Both sides
// decode with libjpeg-turbo's default (accurate) settings, flowrun's resize
// reproduces PIL's fixed-point bilinear filter, and ToTensor + Normalize are
// the same float32 operations, so the tensors are equal; 1e-6 leaves room
// for float rounding only. (One 8-bit level is 1/255/0.229 = 0.017.)
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data_support.h"
#include "stages/data/sample.h"
#include "test_support.h"

using namespace flowrun;

namespace {

struct Case {
  std::string image;
  std::string resize_line;  // flowrun
  nlohmann::json resize;    // torchvision
  int center_crop = 0;
};

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<float> data(static_cast<size_t>(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  return data;
}

}  // namespace

TEST(Parity, EvalTransformsMatchTorchvision) {
  std::string dir = test::temp_dir();
  // Odd sizes, both orientations, JPEG (colour and grey) and PNG, up- and downscaling.
  test::write_file(dir + "/a.jpg", test::encode_jpeg(test::pattern_image(213, 160, 1), 90));
  test::write_file(dir + "/b.jpg", test::encode_jpeg(test::pattern_image(157, 241, 2), 85));
  test::write_file(dir + "/c.png", test::encode_png(test::pattern_image(61, 47, 3), PNG_COLOR_TYPE_RGB));
  test::write_file(dir + "/d.jpg", test::encode_jpeg(test::pattern_image(300, 200, 4), 92, true));
  std::vector<Case> cases = {
      {dir + "/a.jpg", "resize size=64", 64, 64},
      {dir + "/b.jpg", "resize size=100", 100, 96},
      {dir + "/c.png", "resize size=160", 160, 160},        // upscaling
      {dir + "/d.jpg", "resize height=72 width=90", {72, 90}, 0},  // exact size, as the recipe's val Resize([h, w])
      {dir + "/a.jpg", "resize size=160", 160, 150},
  };
  nlohmann::json jobs = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i)
    jobs.push_back({{"image", cases[i].image}, {"out", dir + "/out" + std::to_string(i) + ".f32"},
                    {"resize", cases[i].resize}, {"center_crop", cases[i].center_crop},
                    {"mean", {0.485, 0.456, 0.406}}, {"std", {0.229, 0.224, 0.225}}});
  std::ofstream(dir + "/jobs.json") << jobs.dump();
  std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_transforms.py' '" + dir +
                        "/jobs.json'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::string graph = "source = count\ndecode = decode\nresize = " + c.resize_line + "\n" +
                        (c.center_crop ? "crop = center_crop size=" + std::to_string(c.center_crop) + "\n" : "") +
                        "norm = normalize stats=imagenet in_batch=false\n";
    test::StageBench bench(graph);
    Item item;
    stages::Sample sample;
    sample.index = 0;
    sample.path = c.image;
    item.set(std::move(sample));
    for (const char* name : {"decode", "resize", "crop", "norm"})
      if (!bench.find(name).empty()) static_cast<TransformStage&>(bench.stage(name)).process(item);
    const stages::FloatImage& ours = item.get<stages::Sample>().tensor;
    std::vector<float> theirs = read_floats(dir + "/out" + std::to_string(i) + ".f32");
    ASSERT_EQ(ours.data.size(), theirs.size()) << c.image << " " << c.resize_line;
    // NaN-aware: a NaN on either side counts as an infinite difference
    // (std::max would keep the old maximum and let it pass).
    float max_difference = 0;
    for (size_t k = 0; k < theirs.size(); ++k) {
      const float d = std::abs(ours.data[k] - theirs[k]);
      max_difference = std::isnan(d) ? INFINITY : std::max(max_difference, d);
    }
    EXPECT_LE(max_difference, 1e-6f) << c.image << " " << c.resize_line << " crop " << c.center_crop;
  }
}

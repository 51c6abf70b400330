#include "data_support.h"

#include <png.h>
#include <turbojpeg.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "test_support.h"

namespace flowrun::test {

stages::Image pattern_image(int width, int height, int seed) {
  stages::Image image(width, height, 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t* p = image.row(y) + 3 * x;
      double cx = x - width * (0.3 + 0.1 * (seed % 3)), cy = y - height * 0.5;
      bool disc = cx * cx + cy * cy < (width * width) / 16.0;
      p[0] = static_cast<uint8_t>(disc ? 230 : 255.0 * x / std::max(1, width - 1));
      p[1] = static_cast<uint8_t>(disc ? 40 + 20 * (seed % 5) : 255.0 * y / std::max(1, height - 1));
      p[2] = static_cast<uint8_t>(128 + 100 * std::sin((x + 2 * y + 7 * seed) / 9.0));
    }
  return image;
}

std::vector<uint8_t> encode_jpeg(const stages::Image& image, int quality, bool grayscale) {
  tjhandle h = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(h, image.pixels.data(), image.width, 0, image.height, TJPF_RGB, &out, &size,
                       grayscale ? TJSAMP_GRAY : TJSAMP_420, quality, 0);
  if (rc != 0) throw std::runtime_error(tjGetErrorStr2(h));
  std::vector<uint8_t> bytes(out, out + size);
  tjFree(out);
  tjDestroy(h);
  return bytes;
}

std::vector<uint8_t> encode_cmyk_jpeg(const uint8_t cmyk[4], int width, int height) {
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * height * 4);
  for (size_t i = 0; i < pixels.size(); i += 4) std::memcpy(&pixels[i], cmyk, 4);
  tjhandle h = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  if (tjCompress2(h, pixels.data(), width, 0, height, TJPF_CMYK, &out, &size, TJSAMP_444, 95, 0) != 0)
    throw std::runtime_error(tjGetErrorStr2(h));
  std::vector<uint8_t> bytes(out, out + size);
  tjFree(out);
  tjDestroy(h);
  return bytes;
}

std::vector<uint8_t> encode_png(const stages::Image& image, int color_type, int bit_depth,
                                bool transparent_outside_disc) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = image.width;
  png.height = image.height;
  // Build the source pixels in the requested layout from the RGB image.
  const int channels = color_type == PNG_COLOR_TYPE_GRAY ? 1 : color_type == PNG_COLOR_TYPE_RGBA ? 4 : 3;
  png.format = (channels == 1 ? PNG_FORMAT_GRAY : channels == 4 ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) |
               (bit_depth == 16 ? PNG_FORMAT_FLAG_LINEAR : 0);
  const size_t n = static_cast<size_t>(image.width) * image.height;
  std::vector<uint16_t> wide(n * channels);
  std::vector<uint8_t> narrow(n * channels);
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < channels; ++c) {
      const double dx = static_cast<double>(i % image.width) - image.width / 2.0,
                   dy = static_cast<double>(i / image.width) - image.height / 2.0;
      const bool inside = dx * dx + dy * dy < image.width * image.height / 9.0;
      uint8_t v = c < 3 ? image.pixels[3 * i + (channels == 1 ? 0 : c)] : (inside || !transparent_outside_disc ? 255 : 0);
      narrow[i * channels + c] = v;
      wide[i * channels + c] = static_cast<uint16_t>(v * 257);
    }
  png_alloc_size_t size = 0;
  const void* source = bit_depth == 16 ? static_cast<const void*>(wide.data()) : narrow.data();
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, source, 0, nullptr))
    throw std::runtime_error(png.message);
  std::vector<uint8_t> bytes(size);
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, source, 0, nullptr))
    throw std::runtime_error(png.message);
  bytes.resize(size);
  return bytes;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string make_jpeg_folder(const std::vector<std::string>& classes, int per_class, int width, int height) {
  std::string root = temp_dir() + "/images";
  int seed = 0;
  for (const auto& name : classes)
    for (int i = 0; i < per_class; ++i)
      write_file(root + "/" + name + "/" + name + "_" + std::to_string(i) + ".jpg",
                 encode_jpeg(pattern_image(width + (i % 3) * 8, height, seed++)));
  return root;
}

StageBench::StageBench(const std::string& graph_text, uint64_t seed) {
  run_.seed = seed;
  graph_ = resolve_text(graph_text);
  for (const auto& stage : graph_.phases.front().stages)
    for (const auto& op : stage.ops)
      stages_[stage.name].push_back(op.stage_type->make(StageInit{stage.name, op.params, run_, services_, *this}));
}

Stage& StageBench::stage(const std::string& name) { return *stages_.at(name).front(); }

std::vector<Stage*> StageBench::find(const std::string& name) const {
  std::vector<Stage*> ops;
  auto it = stages_.find(name);
  if (it != stages_.end())
    for (const auto& op : it->second) ops.push_back(op.get());
  return ops;
}

}  // namespace flowrun::test

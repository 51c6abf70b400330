// Decoding: formats, colour spaces, DCT scaling, and every kind of bad file.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <filesystem>

#include "data_support.h"
#include "pipeline/executor.h"
#include "stages/data/sample.h"
#include "stages/image/decode.h"
#include "test_support.h"

using namespace flowrun;
using stages::decode_image;
using stages::Image;

namespace {
constexpr int64_t kMaxPixels = 100'000'000;

double mean_abs_difference(const Image& a, const Image& b) {
  EXPECT_EQ(a.pixels.size(), b.pixels.size());
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(a.pixels[i] - b.pixels[i]);
  return sum / a.pixels.size();
}

std::string decode_error(const std::vector<uint8_t>& bytes, int64_t max_pixels = kMaxPixels) {
  try {
    decode_image(bytes.data(), bytes.size(), max_pixels);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}
}  // namespace

TEST(Decode, JpegToRgb) {
  Image original = test::pattern_image(120, 80);
  auto bytes = test::encode_jpeg(original, 95);
  Image image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
  EXPECT_EQ(image.width, 120);
  EXPECT_EQ(image.height, 80);
  EXPECT_EQ(image.channels, 3);
  EXPECT_LT(mean_abs_difference(image, original), 4.0);
}

TEST(Decode, GrayscaleJpegComesOutRgb) {
  auto bytes = test::encode_jpeg(test::pattern_image(64, 48), 90, /*grayscale=*/true);
  Image image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
  ASSERT_EQ(image.channels, 3);
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    EXPECT_EQ(image.pixels[i], image.pixels[i + 1]);
    EXPECT_EQ(image.pixels[i], image.pixels[i + 2]);
  }
}

TEST(Decode, CmykJpegComesOutRgb) {
  const uint8_t inverted_cmyk[4] = {255, 128, 0, 255};  // Adobe-style: R = C*K/255 ...
  auto bytes = test::encode_cmyk_jpeg(inverted_cmyk, 32, 16);
  Image image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
  ASSERT_EQ(image.channels, 3);
  EXPECT_NEAR(image.pixels[0], 255, 3);
  EXPECT_NEAR(image.pixels[1], 128, 3);
  EXPECT_NEAR(image.pixels[2], 0, 3);
}

TEST(Decode, PngOfEveryKindComesOutRgb) {
  Image original = test::pattern_image(40, 30);
  for (int type : {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA, PNG_COLOR_TYPE_GRAY})
    for (int depth : {8, 16}) {
      auto bytes = test::encode_png(original, type, depth);
      Image image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
      ASSERT_EQ(image.channels, 3) << type << "/" << depth;
      ASSERT_EQ(image.width, 40);
      if (type != PNG_COLOR_TYPE_GRAY && depth == 8) {
        EXPECT_EQ(image.pixels, original.pixels) << type;
      }
      if (type == PNG_COLOR_TYPE_GRAY && depth == 8) {
        EXPECT_EQ(image.pixels[3], original.pixels[3]);
      }
    }
}

TEST(Decode, ReducedDctScaleKeepsTheShorterSideAboveTheTarget) {
  auto bytes = test::encode_jpeg(test::pattern_image(400, 300), 90);
  Image full = decode_image(bytes.data(), bytes.size(), kMaxPixels, 0);
  EXPECT_EQ(full.width, 400);
  Image scaled = decode_image(bytes.data(), bytes.size(), kMaxPixels, 100);
  EXPECT_GE(std::min(scaled.width, scaled.height), 100);
  EXPECT_LT(scaled.height, 150);  // smaller than the half scale would give
  EXPECT_NEAR(static_cast<double>(scaled.width) / scaled.height, 4.0 / 3.0, 0.02);
  Image half = decode_image(bytes.data(), bytes.size(), kMaxPixels, 150);
  EXPECT_EQ(half.height, 150);
}

TEST(Decode, PixelCapRefusesBombsBeforeAllocating) {
  auto bytes = test::encode_jpeg(test::pattern_image(16, 16), 90);
  // Rewrite the frame header (SOF0) to declare 50,000 x 50,000 pixels.
  for (size_t i = 0; i + 8 < bytes.size(); ++i)
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xC0) {
      bytes[i + 5] = 50000 >> 8;
      bytes[i + 6] = 50000 & 255;
      bytes[i + 7] = 50000 >> 8;
      bytes[i + 8] = 50000 & 255;
      break;
    }
  EXPECT_EQ(decode_error(bytes), "JPEG of 50000x50000 pixels exceeds max_pixels=100000000");
  auto png = test::encode_png(test::pattern_image(300, 300), PNG_COLOR_TYPE_RGB);
  EXPECT_EQ(decode_error(png, 50000), "PNG of 300x300 pixels exceeds max_pixels=50000");
}

TEST(Decode, BadBytesAreClearErrors) {
  auto jpeg = test::encode_jpeg(test::pattern_image(64, 64), 90);
  auto truncated = std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  EXPECT_EQ(decode_error(truncated).rfind("corrupt JPEG: ", 0), 0u) << decode_error(truncated);
  EXPECT_EQ(decode_error({}), "empty file");
  EXPECT_EQ(decode_error({'h', 'e', 'l', 'l', 'o'}), "not a JPEG or PNG image");
  EXPECT_EQ(decode_error({0xFF, 0xD8, 0xFF}).rfind("corrupt JPEG", 0), 0u) << decode_error({0xFF, 0xD8, 0xFF});
  // A failure leaves the thread able to decode the next good file.
  Image after = decode_image(jpeg.data(), jpeg.size(), kMaxPixels);
  EXPECT_EQ(after.width, 64);
  auto png = test::encode_png(test::pattern_image(64, 64), PNG_COLOR_TYPE_RGB);
  auto png_cut = std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2);
  EXPECT_EQ(decode_error(png_cut).rfind("corrupt PNG: ", 0), 0u) << decode_error(png_cut);
  auto garbage = jpeg;
  for (size_t i = 200; i < garbage.size(); i += 7) garbage[i] ^= 0x5A;
  try {  // random damage: an error or a (damaged) image, never a crash
    decode_image(garbage.data(), garbage.size(), kMaxPixels);
  } catch (const std::runtime_error&) {
  }
}

namespace {
struct FolderRun {
  RunResult result;
  std::string error;
};

FolderRun run_decode_graph(const std::string& root, const std::string& on_error) {
  FolderRun out;
  try {
    ResolvedGraph graph = test::resolve_text("source = imagefolder root=\"" + root + "\"\ndecode = decode on_error=" +
                                             on_error + "\nnorm = normalize\nsink = sink\n");
    RunOptions options;
    options.threads = 2;
    out.result = run_graph(graph, options);
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}
}  // namespace

TEST(Decode, BadFilesAreSkippedAndCountedOrStopTheRun) {
  std::string root = test::make_jpeg_folder({"a", "b"}, 3, 32, 24);
  auto png = test::encode_png(test::pattern_image(20, 20), PNG_COLOR_TYPE_RGB);
  test::write_file(root + "/a/mislabelled.JPG", png);  // a PNG with a JPEG name: decodes fine
  test::write_file(root + "/a/empty.jpg", {});
  test::write_file(root + "/b/text.png", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  auto jpeg = test::encode_jpeg(test::pattern_image(64, 64), 90);
  test::write_file(root + "/b/truncated.jpeg", std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + jpeg.size() / 3));
  FolderRun skip = run_decode_graph(root, "skip");
  ASSERT_EQ(skip.error, "");
  const auto& decode = skip.result.stages[1];
  EXPECT_EQ(decode.figures.at("skipped"), 3.0);
  EXPECT_EQ(decode.figures.at("decoded"), 7.0);
  EXPECT_EQ(skip.result.stages.back().figures.at("items"), 7.0);

  FolderRun fail = run_decode_graph(root, "fail");
  // Whichever bad file a decode thread met first, named with what is wrong.
  bool named = fail.error == "stage 'decode' (decode): " + root + "/a/empty.jpg: empty file" ||
               fail.error == "stage 'decode' (decode): " + root + "/b/text.png: not a JPEG or PNG image" ||
               fail.error.rfind("stage 'decode' (decode): " + root + "/b/truncated.jpeg: corrupt JPEG: ", 0) == 0;
  EXPECT_TRUE(named) << fail.error;
}

// What a folder from the wild holds: names that are not UTF-8, a link that
// leads nowhere, a folder named like an image, a file that cannot be read,
// a symlink loop, and a bomb declaring 50,000 x 50,000 pixels.
TEST(Decode, HostileFolderEntriesAreDecodedSkippedOrIgnored) {
  std::string root = test::make_jpeg_folder({"a", "b"}, 2, 16, 16);
  auto jpeg = test::encode_jpeg(test::pattern_image(16, 16), 90);
  test::write_file(root + "/a/\xff\xfe latin1 \xe9.jpg", jpeg);  // not UTF-8: still an image
  std::filesystem::create_symlink(root + "/nowhere.jpg", root + "/a/dangling.jpg");
  std::filesystem::create_directories(root + "/a/folder.jpg");
  std::filesystem::create_symlink("/proc/self/mem", root + "/b/unreadable.jpg");  // open works, read fails
  std::filesystem::create_symlink(root + "/b", root + "/b/loop");
  auto bomb = jpeg;
  for (size_t i = 0; i + 8 < bomb.size(); ++i)
    if (bomb[i] == 0xFF && bomb[i + 1] == 0xC0) {
      bomb[i + 5] = bomb[i + 7] = 50000 >> 8;
      bomb[i + 6] = bomb[i + 8] = 50000 & 255;
      break;
    }
  test::write_file(root + "/b/bomb.jpg", bomb);
  FolderRun skip = run_decode_graph(root, "skip");
  ASSERT_EQ(skip.error, "");
  const auto& decode = skip.result.stages[1];
  EXPECT_EQ(decode.figures.at("decoded"), 5.0);  // 2 + 2 + the non-UTF-8 name
  EXPECT_EQ(decode.figures.at("skipped"), 2.0);  // unreadable, bomb; the rest is never listed
  EXPECT_EQ(skip.result.stages.back().figures.at("items"), 5.0);
}

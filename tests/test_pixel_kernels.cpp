// The vectorised pixel kernels (stages/image/pixel_kernels.h, issue 25):
// on every Highway target compiled in that this CPU runs (each forced in
// turn), every kernel gives exactly its scalar twin's bytes, on random
// inputs of odd sizes (tails shorter than a vector, rows of one pixel).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <vector>

#include "stages/image/pixel_kernels.h"

using namespace flowrun::stages;

namespace {

// Runs `check` once per runnable target, that target forced (the dispatched
// kernels then run it: checked), then dispatches to the best one again.
template <class F>
void for_every_target(F check) {
  const auto targets = kernels::runnable_targets();
  ASSERT_FALSE(targets.empty());
  for (const auto& [target, name] : targets) {
    SCOPED_TRACE("target " + name);
    kernels::force_target(target);
    EXPECT_EQ(kernels::dispatched_target(), name);
    check();
  }
  kernels::force_target(0);
}

const int kWidths[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 97, 129, 161, 255};

std::vector<uint8_t> random_bytes(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> out(n);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : out) b = static_cast<uint8_t>(byte(rng));
  return out;
}

}  // namespace

// More than one target is compiled in on x86 (the portable one and at least
// SSSE3..AVX-512), and the best is what plain calls run.
TEST(PixelKernels, SeveralTargetsAreCompiledAndTheBestIsDispatched) {
  const auto targets = kernels::runnable_targets();
  ASSERT_FALSE(targets.empty());
#if defined(__x86_64__)
  EXPECT_GE(targets.size(), 2u);
#endif
  EXPECT_EQ(kernels::dispatched_target(), targets.front().second);
}

TEST(PixelKernels, PlanesFromTablesEqualsScalarOnEveryTarget) {
  std::mt19937 rng(1);
  std::vector<float> tables_data(3 * 256);
  std::uniform_real_distribution<float> value(-3.f, 3.f);
  for (auto& v : tables_data) v = value(rng);
  const float* tables[3] = {tables_data.data(), tables_data.data() + 256, tables_data.data() + 512};
  for_every_target([&] {
    for (int channels : {1, 3})
      for (int width : kWidths)
        for (int height : {1, 3, 5}) {
          const size_t pixels = static_cast<size_t>(width) * height;
          const auto src = random_bytes(rng, pixels * channels);
          std::vector<float> want(pixels * channels, -1.f), got(pixels * channels, -2.f);
          kernels::planes_from_tables_scalar(src.data(), pixels, channels, tables, want.data());
          kernels::planes_from_tables(src.data(), pixels, channels, tables, got.data());
          ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
              << channels << " channels, " << width << "x" << height;
        }
  });
}

TEST(PixelKernels, PlanesFromTablesRefusesOtherChannelCounts) {
  float table[256] = {};
  const float* tables[3] = {table, table, table};
  uint8_t src[4] = {};
  float dst[4];
  EXPECT_THROW(kernels::planes_from_tables(src, 1, 4, tables, dst), std::invalid_argument);
  EXPECT_THROW(kernels::planes_from_tables(src, 1, 2, tables, dst), std::invalid_argument);
}

TEST(PixelKernels, FlipRowsEqualsScalarOnEveryTarget) {
  std::mt19937 rng(2);
  for_every_target([&] {
    for (int channels : {1, 2, 3, 4})
      for (int width : kWidths)
        for (int height : {1, 2, 5}) {
          const auto src = random_bytes(rng, static_cast<size_t>(width) * height * channels);
          auto want = src, got = src;
          kernels::flip_rows_scalar(want.data(), width, height, channels);
          kernels::flip_rows(got.data(), width, height, channels);
          ASSERT_EQ(want, got) << channels << " channels, " << width << "x" << height;
          // And the scalar reference is the mirror: row 0's first pixel is now its last.
          ASSERT_TRUE(std::equal(src.begin(), src.begin() + channels, want.begin() + (width - 1) * channels));
        }
  });
}

TEST(PixelKernels, WeightedRowsEqualsScalarOnEveryTarget) {
  std::mt19937 rng(3);
  const int bits = 22;  // PIL's 8-bit fixed point
  for_every_target([&] {
    for (int count : {1, 2, 3, 5, 9})
      for (int width : kWidths) {
        const size_t bytes = static_cast<size_t>(width) * 3;
        std::vector<std::vector<uint8_t>> rows;
        std::vector<const uint8_t*> pointers;
        for (int y = 0; y < count; ++y) rows.push_back(random_bytes(rng, bytes));
        for (const auto& row : rows) pointers.push_back(row.data());
        // Weights of either sign (the sums then leave [0, 255] both ways:
        // the clamp is checked too), never overflowing 32 bits.
        std::uniform_int_distribution<int32_t> weight(-(1 << bits) / count, (1 << bits) / count * 2);
        std::vector<int32_t> weights(count);
        for (auto& w : weights) w = weight(rng);
        std::vector<uint8_t> want(bytes, 1), got(bytes, 2);
        kernels::weighted_rows_scalar(pointers.data(), weights.data(), count, bytes, bits, want.data());
        kernels::weighted_rows(pointers.data(), weights.data(), count, bytes, bits, got.data());
        ASSERT_EQ(want, got) << count << " rows of " << bytes << " bytes";
      }
  });
}

TEST(PixelKernels, LumaSumEqualsScalarOnEveryTarget) {
  std::mt19937 rng(4);
  for_every_target([&] {
    for (int width : kWidths)
      for (int height : {1, 2, 7}) {
        const size_t pixels = static_cast<size_t>(width) * height;
        const auto rgb = random_bytes(rng, pixels * 3);
        ASSERT_EQ(kernels::luma_sum(rgb.data(), pixels), kernels::luma_sum_scalar(rgb.data(), pixels))
            << width << "x" << height;
      }
    // Every rounding case of the luma: all 2^24 colours would be slow, so
    // the greys, pure channels, and the values whose luma ends in .5 (ties).
    std::vector<uint8_t> edges;
    for (int v = 0; v < 256; ++v)
      for (const auto& p : {std::array<int, 3>{v, v, v}, {v, 0, 0}, {0, v, 0}, {0, 0, v}, {v, 255 - v, v / 2}})
        for (int c : p) edges.push_back(static_cast<uint8_t>(c));
    for (int r = 0; r < 256; ++r)
      for (int g = 0; g < 256; g += 5) {
        const int rest = (299 * r + 587 * g) % 1000;  // b with 299r+587g+114b = ...500 (mod 1000)
        for (int b = 0; b < 256; ++b)
          if ((rest + 114 * b) % 1000 == 500) edges.insert(edges.end(), {uint8_t(r), uint8_t(g), uint8_t(b)});
      }
    ASSERT_EQ(kernels::luma_sum(edges.data(), edges.size() / 3), kernels::luma_sum_scalar(edges.data(), edges.size() / 3));
  });
}

TEST(PixelKernels, BlendWithGrayEqualsScalarOnEveryTarget) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> factor(0.f, 2.5f);
  for_every_target([&] {
    for (int width : kWidths)
      for (int height : {1, 3}) {
        const size_t pixels = static_cast<size_t>(width) * height;
        const auto rgb = random_bytes(rng, pixels * 3);
        // Random factors, and ones whose blends land on halves (lround's ties).
        for (float f : {factor(rng), factor(rng), 0.f, 0.5f, 1.f, 1.5f, 2.f}) {
          auto want = rgb, got = rgb;
          kernels::blend_with_gray_scalar(want.data(), pixels, f);
          kernels::blend_with_gray(got.data(), pixels, f);
          ASSERT_EQ(want, got) << width << "x" << height << ", factor " << f;
        }
      }
  });
}

// The pixel kernels (stages/image/pixel_kernels.h): each scalar twin against
// the dispatched Highway kernel, on one image at imagewoof2-160 sizes (160 x
// 213 RGB), in one process, so a busy machine slows both alike. Prints the
// target the dispatched kernels run on.
//   cmake --build build --target pixel_kernels_bench && build/bench/pixel_kernels_bench
#include <benchmark/benchmark.h>

#include <cstdio>
#include <random>
#include <vector>

#include "stages/image/pixel_kernels.h"

using namespace flowrun::stages;

namespace {

constexpr int kWidth = 213, kHeight = 160;
constexpr size_t kPixels = static_cast<size_t>(kWidth) * kHeight;

std::vector<uint8_t> random_rgb() {
  std::mt19937 rng(0);
  std::vector<uint8_t> out(kPixels * 3);
  for (auto& v : out) v = static_cast<uint8_t>(rng());
  return out;
}

template <bool kScalar>
void Normalize(benchmark::State& state) {
  const auto rgb = random_rgb();
  std::vector<float> table(3 * 256, 0.5f), out(kPixels * 3);
  const float* tables[3] = {table.data(), table.data() + 256, table.data() + 512};
  for (auto _ : state) {
    if (kScalar) kernels::planes_from_tables_scalar(rgb.data(), kPixels, 3, tables, out.data());
    else kernels::planes_from_tables(rgb.data(), kPixels, 3, tables, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

template <bool kScalar>
void Flip(benchmark::State& state) {
  auto rgb = random_rgb();
  for (auto _ : state) {
    if (kScalar) kernels::flip_rows_scalar(rgb.data(), kWidth, kHeight, 3);
    else kernels::flip_rows(rgb.data(), kWidth, kHeight, 3);
    benchmark::DoNotOptimize(rgb.data());
  }
  state.SetItemsProcessed(state.iterations());
}

// A vertical pass of resize 213x160 -> 213x120 (3 source rows per output row).
template <bool kScalar>
void ResizeVertical(benchmark::State& state) {
  const auto rgb = random_rgb();
  std::vector<uint8_t> out(static_cast<size_t>(kWidth) * 3);
  const int32_t weights[3] = {1 << 20, 1 << 21, 1 << 20};
  for (auto _ : state) {
    for (int y = 0; y + 3 <= kHeight; y += 4) {
      const uint8_t* rows[3];
      for (int k = 0; k < 3; ++k) rows[k] = rgb.data() + static_cast<size_t>(y + k) * kWidth * 3;
      if (kScalar) kernels::weighted_rows_scalar(rows, weights, 3, out.size(), 22, out.data());
      else kernels::weighted_rows(rows, weights, 3, out.size(), 22, out.data());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

template <bool kScalar>
void Saturation(benchmark::State& state) {
  auto rgb = random_rgb();
  for (auto _ : state) {
    if (kScalar) kernels::blend_with_gray_scalar(rgb.data(), kPixels, 1.0f);
    else kernels::blend_with_gray(rgb.data(), kPixels, 1.0f);
    benchmark::DoNotOptimize(rgb.data());
  }
  state.SetItemsProcessed(state.iterations());
}

template <bool kScalar>
void ContrastMean(benchmark::State& state) {
  const auto rgb = random_rgb();
  for (auto _ : state)
    benchmark::DoNotOptimize(kScalar ? kernels::luma_sum_scalar(rgb.data(), kPixels)
                                     : kernels::luma_sum(rgb.data(), kPixels));
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK_TEMPLATE(Normalize, true)->Name("normalize/scalar");
BENCHMARK_TEMPLATE(Normalize, false)->Name("normalize/dispatched");
BENCHMARK_TEMPLATE(Flip, true)->Name("hflip/scalar");
BENCHMARK_TEMPLATE(Flip, false)->Name("hflip/dispatched");
BENCHMARK_TEMPLATE(ResizeVertical, true)->Name("resize_vertical/scalar");
BENCHMARK_TEMPLATE(ResizeVertical, false)->Name("resize_vertical/dispatched");
BENCHMARK_TEMPLATE(Saturation, true)->Name("saturation/scalar");
BENCHMARK_TEMPLATE(Saturation, false)->Name("saturation/dispatched");
BENCHMARK_TEMPLATE(ContrastMean, true)->Name("contrast_mean/scalar");
BENCHMARK_TEMPLATE(ContrastMean, false)->Name("contrast_mean/dispatched");

int main(int argc, char** argv) {
  std::printf("pixel kernels dispatched to %s; one image %dx%d RGB per iteration\n",
              kernels::dispatched_target().c_str(), kWidth, kHeight);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}

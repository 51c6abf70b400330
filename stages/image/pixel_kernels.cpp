// Compiled once per Highway target (foreach_target.h re-includes this file
// with HWY_TARGET set to each); HWY_DYNAMIC_DISPATCH picks the best one the
// CPU runs, once, at the first call. Every kernel gives exactly its scalar
// twin's bytes: table lookups, integer sums (order-free: they cannot
// overflow) and byte moves only, no floating-point arithmetic to reorder.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "stages/image/pixel_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>

#include "stages/image/pixel_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace flowrun::stages::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

int64_t Target() { return HWY_TARGET; }

void PlanesFromTables(const uint8_t* HWY_RESTRICT src, size_t pixels, int channels, const float* const* tables,
                      float* HWY_RESTRICT dst) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> d8;  // as many bytes as float lanes
  const size_t n = hn::Lanes(df);
  size_t i = 0;
  if (channels == 3) {
    const float *t0 = tables[0], *t1 = tables[1], *t2 = tables[2];
    float *d0 = dst, *d1 = dst + pixels, *d2 = dst + 2 * pixels;
    for (; i + n <= pixels; i += n) {
      hn::Vec<decltype(d8)> r, g, b;
      hn::LoadInterleaved3(d8, src + 3 * i, r, g, b);
      hn::StoreU(hn::GatherIndex(df, t0, hn::PromoteTo(di, r)), df, d0 + i);
      hn::StoreU(hn::GatherIndex(df, t1, hn::PromoteTo(di, g)), df, d1 + i);
      hn::StoreU(hn::GatherIndex(df, t2, hn::PromoteTo(di, b)), df, d2 + i);
    }
    for (; i < pixels; ++i) {
      d0[i] = t0[src[3 * i]];
      d1[i] = t1[src[3 * i + 1]];
      d2[i] = t2[src[3 * i + 2]];
    }
  } else {
    const float* t0 = tables[0];
    for (; i + n <= pixels; i += n)
      hn::StoreU(hn::GatherIndex(df, t0, hn::PromoteTo(di, hn::LoadU(d8, src + i))), df, dst + i);
    for (; i < pixels; ++i) dst[i] = t0[src[i]];
  }
}

// The bytes of a vector in reverse order. (Highway 1.0 has no Reverse for
// 8-bit lanes: the bytes within each 64-bit lane, then the 64-bit lanes.)
#if HWY_TARGET == HWY_SCALAR
template <class D>
hn::Vec<D> ReverseBytes(D, hn::Vec<D> v) {
  return v;  // one lane
}
#else
template <class D>
hn::Vec<D> ReverseBytes(D d, hn::Vec<D> v) {
  const hn::Repartition<uint64_t, D> d64;
  alignas(16) static constexpr uint8_t kWithin64[16] = {7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8};
  const hn::Vec<D> within = hn::TableLookupBytes(v, hn::LoadDup128(d, kWithin64));
  return hn::BitCast(d, hn::Reverse(d64, hn::BitCast(d64, within)));
}
#endif

void FlipRows(uint8_t* HWY_RESTRICT pixels, int width, int height, int channels) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t n = hn::Lanes(d8);
  const size_t ch = static_cast<size_t>(channels), stride = static_cast<size_t>(width) * ch;
  for (int y = 0; y < height; ++y) {
    uint8_t* row = pixels + y * stride;
    // Pixels [left, right) are still to mirror: swap n of them from each end
    // while the two windows do not overlap, the middle one pixel at a time.
    size_t left = 0, right = static_cast<size_t>(width);
    if (ch == 3) {
      for (; right - left >= 2 * n; left += n, right -= n) {
        hn::Vec<decltype(d8)> a0, a1, a2, b0, b1, b2;
        hn::LoadInterleaved3(d8, row + 3 * left, a0, a1, a2);
        hn::LoadInterleaved3(d8, row + 3 * (right - n), b0, b1, b2);
        hn::StoreInterleaved3(ReverseBytes(d8, b0), ReverseBytes(d8, b1), ReverseBytes(d8, b2), d8, row + 3 * left);
        hn::StoreInterleaved3(ReverseBytes(d8, a0), ReverseBytes(d8, a1), ReverseBytes(d8, a2), d8,
                              row + 3 * (right - n));
      }
    } else if (ch == 1) {
      for (; right - left >= 2 * n; left += n, right -= n) {
        const auto a = hn::LoadU(d8, row + left), b = hn::LoadU(d8, row + right - n);
        hn::StoreU(ReverseBytes(d8, b), d8, row + left);
        hn::StoreU(ReverseBytes(d8, a), d8, row + right - n);
      }
    }
    for (; right - left >= 2; ++left, --right)
      for (size_t c = 0; c < ch; ++c) {
        const uint8_t t = row[left * ch + c];
        row[left * ch + c] = row[(right - 1) * ch + c];
        row[(right - 1) * ch + c] = t;
      }
  }
}

void WeightedRows(const uint8_t* const* rows, const int32_t* weights, int count, size_t bytes, int bits,
                  uint8_t* HWY_RESTRICT dst) {
  const hn::ScalableTag<int32_t> di;
  const hn::Rebind<uint8_t, decltype(di)> d8;
  const size_t n = hn::Lanes(di);
  const auto zero = hn::Zero(di), top = hn::Set(di, 255), half = hn::Set(di, 1 << (bits - 1));
  size_t i = 0;
  for (; i + n <= bytes; i += n) {
    auto acc = half;
    for (int y = 0; y < count; ++y)
      acc = hn::Add(acc, hn::Mul(hn::PromoteTo(di, hn::LoadU(d8, rows[y] + i)), hn::Set(di, weights[y])));
    acc = hn::Min(hn::Max(hn::ShiftRightSame(acc, bits), zero), top);
    hn::StoreU(hn::DemoteTo(d8, acc), d8, dst + i);
  }
  for (; i < bytes; ++i) {
    int32_t acc = 1 << (bits - 1);
    for (int y = 0; y < count; ++y) acc += rows[y][i] * weights[y];
    acc >>= bits;
    dst[i] = static_cast<uint8_t>(acc < 0 ? 0 : acc > 255 ? 255 : acc);
  }
}

// floor(float(299 r + 587 g + 114 b) / 1000.0f + 0.5f): the scalar code's
// float operations one for one (IEEE division and addition are exact
// roundings, the same in every lane as in scalar code).
template <class DF, class V8>
hn::Vec<DF> RoundedLuma(DF df, V8 r, V8 g, V8 b) {
  const hn::RebindToSigned<DF> di;
  const auto weighted = hn::Add(hn::Add(hn::Mul(hn::PromoteTo(di, r), hn::Set(di, 299)),
                                        hn::Mul(hn::PromoteTo(di, g), hn::Set(di, 587))),
                                hn::Mul(hn::PromoteTo(di, b), hn::Set(di, 114)));
  return hn::Floor(hn::Add(hn::Div(hn::ConvertTo(df, weighted), hn::Set(df, 1000.0f)), hn::Set(df, 0.5f)));
}

int64_t LumaSum(const uint8_t* HWY_RESTRICT rgb, size_t pixels) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> d8;
  const size_t n = hn::Lanes(df);
  int64_t total = 0;
  size_t i = 0;
  while (i + n <= pixels) {
    // Lanes sum at most 255 per step: flushed before 2^23 steps, far below 2^31.
    auto sums = hn::Zero(di);
    for (size_t steps = 0; steps < (1u << 23) && i + n <= pixels; ++steps, i += n) {
      hn::Vec<decltype(d8)> r, g, b;
      hn::LoadInterleaved3(d8, rgb + 3 * i, r, g, b);
      sums = hn::Add(sums, hn::ConvertTo(di, RoundedLuma(df, r, g, b)));
    }
    int32_t lanes[HWY_MAX_BYTES / 4];
    hn::StoreU(sums, di, lanes);
    for (size_t k = 0; k < n; ++k) total += lanes[k];
  }
  for (; i < pixels; ++i) {
    const uint8_t* p = rgb + 3 * i;
    total += static_cast<int64_t>(std::floor((p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000.0f + 0.5f));
  }
  return total;
}

// lround(x) clamped to [0, 255]: SIMD rounding is to nearest-even, lround
// rounds halves away from zero, so round down and add one where the
// fraction (exact: x - floor(x)) is at least a half. For x < 0 both give a
// value the clamp makes 0.
template <class DF>
hn::Vec<DF> RoundClamp(DF df, hn::Vec<DF> x) {
  const auto down = hn::Floor(x);
  const auto up = hn::IfThenElse(hn::Ge(hn::Sub(x, down), hn::Set(df, 0.5f)), hn::Add(down, hn::Set(df, 1.0f)), down);
  return hn::Min(hn::Max(up, hn::Zero(df)), hn::Set(df, 255.0f));
}

void BlendWithGray(uint8_t* HWY_RESTRICT rgb, size_t pixels, float factor) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> d8;
  const size_t n = hn::Lanes(df);
  const auto keep = hn::Set(df, factor), mix = hn::Set(df, 1 - factor);
  auto blend = [&](hn::Vec<decltype(df)> gray_part, hn::Vec<decltype(d8)> v) {
    const auto x = hn::Add(gray_part, hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, v)), keep));
    return hn::DemoteTo(d8, hn::ConvertTo(di, RoundClamp(df, x)));
  };
  size_t i = 0;
  for (; i + n <= pixels; i += n) {
    hn::Vec<decltype(d8)> r, g, b;
    hn::LoadInterleaved3(d8, rgb + 3 * i, r, g, b);
    const auto gray_part = hn::Mul(RoundedLuma(df, r, g, b), mix);
    hn::StoreInterleaved3(blend(gray_part, r), blend(gray_part, g), blend(gray_part, b), d8, rgb + 3 * i);
  }
  for (; i < pixels; ++i) {
    uint8_t* p = rgb + 3 * i;
    const float gray = std::floor((p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000.0f + 0.5f);
    for (int c = 0; c < 3; ++c)
      p[c] = static_cast<uint8_t>(std::clamp(std::lround(gray * (1 - factor) + p[c] * factor), 0L, 255L));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace flowrun::stages::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <stdexcept>

namespace flowrun::stages::kernels {

HWY_EXPORT(Target);
HWY_EXPORT(PlanesFromTables);
HWY_EXPORT(FlipRows);
HWY_EXPORT(WeightedRows);
HWY_EXPORT(LumaSum);
HWY_EXPORT(BlendWithGray);

namespace {
void check_planes_channels(int channels) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("planes_from_tables: " + std::to_string(channels) + " channels (1 or 3 expected)");
}
}  // namespace

void planes_from_tables(const uint8_t* src, size_t pixels, int channels, const float* const tables[3], float* dst) {
  check_planes_channels(channels);
  HWY_DYNAMIC_DISPATCH(PlanesFromTables)(src, pixels, channels, tables, dst);
}

void planes_from_tables_scalar(const uint8_t* src, size_t pixels, int channels, const float* const tables[3],
                               float* dst) {
  check_planes_channels(channels);
  if (channels == 3) {
    const float *t0 = tables[0], *t1 = tables[1], *t2 = tables[2];
    float *d0 = dst, *d1 = dst + pixels, *d2 = dst + 2 * pixels;
    for (size_t i = 0; i < pixels; ++i, src += 3) {
      d0[i] = t0[src[0]];
      d1[i] = t1[src[1]];
      d2[i] = t2[src[2]];
    }
  } else {
    const float* t0 = tables[0];
    for (size_t i = 0; i < pixels; ++i) dst[i] = t0[src[i]];
  }
}

void flip_rows(uint8_t* pixels, int width, int height, int channels) {
  HWY_DYNAMIC_DISPATCH(FlipRows)(pixels, width, height, channels);
}

void flip_rows_scalar(uint8_t* pixels, int width, int height, int channels) {
  const int ch = channels;
  for (int y = 0; y < height; ++y) {
    uint8_t* row = pixels + static_cast<size_t>(y) * width * ch;
    uint8_t *a = row, *b = row + (width - 1) * ch;
    if (ch == 3) {
      for (; a < b; a += 3, b -= 3) {
        uint8_t t0 = a[0], t1 = a[1], t2 = a[2];
        a[0] = b[0], a[1] = b[1], a[2] = b[2];
        b[0] = t0, b[1] = t1, b[2] = t2;
      }
    } else {
      for (; a < b; a += ch, b -= ch)
        for (int c = 0; c < ch; ++c) std::swap(a[c], b[c]);
    }
  }
}

void weighted_rows(const uint8_t* const* rows, const int32_t* weights, int count, size_t bytes, int bits,
                   uint8_t* dst) {
  HWY_DYNAMIC_DISPATCH(WeightedRows)(rows, weights, count, bytes, bits, dst);
}

void weighted_rows_scalar(const uint8_t* const* rows, const int32_t* weights, int count, size_t bytes, int bits,
                          uint8_t* dst) {
  std::vector<int32_t> acc(bytes, 1 << (bits - 1));
  for (int y = 0; y < count; ++y) {
    const uint8_t* src = rows[y];
    const int32_t w = weights[y];
    for (size_t i = 0; i < bytes; ++i) acc[i] += src[i] * w;
  }
  for (size_t i = 0; i < bytes; ++i) {
    int32_t v = acc[i] >> bits;
    dst[i] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
  }
}

int64_t luma_sum(const uint8_t* rgb, size_t pixels) { return HWY_DYNAMIC_DISPATCH(LumaSum)(rgb, pixels); }

int64_t luma_sum_scalar(const uint8_t* rgb, size_t pixels) {
  int64_t total = 0;
  for (size_t i = 0; i < pixels; ++i, rgb += 3)
    total += static_cast<int64_t>(std::floor((rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000.0f + 0.5f));
  return total;
}

void blend_with_gray(uint8_t* rgb, size_t pixels, float factor) {
  HWY_DYNAMIC_DISPATCH(BlendWithGray)(rgb, pixels, factor);
}

void blend_with_gray_scalar(uint8_t* rgb, size_t pixels, float factor) {
  for (size_t i = 0; i < pixels; ++i, rgb += 3) {
    const float gray = std::floor((rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000.0f + 0.5f);
    for (int c = 0; c < 3; ++c)
      rgb[c] = static_cast<uint8_t>(std::clamp(std::lround(gray * (1 - factor) + rgb[c] * factor), 0L, 255L));
  }
}

std::string dispatched_target() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(Target)()); }

std::vector<std::pair<int64_t, std::string>> runnable_targets() {
  std::vector<std::pair<int64_t, std::string>> out;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) out.emplace_back(target, hwy::TargetName(target));
  return out;
}

void force_target(int64_t target) { hwy::SetSupportedTargetsForTest(target); }

}  // namespace flowrun::stages::kernels
#endif  // HWY_ONCE

// The data path's own pixel loops, vectorised with Google Highway and
// dispatched at run time: one binary uses AVX-512 where the CPU has it, AVX2
// or SSE4 elsewhere (NEON/SVE on ARM), and a portable 128-bit emulation
// otherwise. Each kernel has a plain scalar twin (`*_scalar`): the reference
// the dispatched one must equal byte for byte (tests/test_pixel_kernels.cpp
// checks every compiled target against it), and what the image stages ran
// before (issue 25), so the torchvision parity tests hold unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flowrun::stages::kernels {

// uint8 interleaved pixels (HWC) -> float planes (CHW) through per-channel
// tables: dst[c * pixels + i] = tables[c][src[i * channels + c]].
// `channels` is 1 or 3 (tables[0] alone for 1); `pixels` = height * width;
// each table has 256 entries. Throws std::invalid_argument for other
// channel counts. src and dst must not overlap. (normalize runs the scalar
// twin: on Zen 4 the gathers did not beat it; see normalize.cpp.)
void planes_from_tables(const uint8_t* src, size_t pixels, int channels, const float* const tables[3], float* dst);
void planes_from_tables_scalar(const uint8_t* src, size_t pixels, int channels, const float* const tables[3],
                               float* dst);

// Mirrors `height` rows of `width` pixels of `channels` interleaved bytes
// left-right, in place (rows `width * channels` bytes apart).
void flip_rows(uint8_t* pixels, int width, int height, int channels);
void flip_rows_scalar(uint8_t* pixels, int width, int height, int channels);

// One output row of a vertical resampling pass in PIL's 8-bit fixed point:
// dst[i] = clip8((2^(bits-1) + sum_y rows[y][i] * weights[y]) >> bits) for i
// in [0, bytes), `count` source rows. (resize_bilinear's vertical pass.)
void weighted_rows(const uint8_t* const* rows, const int32_t* weights, int count, size_t bytes, int bits,
                   uint8_t* dst);
void weighted_rows_scalar(const uint8_t* const* rows, const int32_t* weights, int count, size_t bytes, int bits,
                          uint8_t* dst);

// PIL's luma of RGB pixels rounded to an integer, as torchvision's
// rgb_to_grayscale on PIL images: floor((299 r + 587 g + 114 b) / 1000.0f +
// 0.5f) in float32, summed over `pixels` interleaved RGB pixels (contrast's mean).
int64_t luma_sum(const uint8_t* rgb, size_t pixels);
int64_t luma_sum_scalar(const uint8_t* rgb, size_t pixels);

// PIL's ImageEnhance.Color, in place on interleaved RGB: each channel
// v -> clamp(lround(gray * (1 - factor) + v * factor), 0, 255) in float32,
// gray the pixel's rounded luma (as luma_sum).
void blend_with_gray(uint8_t* rgb, size_t pixels, float factor);
void blend_with_gray_scalar(uint8_t* rgb, size_t pixels, float factor);

// The instruction set the dispatched kernels run on here ("AVX3" is
// AVX-512, "AVX3_ZEN4" AVX-512 on Zen 4, "EMU128" the portable fallback).
std::string dispatched_target();
// Every target compiled into this binary that this CPU can run, best first,
// as Highway names them, and a way to force one (tests): force_target(0)
// goes back to the best.
std::vector<std::pair<int64_t, std::string>> runnable_targets();
void force_target(int64_t target);

}  // namespace flowrun::stages::kernels

#include "stages/image/decode.h"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <spdlog/spdlog.h>
#include <tiffio.h>
#include <turbojpeg.h>
// After the C headers it needs (FILE, size_t): libjpeg's own API, for partial decode.
#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

#include <algorithm>
#include <cctype>
#include <cstdarg>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <stdexcept>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "stages/data/sample.h"

// stb_image's BMP and PNM readers, compiled into this file only.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#include <stb/stb_image.h>

namespace flowrun::stages {

namespace {

// One TurboJPEG handle per thread (handles are not thread-safe), made anew
// for every file (decode_jpeg resets it first): libjpeg keeps Huffman and
// quantization tables across images, so a reused handle would decode a file
// that lacks a table (a Motion-JPEG frame) with the previous file's, where
// PIL's fresh decompressor takes the standard tables (about 2 us a file).
struct JpegHandle {
  tjhandle h = nullptr;
  ~JpegHandle() { reset(); }
  void reset() {
    if (h) tjDestroy(h);
    h = nullptr;
  }
};
thread_local JpegHandle t_jpeg;

tjhandle jpeg_handle() {
  if (!t_jpeg.h) t_jpeg.h = tjInitDecompress();
  if (!t_jpeg.h) throw std::runtime_error("cannot create a TurboJPEG decompressor");
  return t_jpeg.h;
}

[[noreturn]] void jpeg_fail(const std::string& message) {
  t_jpeg.reset();
  throw std::runtime_error("corrupt JPEG: " + message);
}

void check_size(int64_t width, int64_t height, int64_t max_pixels, const char* what) {
  if (width <= 0 || height <= 0) throw std::runtime_error(std::string(what) + " with an empty size");
  if (width * height > max_pixels)
    throw std::runtime_error(std::string(what) + " of " + std::to_string(width) + "x" + std::to_string(height) +
                             " pixels exceeds max_pixels=" + std::to_string(max_pixels));
}

// CMYK to RGB as PIL's convert('RGB') does (Pillow's cmyk2rgb): with
// nk = 255 - K, R = nk - round(C * nk / 255), likewise G and B. `inverted`:
// the samples are stored inverted (Adobe's convention, which PIL assumes for
// every CMYK JPEG: rawmode "CMYK;I"), as libjpeg hands them back.
void cmyk_to_rgb(const uint8_t* s, uint8_t* d, size_t n, bool inverted) {
  const int flip = inverted ? 255 : 0;
  for (size_t i = 0; i < n; ++i, s += 4, d += 3) {
    const int nk = 255 - (s[3] ^ flip);
    for (int c = 0; c < 3; ++c) {
      int t = (s[c] ^ flip) * nk + 128;  // Pillow's MULDIV255: a * b / 255, rounded
      d[c] = static_cast<uint8_t>(nk - (((t >> 8) + t) >> 8));
    }
  }
}

// ---- Partial decode (decode partial=auto): libjpeg's API, for a crop's window ----
//
// The same decoder as TurboJPEG's tjDecompress2 with the same settings
// (libjpeg-turbo 2.1.5), told to produce only the rows and columns a crop
// reads: jpeg_skip_scanlines over the rows above, jpeg_crop_scanline for the
// columns. Errors and warnings are judged exactly as decode_jpeg judges
// TurboJPEG's: a fatal error with no warning before it, or a first warning
// "Premature end of JPEG file", is an error; other warnings are accepted.

// TurboJPEG's error manager: error_exit and the first warning write the
// message (the last one written is what tjGetErrorStr2 gives).
struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  bool warned = false;
  char message[JMSG_LENGTH_MAX] = "";
};
void jpeg_output_message(j_common_ptr cinfo) {
  (*cinfo->err->format_message)(cinfo, reinterpret_cast<JpegErrors*>(cinfo->err)->message);
}
void jpeg_error_exit(j_common_ptr cinfo) {
  (*cinfo->err->output_message)(cinfo);
  std::longjmp(reinterpret_cast<JpegErrors*>(cinfo->err)->jump, 1);
}
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  if (level < 0) {  // a warning: as jpeg_std_error's emit_message (trace_level 0), noting it
    if (errors->pub.num_warnings == 0) (*cinfo->err->output_message)(cinfo);
    errors->pub.num_warnings++;
    errors->warned = true;
  }
}

// A fresh decompressor per file: libjpeg keeps Huffman and quantization
// tables across images, so a reused one would decode a file that lacks a
// table (a Motion-JPEG frame) with the previous file's.
struct JpegDecompressor {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors;
  JpegDecompressor() {
    cinfo.err = jpeg_std_error(&errors.pub);
    errors.pub.error_exit = jpeg_error_exit;
    errors.pub.output_message = jpeg_output_message;
    errors.pub.emit_message = jpeg_emit_message;
    jpeg_create_decompress(&cinfo);  // only allocation failures throw here, before any setjmp: none expected
  }
  ~JpegDecompressor() { jpeg_destroy_decompress(&cinfo); }
};

// What a partial decode needs between its steps; plain data only, so that a
// longjmp out of libjpeg skips no destructor.
struct PartialJob {
  const uint8_t* data;
  size_t size;
  unsigned scale_num, scale_denom;
  bool cmyk, fast;
  Window want;                // the rows and columns (margins included) to decode
  JDIMENSION x0, width;       // the columns libjpeg decodes (x0 rounded down to an iMCU)
  bool eligible;              // a file partial decode takes (see partial_start)
  bool stop_early;            // stopping after the window cannot change the decision (see partial_start)
  uint8_t* out;               // want.height rows of width * channels
  uint8_t* scratch;           // one row of output_width * channels (the last row)
};

// Whether a single-scan Huffman file's entropy data (from `at`) holds no
// marker but restarts up to its last two bytes, FF D9 (EOI). Then the
// decoder, which stops at a marker, never reads past that EOI, so decoding
// the rest can give no "Premature end" and no error, only other warnings,
// which are accepted: stopping after the window decides the file the same.
bool only_entropy_data_to_eoi(const uint8_t* data, size_t size, size_t at) {
  if (size < at + 2 || data[size - 2] != 0xFF || data[size - 1] != 0xD9) return false;
  const uint8_t* p = data + at;
  const uint8_t* end = data + size - 2;
  while ((p = static_cast<const uint8_t*>(std::memchr(p, 0xFF, static_cast<size_t>(end - p)))) != nullptr) {
    const uint8_t next = p[1];  // p < end, so p + 1 is inside the file
    if (p + 1 == end) return true;  // ... FF FF D9: fill bytes before the EOI
    if (next != 0x00 && next != 0xFF && (next < 0xD0 || next > 0xD7)) return false;
    p += next == 0xFF ? 1 : 2;
  }
  return true;
}

// The output TurboJPEG's tjDecompress2 asks for (TJPF_CMYK or TJPF_RGB, TJFLAG_FASTDCT |
// TJFLAG_FASTUPSAMPLE for fast, the scale num/denom), set on a libjpeg decompressor after its header.
void set_turbojpeg_output(jpeg_decompress_struct& cinfo, bool cmyk, bool fast, unsigned num, unsigned denom) {
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGB;
  if (fast) {
    cinfo.dct_method = JDCT_FASTEST;
    cinfo.do_fancy_upsampling = FALSE;
  }
  cinfo.scale_num = num;
  cinfo.scale_denom = denom;
}

// The scale TurboJPEG picks for a width x height image decoded to out_w x
// out_h (tjDecompress2: the first factor that fits), as {num, denom}.
std::optional<std::pair<unsigned, unsigned>> turbojpeg_scale(int width, int height, int out_w, int out_h) {
  int count = 0;
  tjscalingfactor* factors = tjGetScalingFactors(&count);
  for (int i = 0; i < count; ++i)
    if (TJSCALED(width, factors[i]) <= out_w && TJSCALED(height, factors[i]) <= out_h)
      return std::make_pair(static_cast<unsigned>(factors[i].num), static_cast<unsigned>(factors[i].denom));
  return std::nullopt;
}

// Reads the header, starts the decompressor, sets the columns. False: libjpeg failed (errors->message).
bool partial_start(jpeg_decompress_struct& cinfo, PartialJob& job) {
  if (setjmp(reinterpret_cast<JpegErrors*>(cinfo.err)->jump)) return false;
  jpeg_mem_src(&cinfo, job.data, static_cast<unsigned long>(job.size));
  jpeg_read_header(&cinfo, TRUE);
  // Only what a camera or PIL writes: one scan of every component, or a
  // progressive file. A sequential file of several scans (one a component)
  // takes the full decode.
  job.eligible = !jpeg_has_multiple_scans(&cinfo) || cinfo.progressive_mode;
  if (!job.eligible) return true;
  // A multi-scan file (progressive...) is read whole by jpeg_start_decompress.
  job.stop_early = jpeg_has_multiple_scans(&cinfo) ||
                   (!cinfo.arith_code && only_entropy_data_to_eoi(job.data, job.size, job.size - cinfo.src->bytes_in_buffer));
  set_turbojpeg_output(cinfo, job.cmyk, job.fast, job.scale_num, job.scale_denom);
  jpeg_start_decompress(&cinfo);
  job.x0 = static_cast<JDIMENSION>(job.want.left);
  job.width = static_cast<JDIMENSION>(job.want.width);
  jpeg_crop_scanline(&cinfo, &job.x0, &job.width);
  return true;
}

// Decodes the window's rows, then the rest as the stop_early choice says. False: libjpeg failed.
bool partial_rows(jpeg_decompress_struct& cinfo, PartialJob& job) {
  if (setjmp(reinterpret_cast<JpegErrors*>(cinfo.err)->jump)) return false;
  const size_t stride = static_cast<size_t>(job.width) * cinfo.output_components;
  jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(job.want.top));
  for (int y = 0; y < job.want.height; ++y) {
    JSAMPROW row = job.out + y * stride;
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) ERREXIT(&cinfo, JERR_TOO_LITTLE_DATA);  // never expected
  }
  if (cinfo.output_scanline < cinfo.output_height) {
    if (job.stop_early) return true;  // the caller destroys the decompressor
    // Skipping to the very end would skip the entropy decoding too (2.1.5
    // then just marks the end reached), and with it the warnings and errors
    // of the rest: skip all but the last row, and read that one.
    jpeg_skip_scanlines(&cinfo, cinfo.output_height - cinfo.output_scanline - 1);
    JSAMPROW row = job.scratch;
    while (cinfo.output_scanline < cinfo.output_height) jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  return true;
}

// Decodes the whole file with libjpeg's API, every row into one scratch row;
// true when it ran to the end, else the fatal error's message (longjmp).
bool decode_all_rows(jpeg_decompress_struct& cinfo, const uint8_t* data, size_t size, bool cmyk, bool fast, unsigned num,
                     unsigned denom, uint8_t** scratch_row, size_t* scratch_size) {
  if (setjmp(reinterpret_cast<JpegErrors*>(cinfo.err)->jump)) return false;
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  set_turbojpeg_output(cinfo, cmyk, fast, num, denom);
  jpeg_start_decompress(&cinfo);
  const size_t needed = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  if (*scratch_size < needed) ERREXIT(&cinfo, JERR_TOO_LITTLE_DATA);  // never expected: sized from TurboJPEG's output
  while (cinfo.output_scanline < cinfo.output_height) jpeg_read_scanlines(&cinfo, scratch_row, 1);
  jpeg_finish_decompress(&cinfo);
  return true;
}

// After TurboJPEG reported only a warning (not "Premature end"): the fatal
// error that followed it, if one did, as libjpeg's decode of the file meets it.
std::optional<std::string> fatal_error_after_warning(const uint8_t* data, size_t size, bool cmyk, bool fast, int width,
                                                     int height, int out_w, int out_h) {
  const auto scale = turbojpeg_scale(width, height, out_w, out_h);
  if (!scale) return std::nullopt;
  JpegDecompressor d;
  PixelBuffer<uint8_t> scratch(static_cast<size_t>(out_w) * (cmyk ? 4 : 3));
  uint8_t* row = scratch.data();
  size_t scratch_size = scratch.size();
  if (decode_all_rows(d.cinfo, data, size, cmyk, fast, scale->first, scale->second, &row, &scratch_size))
    return std::nullopt;
  return std::string(d.errors.message);
}

// `want` (margins included, inside the out_w x out_h decoded size) of the
// image at scale num/denom; `exact` is the crop's window inside it. Nothing
// when only the full decode gives today's result (see `failed`).
std::optional<Image> decode_jpeg_window(const uint8_t* data, size_t size, unsigned num, unsigned denom, bool cmyk,
                                        bool fast, const Window& want, const Window& exact, int out_w, int out_h,
                                        bool stop_early_allowed) {
  JpegDecompressor d;
  PartialJob job{data, size, num, denom, cmyk, fast, want, 0, 0, false, false, nullptr, nullptr};
  // TurboJPEG's rule (decode_jpeg): an error unless only warnings came, the
  // first not "Premature end". A fatal error after a warning passes that
  // rule with a partly written image: the full decode gives today's one.
  auto failed = [&d](bool ok) {
    if (ok && !d.errors.warned) return false;
    const std::string message = d.errors.message;
    if (!d.errors.warned || message.find("Premature end") != std::string::npos) jpeg_fail(message);
    return !ok;
  };
  // A file that warned before its first row (a damaged header or scan
  // layout) takes the full decode too: no guessing how libjpeg's cropping
  // meets damage it has only warned about.
  if (failed(partial_start(d.cinfo, job)) || !job.eligible || d.errors.warned) return std::nullopt;
  if (static_cast<int>(d.cinfo.output_height) != out_h || static_cast<int>(job.x0 + job.width) != want.left + want.width ||
      want.left + want.width > out_w)
    throw std::runtime_error("partial decode: libjpeg's output size differs from TurboJPEG's (a bug; give decode partial=off)");
  // A multi-scan file was read whole by jpeg_start_decompress: stopping is
  // exact there, and 2.1.5 can loop forever reading the last row after a
  // skip with merged upsampling (fast=true) in such a file.
  job.stop_early = jpeg_has_multiple_scans(&d.cinfo) || (job.stop_early && stop_early_allowed);
  Image image(static_cast<int>(job.width), want.height, cmyk ? 4 : 3);
  PixelBuffer<uint8_t> scratch(static_cast<size_t>(d.cinfo.output_width) * d.cinfo.output_components);
  job.out = image.pixels.data();
  job.scratch = scratch.data();
  if (failed(partial_rows(d.cinfo, job))) return std::nullopt;
  if (cmyk) {
    Image rgb(image.width, image.height, 3);
    cmyk_to_rgb(image.pixels.data(), rgb.pixels.data(), image.pixels.size() / 4, /*inverted=*/true);
    image = std::move(rgb);
  }
  image.full_width = out_w;
  image.full_height = out_h;
  image.origin_top = want.top;
  image.origin_left = static_cast<int>(job.x0);
  image.exact = exact;
  return image;
}

// Decodes the columns and rows of `window` (plus a margin) only; nothing when
// that would be all of the image or cannot be exact (then the full decode).
std::optional<Image> decode_jpeg_partial(const uint8_t* data, size_t size, const DecodeOptions& options, int width,
                                         int height, int subsampling, bool cmyk, int out_w, int out_h) {
  std::optional<Window> asked = options.window(out_w, out_h);
  if (!asked) return std::nullopt;
  // libjpeg-turbo 2.1.5 miscalculates a cropped width for h or v sampling
  // factor 4 with DCT scaling (fixed in 3.0): 4:1:1 is read whole when scaled.
  if ((out_w != width || out_h != height) && subsampling == TJSAMP_411) return std::nullopt;
  const int top = std::max(asked->top, 0), left = std::max(asked->left, 0);
  const Window exact{top, left, std::min(asked->top + asked->height, out_h) - top,
                     std::min(asked->left + asked->width, out_w) - left};
  if (exact.height <= 0 || exact.width <= 0) return std::nullopt;
  // jpeg_crop_scanline upsamples the cropped rows as if they were the
  // image's edges, and the rows after a skip may differ likewise: decoding a
  // margin around the window keeps the window itself bit-identical. Fancy
  // upsampling reads one chroma sample or row beyond: 2 pixels at factor 2,
  // 4 at 4 (the tests fail with 0 and pass with 2).
  constexpr int kMargin = 4;
  const int y0 = std::max(exact.top - kMargin, 0), x0 = std::max(exact.left - kMargin, 0);
  const Window want{y0, x0, std::min(exact.top + exact.height + kMargin, out_h) - y0,
                    std::min(exact.left + exact.width + kMargin, out_w) - x0};
  if (want.height == out_h && want.width == out_w) return std::nullopt;
  const auto scale = turbojpeg_scale(width, height, out_w, out_h);
  if (!scale) return std::nullopt;
  return decode_jpeg_window(data, size, scale->first, scale->second, cmyk, options.fast, want, exact, out_w, out_h,
                            options.stop_after_window);
}

Image decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& options) {
  const int64_t max_pixels = options.max_pixels;
  const int min_short_side = options.min_short_side;
  const bool fast = options.fast;
  t_jpeg.reset();
  tjhandle h = jpeg_handle();
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (size > std::numeric_limits<unsigned long>::max() ||
      tjDecompressHeader3(h, data, static_cast<unsigned long>(size), &width, &height, &subsampling, &colorspace) != 0)
    jpeg_fail(tjGetErrorStr2(h));
  if (width <= 0 || height <= 0) jpeg_fail("no image dimensions");
  check_size(width, height, max_pixels, "JPEG");
  // The smallest DCT scale whose shorter side still reaches min_short_side.
  int out_w = width, out_h = height;
  if (min_short_side > 0) {
    int count = 0;
    tjscalingfactor* factors = tjGetScalingFactors(&count);
    int best_area = width * height;
    for (int i = 0; i < count; ++i) {
      int w = TJSCALED(width, factors[i]), h2 = TJSCALED(height, factors[i]);
      if (std::min(w, h2) >= min_short_side && w * h2 < best_area) {
        best_area = w * h2;
        out_w = w;
        out_h = h2;
      }
    }
  }
  int flags = fast ? (TJFLAG_FASTDCT | TJFLAG_FASTUPSAMPLE) : 0;
  bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  if (options.window)
    if (std::optional<Image> part = decode_jpeg_partial(data, size, options, width, height, subsampling, cmyk, out_w, out_h))
      return std::move(*part);
  Image image(out_w, out_h, cmyk ? 4 : 3);
  if (tjDecompress2(h, data, static_cast<unsigned long>(size), image.pixels.data(), out_w, 0, out_h,
                    cmyk ? TJPF_CMYK : TJPF_RGB, flags) != 0) {
    // Warnings (stray bytes between markers...) still give a full image, as
    // PIL accepts; a truncated file gives a partly grey one and is an error.
    std::string message = tjGetErrorStr2(h);
    if (tjGetErrorCode(h) != TJERR_WARNING || message.find("Premature end") != std::string::npos) jpeg_fail(message);
    // TurboJPEG says "warning" for a fatal error that came after a warning,
    // and leaves the rows after it unwritten: libjpeg's own decode of the
    // file tells them apart (only files that warned pay for it).
    if (std::optional<std::string> fatal = fatal_error_after_warning(data, size, cmyk, fast, width, height, out_w, out_h))
      jpeg_fail(*fatal);
  }
  if (cmyk) {
    Image rgb(out_w, out_h, 3);
    cmyk_to_rgb(image.pixels.data(), rgb.pixels.data(), static_cast<size_t>(out_w) * out_h, /*inverted=*/true);
    return rgb;
  }
  return image;
}

// PNG with libpng's full API rather than the simplified one: the simplified
// API composites alpha onto the (uninitialised) output buffer and treats
// 16-bit samples as linear light, so it gives neither PIL's pixels nor the
// same pixels twice. Here every sample is taken as stored and converted as
// PIL's Image.open(f).convert('RGB') does (Pillow 9.4, torchvision's loader):
//   grey 1/2/4/8 bit: scaled to 0..255 and repeated (as PIL's "1"/"L;2"/"L;4");
//   grey 16 bit: PIL opens it in mode "I" and "I" -> "RGB" clips, so
//     min(v, 255) (a 16-bit grey photo comes out nearly white, in PIL too);
//   grey+alpha, RGB, RGBA at 16 bit: the high byte (v >> 8, PIL's ";16B" modes);
//   alpha and tRNS are dropped, keeping the stored colour; palette entries
//   are looked up (tRNS ignored); gAMA/sRGB/iCCP are ignored, as PIL does.
struct PngRead {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char message[200] = "";
  ~PngRead() { png_destroy_read_struct(&png, &info, nullptr); }
};

void png_error_fn(png_structp png, png_const_charp message) {
  auto* read = static_cast<PngRead*>(png_get_error_ptr(png));
  std::snprintf(read->message, sizeof read->message, "%s", message ? message : "libpng error");
  png_longjmp(png, 1);
}
void png_warning_fn(png_structp, png_const_charp) {}  // PIL decodes through the same warnings

void png_read_fn(png_structp png, png_bytep out, png_size_t length) {
  auto* read = static_cast<PngRead*>(png_get_io_ptr(png));
  if (length > read->size - read->pos) png_error(png, "file ends early");
  std::memcpy(out, read->data + read->pos, length);
  read->pos += length;
}

// The setjmp frames hold only trivially destructible locals, so a longjmp
// out of libpng skips no destructor.
bool png_read_header(PngRead& r, png_uint_32& width, png_uint_32& height) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_set_read_fn(r.png, &r, png_read_fn);
  png_set_user_limits(r.png, 0x7fffffff, 0x7fffffff);  // max_pixels is the limit, checked below
  png_read_info(r.png, r.info);
  width = png_get_image_width(r.png, r.info);
  height = png_get_image_height(r.png, r.info);
  return true;
}

bool png_prepare(PngRead& r, int& channels, int& depth, size_t& row_bytes) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  int color_type = png_get_color_type(r.png, r.info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r.png);
  if (color_type == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(r.png, r.info) < 8) png_set_expand_gray_1_2_4_to_8(r.png);
  png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);
  channels = png_get_channels(r.png, r.info);
  depth = png_get_bit_depth(r.png, r.info);
  row_bytes = png_get_rowbytes(r.png, r.info);
  return true;
}

bool png_read_rows(PngRead& r, png_bytepp rows) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_read_image(r.png, rows);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, int64_t max_pixels) {
  PngRead r;
  r.data = data;
  r.size = size;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_error_fn, png_warning_fn);
  if (r.png) r.info = png_create_info_struct(r.png);
  if (!r.png || !r.info) throw std::runtime_error("cannot create a PNG decoder");
  png_uint_32 width = 0, height = 0;
  if (!png_read_header(r, width, height)) throw std::runtime_error(std::string("corrupt PNG: ") + r.message);
  check_size(width, height, max_pixels, "PNG");
  // Rows as libpng gives them (1 to 4 channels of 8 or 16 bits), then to RGB.
  int channels = 0, depth = 0;
  size_t row_bytes = 0;
  if (!png_prepare(r, channels, depth, row_bytes)) throw std::runtime_error(std::string("corrupt PNG: ") + r.message);
  if (channels < 1 || channels > 4 || (depth != 8 && depth != 16) ||
      row_bytes != static_cast<size_t>(width) * channels * (depth / 8))
    throw std::runtime_error("corrupt PNG: unexpected layout after expansion");
  PixelBuffer<uint8_t> raw(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = raw.data() + y * row_bytes;
  if (!png_read_rows(r, rows.data())) throw std::runtime_error(std::string("corrupt PNG: ") + r.message);
  Image image(static_cast<int>(width), static_cast<int>(height), 3);
  const bool grey = channels <= 2;
  const int bytes = depth / 8, step = channels * bytes;
  for (png_uint_32 y = 0; y < height; ++y) {
    const uint8_t* s = rows[y];
    uint8_t* d = image.pixels.data() + static_cast<size_t>(y) * width * 3;
    for (png_uint_32 x = 0; x < width; ++x, s += step, d += 3) {
      if (grey) {
        // 16-bit grey alone is PIL's mode "I" (clipped); with alpha it is "LA;16B" (high byte).
        uint8_t v = depth == 8 ? s[0] : channels == 1 ? static_cast<uint8_t>(std::min(s[0] * 256 + s[1], 255)) : s[0];
        d[0] = d[1] = d[2] = v;
      } else {
        d[0] = s[0];  // 8 bit: the sample; 16 bit: its high byte (big-endian)
        d[1] = s[bytes];
        d[2] = s[2 * bytes];
      }
    }
  }
  return image;
}

// WebP with libwebp (still images; PIL gives an animation's first frame,
// flowrun refuses animations). Alpha is dropped, keeping the stored colour.
Image decode_webp(const uint8_t* data, size_t size, int64_t max_pixels) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data, size, &features) != VP8_STATUS_OK) throw std::runtime_error("corrupt WebP: bad header");
  if (features.has_animation) throw std::runtime_error("animated WebP is not supported");
  check_size(features.width, features.height, max_pixels, "WebP");
  Image image(features.width, features.height, 3);
  if (!WebPDecodeRGBInto(data, size, image.pixels.data(), image.pixels.size(), features.width * 3))
    throw std::runtime_error("corrupt WebP: cannot decode the bitstream");
  return image;
}

// TIFF with libtiff, from memory, through its RGBA interface (any
// compression, strips or tiles, palette, bilevel, YCbCr, CMYK...), first
// page only, as PIL. Errors go to this decode's own handler, not libtiff's
// global one.
struct TiffMemory {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  std::string message;
};

tmsize_t tiff_read(thandle_t handle, void* out, tmsize_t n) {
  auto* m = static_cast<TiffMemory*>(handle);
  if (n < 0) return 0;
  size_t count = std::min(static_cast<size_t>(n), m->size - m->pos);
  std::memcpy(out, m->data + m->pos, count);
  m->pos += count;
  return static_cast<tmsize_t>(count);
}
tmsize_t tiff_write(thandle_t, void*, tmsize_t) { return 0; }
toff_t tiff_seek(thandle_t handle, toff_t offset, int whence) {
  auto* m = static_cast<TiffMemory*>(handle);
  uint64_t base = whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->size : 0;
  if (offset > m->size || base + offset > m->size) return static_cast<toff_t>(-1);
  m->pos = static_cast<size_t>(base + offset);
  return m->pos;
}
int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t handle) { return static_cast<TiffMemory*>(handle)->size; }
int tiff_map(thandle_t, void**, toff_t*) { return 0; }  // no mapping: every read goes through tiff_read's bounds
void tiff_unmap(thandle_t, void*, toff_t) {}
int tiff_error(TIFF*, void* user, const char* module, const char* format, va_list args) {
  auto* m = static_cast<TiffMemory*>(user);
  if (m->message.empty()) {
    char text[300];
    std::vsnprintf(text, sizeof text, format, args);
    m->message = text;
  }
  return 1;  // handled: libtiff's global handler (stderr) stays quiet
}
int tiff_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }

Image decode_tiff(const uint8_t* data, size_t size, int64_t max_pixels) {
  TiffMemory memory;
  memory.data = data;
  memory.size = size;
  TIFFOpenOptions* options = TIFFOpenOptionsAlloc();
  if (!options) throw std::runtime_error("cannot create a TIFF decoder");
  TIFFOpenOptionsSetErrorHandlerExtR(options, tiff_error, &memory);
  TIFFOpenOptionsSetWarningHandlerExtR(options, tiff_warning, &memory);
  // No single allocation beyond what max_pixels allows (RGBA, 16 bit) plus slack for tables.
  TIFFOpenOptionsSetMaxSingleMemAlloc(options, static_cast<tmsize_t>(std::min<int64_t>(max_pixels, int64_t{1} << 36) * 8 + (16 << 20)));
  TIFF* tiff = TIFFClientOpenExt("image", "rm", &memory, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size,
                                 tiff_map, tiff_unmap, options);
  TIFFOpenOptionsFree(options);
  if (!tiff) throw std::runtime_error("corrupt TIFF: " + (memory.message.empty() ? std::string("cannot open") : memory.message));
  std::unique_ptr<TIFF, void (*)(TIFF*)> closer(tiff, TIFFClose);
  uint32_t width = 0, height = 0;
  TIFFGetField(tiff, TIFFTAG_IMAGEWIDTH, &width);
  TIFFGetField(tiff, TIFFTAG_IMAGELENGTH, &height);
  check_size(width, height, max_pixels, "TIFF");
  // Two kinds where libtiff's RGBA interface rounds otherwise than PIL, read
  // row by row here instead (strips only; tiled ones take the RGBA path):
  // 16-bit greyscale, which PIL opens as "I;16" and converts to RGB by
  // clipping, min(v, 255); and 8-bit CMYK, converted as PIL's cmyk2rgb.
  uint16_t bits = 0, samples = 0, photometric = 0, planar = PLANARCONFIG_CONTIG, inkset = INKSET_CMYK;
  TIFFGetFieldDefaulted(tiff, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tiff, TIFFTAG_SAMPLESPERPIXEL, &samples);
  TIFFGetFieldDefaulted(tiff, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tiff, TIFFTAG_INKSET, &inkset);
  TIFFGetField(tiff, TIFFTAG_PHOTOMETRIC, &photometric);
  const bool grey16 = bits == 16 && samples == 1 && photometric == PHOTOMETRIC_MINISBLACK;
  const bool cmyk = bits == 8 && samples == 4 && photometric == PHOTOMETRIC_SEPARATED && inkset == INKSET_CMYK;
  if ((grey16 || cmyk) && planar == PLANARCONFIG_CONTIG && !TIFFIsTiled(tiff)) {
    const uint64_t line_bytes = static_cast<uint64_t>(width) * (grey16 ? 2 : 4);
    if (TIFFScanlineSize64(tiff) != line_bytes) throw std::runtime_error("corrupt TIFF: bad scanline size");
    std::vector<uint8_t> line(line_bytes);
    Image image(static_cast<int>(width), static_cast<int>(height), 3);
    for (uint32_t y = 0; y < height; ++y) {
      if (TIFFReadScanline(tiff, line.data(), y, 0) < 0)
        throw std::runtime_error("corrupt TIFF: " + (memory.message.empty() ? std::string("cannot read a row") : memory.message));
      uint8_t* d = image.row(static_cast<int>(y));
      if (cmyk) {
        cmyk_to_rgb(line.data(), d, width, /*inverted=*/false);
        continue;
      }
      const auto* v = reinterpret_cast<const uint16_t*>(line.data());  // host order: libtiff swaps
      for (uint32_t x = 0; x < width; ++x, d += 3) d[0] = d[1] = d[2] = static_cast<uint8_t>(std::min<uint16_t>(v[x], 255));
    }
    return image;
  }
  // PIL keeps the colour stored under unassociated alpha; libtiff's RGBA
  // interface would premultiply it, so the alpha is declared associated
  // (in memory only), which passes the samples through unchanged.
  uint16_t extra_count = 0;
  uint16_t* extra = nullptr;
  if (TIFFGetField(tiff, TIFFTAG_EXTRASAMPLES, &extra_count, &extra) && extra_count > 0 && extra &&
      extra[0] == EXTRASAMPLE_UNASSALPHA) {
    std::vector<uint16_t> associated(extra, extra + extra_count);
    associated[0] = EXTRASAMPLE_ASSOCALPHA;
    TIFFSetField(tiff, TIFFTAG_EXTRASAMPLES, extra_count, associated.data());
  }
  char why[1024] = "";
  TIFFRGBAImage rgba;
  if (!TIFFRGBAImageOK(tiff, why) || !TIFFRGBAImageBegin(&rgba, tiff, /*stop on error=*/1, why))
    throw std::runtime_error(std::string("unsupported TIFF: ") + why);
  // Rows as stored: PIL ignores the Orientation tag (so does flowrun, as for EXIF).
  rgba.req_orientation = rgba.orientation;
  std::vector<uint32_t> raster(static_cast<size_t>(width) * height, 0);
  int ok = TIFFRGBAImageGet(&rgba, raster.data(), width, height);
  TIFFRGBAImageEnd(&rgba);
  if (!ok) throw std::runtime_error("corrupt TIFF: " + (memory.message.empty() ? std::string("cannot decode") : memory.message));
  Image image(static_cast<int>(width), static_cast<int>(height), 3);
  uint8_t* d = image.pixels.data();
  for (uint32_t p : raster) {
    *d++ = static_cast<uint8_t>(TIFFGetR(p));
    *d++ = static_cast<uint8_t>(TIFFGetG(p));
    *d++ = static_cast<uint8_t>(TIFFGetB(p));
  }
  return image;
}

// The byte where a binary PNM's (P5/P6) samples start, its maxval, width and
// height (each capped at 2^30); throws on a header that is not one.
size_t pnm_data_offset(const uint8_t* data, size_t size, int& maxval, long* width_height) {
  size_t i = 2;
  long values[3] = {0, 0, 0};
  for (long& value : values) {
    while (i < size && (std::isspace(data[i]) || data[i] == '#')) {
      if (data[i] == '#')
        while (i < size && data[i] != '\n' && data[i] != '\r') ++i;
      else
        ++i;
    }
    if (i >= size || !std::isdigit(data[i])) throw std::runtime_error("corrupt PNM: bad header");
    for (; i < size && std::isdigit(data[i]); ++i) value = std::min(value * 10 + (data[i] - '0'), 1L << 30);
  }
  if (i >= size || !std::isspace(data[i])) throw std::runtime_error("corrupt PNM: bad header");
  maxval = static_cast<int>(values[2]);
  width_height[0] = values[0];
  width_height[1] = values[1];
  return i + 1;
}

// BMP and binary PPM/PGM with stb_image (Debian's libstb-dev, compiled in
// here so that the sanitizers and the fuzzer see it). stb reads past the end
// of a short file as zeros where PIL says "truncated": the size a header
// promises is checked first.
Image decode_stb(const uint8_t* data, size_t size, int64_t max_pixels, const char* what) {
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) throw std::runtime_error(std::string(what) + " too large");
  int width = 0, height = 0, components = 0;
  size_t pnm_offset = 0;
  if (what[0] == 'P') {  // PNM: the header checked here first (stb's integer parsing can overflow)
    int maxval = 0;
    long header[2] = {0, 0};
    pnm_offset = pnm_data_offset(data, size, maxval, header);
    if (header[0] > (1 << 24) || header[1] > (1 << 24))
      throw std::runtime_error("PNM of " + std::to_string(header[0]) + "x" + std::to_string(header[1]) +
                               " pixels: a side over 16777216");
    if (maxval != 255)
      throw std::runtime_error("PNM with maxval " + std::to_string(maxval) + " is not supported (only 255)");
  }
  if (!stbi_info_from_memory(data, static_cast<int>(size), &width, &height, &components))
    throw std::runtime_error(std::string("unsupported or corrupt ") + what + ": " + stbi_failure_reason());
  check_size(width, height, max_pixels, what);
  uint64_t needed = 0;
  if (what[0] == 'P') {
    needed = pnm_offset + static_cast<uint64_t>(width) * height * (data[1] == '6' ? 3 : 1);
  } else if (size >= 26) {  // BMP: uncompressed (BI_RGB, BI_BITFIELDS) pixel arrays have a known size
    auto u32 = [&](size_t at) { return uint32_t(data[at]) | uint32_t(data[at + 1]) << 8 | uint32_t(data[at + 2]) << 16 | uint32_t(data[at + 3]) << 24; };
    const bool info_header = u32(14) >= 40 && size >= 34;  // else the 12-byte OS/2 core header
    uint32_t compression = info_header ? u32(30) : 0;
    unsigned bits = info_header ? data[28] | data[29] << 8 : data[24] | data[25] << 8;
    if (compression == 0 || compression == 3)
      needed = u32(10) + (static_cast<uint64_t>(width) * bits + 31) / 32 * 4 * static_cast<uint64_t>(height);
  }
  if (needed > size) throw std::runtime_error(std::string("corrupt ") + what + ": file ends early");
  unsigned char* pixels = stbi_load_from_memory(data, static_cast<int>(size), &width, &height, &components, 3);
  if (!pixels) throw std::runtime_error(std::string("unsupported or corrupt ") + what + ": " + stbi_failure_reason());
  Image image(width, height, 3);
  std::memcpy(image.pixels.data(), pixels, image.pixels.size());
  stbi_image_free(pixels);
  return image;
}

// Reads a whole file with plain POSIX calls (cheaper than a stream for many
// small files); refuses files over max_bytes.
void read_file(const std::string& path, int64_t max_bytes, PixelBuffer<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error("not a regular file");
  }
  if (st.st_size > max_bytes) {
    ::close(fd);
    throw std::runtime_error("file of " + std::to_string(st.st_size) + " bytes exceeds max_bytes");
  }
  bytes.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int error = errno;
      ::close(fd);
      throw std::runtime_error(n == 0 ? "file shrank while being read" : std::string("read failed: ") + std::strerror(error));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

const char* sniff_format(const uint8_t* data, size_t size) {
  auto starts = [&](const char* magic, size_t n, size_t at = 0) {
    return size >= at + n && std::memcmp(data + at, magic, n) == 0;
  };
  if (starts("\xFF\xD8\xFF", 3)) return "JPEG";
  if (starts("\x89PNG\r\n\x1A\n", 8)) return "PNG";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "WebP";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  if (starts("BM", 2)) return "BMP";
  if (size >= 3 && data[0] == 'P' && (data[1] == '5' || data[1] == '6') && std::isspace(data[2])) return "PNM";
  if (starts("GIF8", 4)) return "GIF";
  return nullptr;
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, int64_t max_pixels, int min_short_side, bool fast) {
  DecodeOptions options;
  options.max_pixels = max_pixels;
  options.min_short_side = min_short_side;
  options.fast = fast;
  return decode_image(data, size, options);
}

Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& options) {
  const int64_t max_pixels = options.max_pixels;
  if (size == 0) throw std::runtime_error("empty file");
  const char* format = sniff_format(data, size);
  const std::string kind = format ? format : "";
  if (kind == "JPEG") {
    try {
      return decode_jpeg(data, size, options);
    } catch (...) {
      t_jpeg.reset();
      throw;
    }
  }
  if (kind == "PNG") return decode_png(data, size, max_pixels);
  if (kind == "WebP") return decode_webp(data, size, max_pixels);
  if (kind == "TIFF") return decode_tiff(data, size, max_pixels);
  if (kind == "BMP" || kind == "PNM") return decode_stb(data, size, max_pixels, format);
  if (kind == "GIF") throw std::runtime_error("GIF is not supported (nor by torchvision's ImageFolder)");
  throw std::runtime_error("not an image flowrun reads (JPEG, PNG, WebP, TIFF, BMP, PPM/PGM)");
}

Schema Decode::schema() {
  return Schema("decode", "reads and decodes each sample's JPEG/PNG file to RGB (libjpeg-turbo, libpng)")
      .param(String("on_error", "a bad file: skip it (logged once, counted) or fail the run").def(std::string("skip"))
                 .one_of({"skip", "fail"}))
      .param(Int("max_pixels", "refuse images larger than this (decompression bombs)").def(int64_t{100'000'000})
                 .range(1, int64_t{1} << 40))
      .param(Int("max_bytes", "refuse files larger than this").def(int64_t{256} << 20).range(1, int64_t{1} << 40))
      .param(Int("min_size", "decode JPEGs at the smallest DCT scale keeping the shorter side >= this; 0 = full size")
                 .def(int64_t{0}).range(0, 1 << 20))
      .param(Bool("fast", "faster, slightly less accurate JPEG DCT and upsampling").def(false))
      .param(String("partial", "auto: for a crop right after decode (random_resized_crop, center_crop), a JPEG "
                               "decodes only the crop's part, bit-identical; off: always the whole image")
                 .def(std::string("auto"))
                 .one_of({"auto", "off"}));
}

Decode::Decode(const StageInit& init)
    : skip_(init.params.get_string("on_error") == "skip"),
      max_pixels_(init.params.get_int("max_pixels")),
      max_bytes_(init.params.get_int("max_bytes")),
      min_size_(static_cast<int>(init.params.get_int("min_size"))),
      fast_(init.params.get_bool("fast")),
      partial_(init.params.get_string("partial") == "auto"),
      name_(init.name),
      stages_(init.stages) {}

void Decode::begin_epoch(const EpochInfo&) {
  next_crop_ = partial_ ? find_next_crop() : nullptr;
}

const SourceWindowOp* Decode::find_next_crop() const {
  // The op right after this one: the next op of its own piped stage, or the
  // first op of the next stage in its flow (a stage feeds one stage).
  const std::vector<Stage*> mine = stages_.find(name_);
  const auto at = std::find(mine.begin(), mine.end(), static_cast<const Stage*>(this));
  if (at == mine.end()) return nullptr;
  if (at + 1 != mine.end()) return dynamic_cast<const SourceWindowOp*>(*(at + 1));
  const ResolvedGraph* graph = stages_.resolved_graph();
  if (!graph) return nullptr;
  const Stage* next = nullptr;
  for (const auto& chain : graph->chains)
    for (size_t i = 0; i < chain.size(); ++i) {
      if (chain[i] != name_) continue;
      const std::vector<Stage*> ops = i + 1 < chain.size() ? stages_.find(chain[i + 1]) : std::vector<Stage*>{};
      if (ops.empty() || (next && ops.front() != next)) return nullptr;  // nothing after, or different ops
      next = ops.front();
    }
  return dynamic_cast<const SourceWindowOp*>(next);
}

void Decode::process(Item& item) {
  Sample& sample = item.get<Sample>();
  if (!sample.image.empty()) return;  // pixels already (an in-memory source)
  bool ok = false;
  try {
    thread_local PixelBuffer<uint8_t> bytes;  // reused: no allocation per file
    read_file(sample.path, max_bytes_, bytes);
    DecodeOptions options;
    options.max_pixels = max_pixels_;
    options.min_short_side = min_size_;
    options.fast = fast_;
    if (const SourceWindowOp* crop = next_crop_)
      options.window = [crop, &sample](int width, int height) { return crop->source_window(sample, width, height); };
    sample.image = decode_image(bytes.data(), bytes.size(), options);
    decoded_.fetch_add(1, std::memory_order_relaxed);
    if (sample.image.is_window()) partial_count_.fetch_add(1, std::memory_order_relaxed);
    ok = true;
  } catch (const std::exception& e) {
    if (!skip_) throw std::runtime_error(sample.describe() + ": " + e.what());
    skipped_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(logged_mutex_);
      if (logged_.insert(sample.path).second) spdlog::warn("decode: skipping {}: {}", sample.describe(), e.what());
    }
  }
  if (sample.label >= 0 && sample.dataset && static_cast<size_t>(sample.label) < sample.dataset->class_names.size()) {
    std::lock_guard<std::mutex> lock(classes_mutex_);  // one short lock per file: nothing next to a decode
    if (per_class_.size() <= static_cast<size_t>(sample.label)) per_class_.resize(sample.label + 1);
    (ok ? per_class_[sample.label].first : per_class_[sample.label].second) += 1;
    if (!dataset_) dataset_ = sample.dataset;
  }
  if (!ok) item.drop();
}

void Decode::end_epoch(const EpochInfo&) {
  // on_error=skip skips bad files, not whole classes: a class left with no
  // pixels would train a model with an always-empty class.
  std::lock_guard<std::mutex> lock(classes_mutex_);
  for (size_t label = 0; label < per_class_.size(); ++label)
    if (per_class_[label].second > 0 && per_class_[label].first == 0) {
      const std::string& name = dataset_->class_names[label];
      throw std::runtime_error("class '" + name + "' of " + dataset_->name + ": none of its " +
                               std::to_string(per_class_[label].second) +
                               " files visited could be decoded (see the warnings above); fix or remove them");
    }
}

void Decode::report(Report& report) const {
  report.set("skipped", static_cast<double>(skipped_.load()));
  report.set("decoded", static_cast<double>(decoded_.load()));
  report.set("partial", static_cast<double>(partial_count_.load()));  // of them, decoded as a crop's window
}

FLOWRUN_REGISTER_STAGE(Decode);

}  // namespace flowrun::stages

#include "stages/image/decode.h"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <spdlog/spdlog.h>
#include <turbojpeg.h>

#include <cstring>
#include <limits>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/data/sample.h"

namespace flowrun::stages {

namespace {

// One TurboJPEG handle per thread (handles are not thread-safe), replaced
// after any failure: a handle that saw a broken stream can stay broken.
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

Image decode_jpeg(const uint8_t* data, size_t size, int64_t max_pixels, int min_short_side, bool fast) {
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
  Image image(out_w, out_h, cmyk ? 4 : 3);
  if (tjDecompress2(h, data, static_cast<unsigned long>(size), image.pixels.data(), out_w, 0, out_h,
                    cmyk ? TJPF_CMYK : TJPF_RGB, flags) != 0) {
    // Warnings (stray bytes between markers...) still give a full image, as
    // PIL accepts; a truncated file gives a partly grey one and is an error.
    std::string message = tjGetErrorStr2(h);
    if (tjGetErrorCode(h) != TJERR_WARNING || message.find("Premature end") != std::string::npos) jpeg_fail(message);
  }
  if (cmyk) {
    // Adobe JPEGs store inverted CMYK; libjpeg hands it back as stored.
    Image rgb(out_w, out_h, 3);
    const uint8_t* s = image.pixels.data();
    uint8_t* d = rgb.pixels.data();
    for (size_t i = 0, n = static_cast<size_t>(out_w) * out_h; i < n; ++i, s += 4, d += 3) {
      d[0] = static_cast<uint8_t>(s[0] * s[3] / 255);
      d[1] = static_cast<uint8_t>(s[1] * s[3] / 255);
      d[2] = static_cast<uint8_t>(s[2] * s[3] / 255);
    }
    return rgb;
  }
  return image;
}

Image decode_png(const uint8_t* data, size_t size, int64_t max_pixels) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, data, size))
    throw std::runtime_error(std::string("corrupt PNG: ") + png.message);
  try {
    check_size(png.width, png.height, max_pixels, "PNG");
  } catch (...) {
    png_image_free(&png);
    throw;
  }
  png.format = PNG_FORMAT_RGB;  // grey, palette, 16-bit and alpha (composited on black) all become 8-bit RGB
  Image image(static_cast<int>(png.width), static_cast<int>(png.height), 3);
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    throw std::runtime_error("corrupt PNG: " + message);
  }
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

}  // namespace

Image decode_image(const uint8_t* data, size_t size, int64_t max_pixels, int min_short_side, bool fast) {
  if (size == 0) throw std::runtime_error("empty file");
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    try {
      return decode_jpeg(data, size, max_pixels, min_short_side, fast);
    } catch (...) {
      t_jpeg.reset();
      throw;
    }
  }
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return decode_png(data, size, max_pixels);
  throw std::runtime_error("not a JPEG or PNG image");
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
      .param(Bool("fast", "faster, slightly less accurate JPEG DCT and upsampling").def(false));
}

Decode::Decode(const StageInit& init)
    : skip_(init.params.get_string("on_error") == "skip"),
      max_pixels_(init.params.get_int("max_pixels")),
      max_bytes_(init.params.get_int("max_bytes")),
      min_size_(static_cast<int>(init.params.get_int("min_size"))),
      fast_(init.params.get_bool("fast")) {}

void Decode::process(Item& item) {
  Sample& sample = item.get<Sample>();
  if (!sample.image.empty()) return;  // pixels already (an in-memory source)
  try {
    thread_local PixelBuffer<uint8_t> bytes;  // reused: no allocation per file
    read_file(sample.path, max_bytes_, bytes);
    sample.image = decode_image(bytes.data(), bytes.size(), max_pixels_, min_size_, fast_);
    decoded_.fetch_add(1, std::memory_order_relaxed);
  } catch (const std::exception& e) {
    if (!skip_) throw std::runtime_error(sample.describe() + ": " + e.what());
    skipped_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(logged_mutex_);
      if (logged_.insert(sample.path).second) spdlog::warn("decode: skipping {}: {}", sample.describe(), e.what());
    }
    item.drop();
  }
}

void Decode::report(Report& report) const {
  report.set("skipped", static_cast<double>(skipped_.load()));
  report.set("decoded", static_cast<double>(decoded_.load()));
}

FLOWRUN_REGISTER_STAGE(Decode);

}  // namespace flowrun::stages

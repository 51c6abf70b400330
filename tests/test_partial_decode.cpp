// Partial decode (decode partial=auto): a JPEG decoded only where the crop
// after decode reads gives, there, the very pixels of the full decode, and
// every file gets the same error or acceptance both ways.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

#include "data_support.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "stages/data/sample.h"
#include "stages/image/decode.h"
#include "stages/image/geometry.h"
#include "stages/image/random_op.h"
#include "stages/tensor/batch_data.h"
#include "test_support.h"

using namespace flowrun;
using stages::DecodeOptions;
using stages::Image;
using stages::Window;

namespace {

// How a test JPEG is written (libjpeg's compressor, for what TurboJPEG's
// cannot: any sampling factors, restart markers, arithmetic coding).
struct Kind {
  const char* name;
  int components;  // 1 grey, 3 YCbCr, 4 CMYK (Adobe, inverted as Photoshop writes it)
  int h0, v0;      // the first component's sampling factors (the others 1x1)
  bool progressive = false;
  int restart_rows = 0;  // restart markers every this many MCU rows
  bool arithmetic = false;
};

const Kind kKinds[] = {
    {"444", 3, 1, 1},
    {"422", 3, 2, 1},
    {"420", 3, 2, 2},
    {"440", 3, 1, 2},
    {"411", 3, 4, 1},
    {"grey", 1, 1, 1},
    {"cmyk", 4, 1, 1},
    {"progressive420", 3, 2, 2, true},
    {"progressive444", 3, 1, 1, true},
    {"progressive_grey", 1, 1, 1, true},
    {"restart420", 3, 2, 2, false, 1},
    {"restart422", 3, 2, 1, false, 2},
    {"arithmetic420", 3, 2, 2, false, 0, true},
};

// Noise over gradients: detail in every channel, so that chroma upsampling shows.
std::vector<uint8_t> test_samples(int width, int height, int components, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> samples(static_cast<size_t>(width) * height * components);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < components; ++c) {
        const int smooth = (x * (40 + 30 * c) / std::max(width, 1) + y * (90 - 20 * c) / std::max(height, 1)) * 2;
        samples[(static_cast<size_t>(y) * width + x) * components + c] =
            static_cast<uint8_t>(std::clamp(smooth + static_cast<int>(rng() % 90), 0, 255));
      }
  return samples;
}

std::vector<uint8_t> encode(const Kind& kind, int width, int height, uint32_t seed, int quality = 90) {
  const std::vector<uint8_t> samples = test_samples(width, height, kind.components, seed);
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr jerr{};
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &out, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = kind.components;
  cinfo.in_color_space = kind.components == 1 ? JCS_GRAYSCALE : kind.components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  if (kind.components == 4) jpeg_set_colorspace(&cinfo, JCS_CMYK);
  jpeg_set_quality(&cinfo, quality, TRUE);
  cinfo.comp_info[0].h_samp_factor = kind.h0;
  cinfo.comp_info[0].v_samp_factor = kind.v0;
  for (int c = 1; c < kind.components; ++c) cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  if (kind.progressive) jpeg_simple_progression(&cinfo);
  cinfo.restart_in_rows = kind.restart_rows;
  cinfo.arith_code = kind.arithmetic ? TRUE : FALSE;
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(width) * kind.components;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(samples.data()) + cinfo.next_scanline * stride;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::vector<uint8_t> bytes(out, out + size);
  jpeg_destroy_compress(&cinfo);
  std::free(out);
  return bytes;
}

// A decode's outcome: its pixels inside `window`, or its error.
struct Outcome {
  std::string error;
  Image pixels;        // the window's pixels
  bool partial = false;  // decoded as a window
};

Outcome decode_window(const std::vector<uint8_t>& bytes, const Window& window, int min_size, bool fast,
                      bool windowed, bool stop_after_window) {
  DecodeOptions options;
  options.min_short_side = min_size;
  options.fast = fast;
  options.stop_after_window = stop_after_window;
  if (windowed) options.window = [&window](int, int) { return window; };
  Outcome outcome;
  try {
    Image image = stages::decode_image(bytes.data(), bytes.size(), options);
    outcome.partial = image.is_window();
    const int full_w = stages::full_width(image), full_h = stages::full_height(image);
    // The part of the window inside the image (a crop may reach beyond it).
    const int top = std::max(window.top, 0), left = std::max(window.left, 0);
    const Window inside{top, left, std::min(window.top + window.height, full_h) - top,
                        std::min(window.left + window.width, full_w) - left};
    if (outcome.partial) {
      EXPECT_EQ(image.exact.top, inside.top);
      EXPECT_EQ(image.exact.left, inside.left);
      EXPECT_EQ(image.exact.height, inside.height);
      EXPECT_EQ(image.exact.width, inside.width);
    }
    stages::Sample sample;
    const Window local = stages::local_window(image, inside, "test", sample);
    outcome.pixels = stages::crop(image, local.top, local.left, local.height, local.width);
  } catch (const std::exception& e) {
    outcome.error = e.what();
  }
  return outcome;
}

// A random window of a width x height image: anywhere, any size, sometimes
// touching an edge, sometimes the whole width or height, sometimes partly outside.
Window random_window(std::mt19937& rng, int width, int height) {
  auto pick = [&rng](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  Window w;
  w.height = 1 + pick(height);
  w.width = 1 + pick(width);
  w.top = pick(height - w.height + 1);
  w.left = pick(width - w.width + 1);
  switch (pick(8)) {
    case 0: w.top = 0; break;
    case 1: w.left = 0; break;
    case 2: w.top = height - w.height; w.left = width - w.width; break;
    case 3: w.left = 0; w.width = width; break;
    case 4: w.top -= 3; w.height += 9; break;  // beyond the image: only its inside part counts
    default: break;
  }
  return w;
}

// The decoded size of a width x height file at min_size (decode's DCT scaling).
void decoded_size(const std::vector<uint8_t>& bytes, int min_size, int& width, int& height) {
  DecodeOptions options;
  options.min_short_side = min_size;
  options.window = [&](int w, int h) {
    width = w;
    height = h;
    return std::optional<Window>();
  };
  stages::decode_image(bytes.data(), bytes.size(), options);
}

}  // namespace

TEST(PartialDecode, AWindowEqualsTheFullDecodeBitForBit) {
  const int sizes[][2] = {{1, 1}, {1, 37}, {41, 1}, {17, 33}, {33, 17}, {64, 48}, {97, 61}, {213, 160}};
  std::mt19937 rng(20261204);
  int compared = 0;
  for (const Kind& kind : kKinds)
    for (const auto& size : sizes) {
      const auto bytes = encode(kind, size[0], size[1], static_cast<uint32_t>(rng()));
      int partial = 0;
      // min_size: none, the smallest DCT scale (1/8), one in between.
      for (int min_size : {0, 1, std::max(1, std::min(size[0], size[1]) / 3)})
        for (bool fast : {false, true}) {
          int width = 0, height = 0;
          decoded_size(bytes, min_size, width, height);
          for (int n = 0; n < 24; ++n) {
            const Window window = random_window(rng, width, height);
            const Outcome full = decode_window(bytes, window, min_size, fast, false, false);
            ASSERT_EQ(full.error, "") << kind.name;
            for (bool stop : {true, false}) {
              const Outcome part = decode_window(bytes, window, min_size, fast, true, stop);
              ASSERT_EQ(part.error, "") << kind.name;
              partial += part.partial;
              ++compared;
              ASSERT_TRUE(full.pixels.pixels == part.pixels.pixels)
                  << kind.name << " " << size[0] << "x" << size[1] << " min_size=" << min_size << " fast=" << fast
                  << " stop=" << stop << " decoded " << width << "x" << height << ", window top=" << window.top
                  << " left=" << window.left << " " << window.width << "x" << window.height << (part.partial ? " (a window)" : " (whole both times)");
            }
          }
        }
      // Partial decode is used wherever a window leaves something out (not for 1x1).
      if (size[0] * size[1] > 64) {
        EXPECT_GT(partial, 0) << kind.name << " " << size[0] << "x" << size[1];
      }
    }
  EXPECT_GT(compared, 20000);
}

TEST(PartialDecode, BrokenFilesGiveTheSameErrorOrTheSamePixels) {
  std::mt19937 rng(7);
  int errors = 0, accepted = 0;
  for (const Kind& kind : kKinds) {
    const auto good = encode(kind, 97, 61, static_cast<uint32_t>(rng()));
    std::vector<std::vector<uint8_t>> broken;
    for (int k = 1; k <= 16; ++k) broken.emplace_back(good.begin(), good.begin() + good.size() * k / 17);  // truncated
    broken.emplace_back(good.begin(), good.end() - 1);  // half an EOI
    broken.emplace_back(good.begin(), good.end() - 2);  // no EOI
    for (int k = 0; k < 6; ++k) {  // a corrupt byte in the entropy data (or a header)
      auto bytes = good;
      bytes[bytes.size() / 3 + (bytes.size() / 2) * k / 6] ^= static_cast<uint8_t>(1 + rng() % 255);
      broken.push_back(bytes);
    }
    auto junk = good;  // stray bytes before the EOI: a warning PIL and decode accept
    junk.insert(junk.end() - 2, {0x12, 0x34, 0x56});
    broken.push_back(junk);
    auto trailing = good;  // bytes after the EOI
    trailing.insert(trailing.end(), {0x00, 0xFF, 0xD9});
    broken.push_back(trailing);
    for (const auto& bytes : broken)
      for (int n = 0; n < 4; ++n) {
        const Window window = random_window(rng, 97, 61);
        const Outcome full = decode_window(bytes, window, 0, false, false, false);
        for (bool stop : {true, false}) {
          const Outcome part = decode_window(bytes, window, 0, false, true, stop);
          ASSERT_EQ(full.error, part.error) << kind.name << " " << bytes.size() << " of " << good.size() << " bytes";
          ASSERT_TRUE(full.pixels.pixels == part.pixels.pixels) << kind.name << " " << bytes.size() << " bytes";
          (full.error.empty() ? accepted : errors)++;
        }
      }
  }
  EXPECT_GT(errors, 100);
  EXPECT_GT(accepted, 100);
}

namespace {
// Whether libjpeg decodes `bytes` with no warning and no error.
struct ProbeErrors {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};
bool probe_decode(jpeg_decompress_struct& cinfo, const std::vector<uint8_t>& bytes, std::vector<uint8_t>& row) {
  if (setjmp(reinterpret_cast<ProbeErrors*>(cinfo.err)->jump)) return false;
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  jpeg_start_decompress(&cinfo);
  row.resize(static_cast<size_t>(cinfo.output_width) * cinfo.output_components);
  JSAMPROW r = row.data();
  while (cinfo.output_scanline < cinfo.output_height) jpeg_read_scanlines(&cinfo, &r, 1);
  jpeg_finish_decompress(&cinfo);
  return true;
}
bool decodes_cleanly(const std::vector<uint8_t>& bytes) {
  jpeg_decompress_struct cinfo{};
  ProbeErrors errors{};
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = [](j_common_ptr c) { std::longjmp(reinterpret_cast<ProbeErrors*>(c->err)->jump, 1); };
  errors.pub.emit_message = [](j_common_ptr c, int level) { c->err->num_warnings += level < 0; };
  jpeg_create_decompress(&cinfo);
  std::vector<uint8_t> row;
  const bool ok = probe_decode(cinfo, bytes, row);
  const bool warned = errors.pub.num_warnings > 0;
  jpeg_destroy_decompress(&cinfo);
  return ok && !warned;
}
}  // namespace

// The decode fuzzer's corpus (hostile files of every kind): the same error
// or acceptance, and the same pixels, whole or as windows, at full size and scaled.
TEST(PartialDecode, TheFuzzCorpusGivesTheSameOutcomesBothWays) {
  std::mt19937 rng(3);
  int files = 0, partial = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FLOWRUN_SOURCE_DIR "/fuzz/corpus/decode")) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() < 3 || bytes[0] != 0xFF || bytes[1] != 0xD8) continue;  // JPEGs only
    ++files;
    for (int min_size : {0, 16}) {
      int width = 64, height = 64;
      try {
        decoded_size(bytes, min_size, width, height);
      } catch (const std::exception&) {  // a bad header: windows of any size
      }
      // Pixels only where libjpeg decodes the file without a warning: today's
      // decode accepts a fatal error after a warning ("Bogus Huffman table
      // definition" after "extraneous bytes": tjGetErrorCode says warning)
      // with rows never written, and its TurboJPEG handle, reused, lends a
      // damaged file the previous file's tables: such pixels vary.
      const bool reproducible = decodes_cleanly(bytes);
      for (int n = 0; n < 6; ++n) {
        const Window window = random_window(rng, width, height);
        const Outcome full = decode_window(bytes, window, min_size, false, false, false);
        for (bool stop : {true, false}) {
          const Outcome part = decode_window(bytes, window, min_size, false, true, stop);
          ASSERT_EQ(full.error, part.error) << entry.path();
          if (reproducible)
            ASSERT_TRUE(full.pixels.pixels == part.pixels.pixels)
                << entry.path() << " min_size=" << min_size << " stop=" << stop << " window top=" << window.top
                << " left=" << window.left << " " << window.width << "x" << window.height << (part.partial ? " (a window)" : " (whole both times)");
          partial += part.partial;
        }
      }
    }
  }
  EXPECT_GT(files, 20);
  EXPECT_GT(partial, 0);
}

TEST(PartialDecode, AWindowReachesOnlyTheCropItWasDecodedFor) {
  const auto bytes = encode(kKinds[2], 97, 61, 3);
  DecodeOptions options;
  options.window = [](int, int) { return Window{10, 20, 30, 40}; };
  stages::Sample sample;
  sample.path = "cat.jpg";
  sample.image = stages::decode_image(bytes.data(), bytes.size(), options);
  ASSERT_TRUE(sample.image.is_window());
  EXPECT_EQ(stages::full_width(sample.image), 97);
  EXPECT_EQ(stages::full_height(sample.image), 61);
  // Any other op refuses it, naming the file.
  EXPECT_THROW(
      {
        try {
          stages::require_pixels(sample, "hflip");
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("cat.jpg"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("window"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
  // A crop outside the exact part is an error, not pixels that may differ.
  EXPECT_THROW(stages::local_window(sample.image, Window{9, 20, 30, 40}, "crop", sample), std::runtime_error);
  const Window inside = stages::local_window(sample.image, Window{10, 20, 30, 40}, "crop", sample);
  EXPECT_EQ(inside.top, 10 - sample.image.origin_top);
  EXPECT_EQ(inside.left, 20 - sample.image.origin_left);
}

namespace {

// Every batch's bytes (images, then labels), for comparing runs exactly.
class PartialDigest : public SerialStage {
 public:
  static Schema schema() { return Schema("partial_digest", "raw bytes of every batch (partial decode tests)"); }
  explicit PartialDigest(const StageInit&) { bytes.clear(); }
  void process(Item& item, const Emit& emit) override {
    const auto& batch = item.get<stages::Batch>();
    at::Tensor images = batch.images.contiguous(), labels = batch.labels.to(at::kLong).contiguous();
    bytes.append(static_cast<const char*>(images.data_ptr()), images.nbytes());
    bytes.append(static_cast<const char*>(labels.data_ptr()), labels.nbytes());
    emit(item);
  }
  static std::string bytes;
};
std::string PartialDigest::bytes;
FLOWRUN_REGISTER_STAGE(PartialDigest);

struct FlowRun {
  std::string bytes;
  double partial = 0, decoded = 0;
};

FlowRun run_flow(const std::string& text, const std::vector<std::string>& sets) {
  ResolvedGraph graph = test::resolve_text(text, sets);
  RunOptions options;
  options.threads = 2;
  RunResult result = run_graph(graph, options);
  FlowRun run;
  run.bytes = std::move(PartialDigest::bytes);
  for (const auto& stage : result.stages)
    if (stage.name == "decode" || stage.name == "prep") {
      auto figure = [&](const char* key) { return stage.figures.count(key) ? stage.figures.at(key) : 0.0; };
      run.partial += figure("partial");
      run.decoded += figure("decoded");
    }
  return run;
}

// Files of every kind and several sizes, in two classes.
std::string mixed_folder() {
  std::string root = test::temp_dir();
  std::mt19937 rng(11);
  const int sizes[][2] = {{97, 61}, {64, 64}, {213, 160}, {33, 17}, {160, 230}};
  int i = 0;
  for (const Kind& kind : kKinds)
    for (const auto& size : sizes) {
      const std::string cls = i % 2 ? "b" : "a";
      std::filesystem::create_directories(root + "/" + cls);
      test::write_file(root + "/" + cls + "/" + kind.name + "_" + std::to_string(i++) + ".jpg",
                       encode(kind, size[0], size[1], static_cast<uint32_t>(rng())));
    }
  return root;
}

}  // namespace

TEST(PartialDecode, AFlowGivesTheSameBatchesWithPartialAutoAndOff) {
  const std::string root = mixed_folder();
  const std::string head = "run in_flight=32 epochs=2\nsource = imagefolder root=\"" + root +
                           "\" sampler=sampler\nsampler = shuffle\n";
  const std::string tail = "normalize = normalize stats=cifar\nbatch = batch size=8\nout = partial_digest\n";
  // PARTIAL: decode's partial= setting.
  const std::vector<std::string> graphs = {
      // decode, then a stage whose first op is the crop
      head + "decode = decode PARTIAL\naugment = random_resized_crop size=24 | hflip\n" + tail,
      // one piped stage
      head + "prep = decode PARTIAL | random_resized_crop size=24 scale=[0.02, 0.5] | hflip\n" + tail,
      // DCT scaling first
      head + "decode = decode min_size=40 PARTIAL\naugment = random_resized_crop size=24\n" + tail,
      // center_crop right after decode
      head + "decode = decode PARTIAL\naugment = center_crop size=24\n" + tail,
  };
  auto with = [](std::string graph, const std::string& partial) {
    return graph.replace(graph.find("PARTIAL"), 7, "partial=" + partial);
  };
  for (const std::string& graph : graphs) {
    const FlowRun off = run_flow(with(graph, "off"), {"run.seed=5"});
    const FlowRun on = run_flow(with(graph, "auto"), {"run.seed=5"});
    ASSERT_FALSE(off.bytes.empty());
    EXPECT_TRUE(off.bytes == on.bytes) << graph;
    EXPECT_EQ(off.partial, 0) << graph;
    EXPECT_GT(on.partial, on.decoded / 3) << graph;  // most windows leave something out
  }
}

// The measurement in bench/README.md: decode time per file, whole versus a
// RandomResizedCrop window, stopping after it or entropy-decoding the rest.
//   FLOWRUN_PARTIAL_BENCH_DIR=DIR build/tests/data_tests
//     --gtest_also_run_disabled_tests --gtest_filter=PartialDecode.DISABLED_Timing
TEST(PartialDecode, DISABLED_Timing) {
  const char* dir = std::getenv("FLOWRUN_PARTIAL_BENCH_DIR");
  ASSERT_TRUE(dir) << "set FLOWRUN_PARTIAL_BENCH_DIR to a folder of JPEGs (bench/make_imagefolder.py)";
  std::vector<std::vector<uint8_t>> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file() && (entry.path().extension() == ".JPEG" || entry.path().extension() == ".jpg")) {
      std::ifstream in(entry.path(), std::ios::binary);
      files.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  ASSERT_FALSE(files.empty());
  test::StageBench bench("source = count\nrrc = random_resized_crop size=160\n");
  auto& crop = dynamic_cast<stages::SourceWindowOp&>(bench.stage("rrc"));
  enum Way { Whole, Stop, Finish };
  auto time_us = [&](Way way) -> double {
    std::vector<double> runs;
    for (int repeat = 0; repeat < 3; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      for (size_t i = 0; i < files.size(); ++i) {
        stages::Sample sample;
        sample.index = static_cast<int64_t>(i);
        DecodeOptions options;
        options.stop_after_window = way == Stop;
        if (way != Whole)
          options.window = [&](int w, int h) { return crop.source_window(sample, w, h); };
        Image image = stages::decode_image(files[i].data(), files[i].size(), options);
        if (image.empty()) throw std::runtime_error("no pixels");
      }
      runs.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
                     static_cast<double>(files.size()));
    }
    std::sort(runs.begin(), runs.end());
    return runs[1];
  };
  for (int round = 0; round < 2; ++round)  // the first round warms the caches
    std::printf("%zu files, us per file (median of 3): whole %.1f, window stopping after it %.1f, window then the rest "
                "entropy-decoded %.1f\n",
                files.size(), time_us(Whole), time_us(Stop), time_us(Finish));
}

TEST(PartialDecode, OnlyACropRightAfterDecodeGetsAWindow) {
  const std::string root = mixed_folder();
  // hflip between decode and the crop: hflip would read the whole image.
  for (const std::string& ops : {std::string("decode = decode\naugment = hflip | random_resized_crop size=24\n"),
                                 std::string("prep = decode | hflip | random_resized_crop size=24\n")}) {
    const FlowRun run = run_flow("run in_flight=32 epochs=1\nsource = imagefolder root=\"" + root + "\"\n" + ops +
                                     "normalize = normalize stats=cifar\nbatch = batch size=8\nout = partial_digest\n",
                                 {});
    EXPECT_GT(run.decoded, 0) << ops;
    EXPECT_EQ(run.partial, 0) << ops;
  }
}

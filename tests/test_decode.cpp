// Decoding: formats, colour spaces, DCT scaling, and every kind of bad file.
#include <gtest/gtest.h>
#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data_support.h"
#include "pipeline/executor.h"
#include "stages/data/imagefolder.h"
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

namespace {
// The oracle's files (tests/oracle/pil_images.py): every kind of image file,
// each with PIL's Image.open(f).convert('RGB') pixels. Made once per run.
struct OracleCase {
  std::string name;
  int width = 0, height = 0;
};
const std::string& oracle_dir() {
  static const std::string dir = [] {
    std::string d = test::temp_dir();
    std::string command = FLOWRUN_ORACLE_PYTHON " -W ignore '" FLOWRUN_SOURCE_DIR "/tests/oracle/pil_images.py' '" + d + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("oracle failed: " + command);
    return d;
  }();
  return dir;
}
std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
// Decodes each oracle file whose name ends with one of `extensions` and
// compares it with PIL's pixels; returns how many files were compared.
int expect_pil_parity(const std::vector<std::string>& extensions) {
  std::ifstream manifest(oracle_dir() + "/manifest.txt");
  int compared = 0;
  for (OracleCase c; manifest >> c.name >> c.width >> c.height;) {
    bool wanted = false;
    for (const auto& ext : extensions)
      wanted |= c.name.size() > ext.size() && c.name.compare(c.name.size() - ext.size(), ext.size(), ext) == 0;
    if (!wanted) continue;
    auto bytes = read_bytes(oracle_dir() + "/" + c.name);
    auto pil = read_bytes(oracle_dir() + "/" + c.name + ".rgb");
    Image image;
    try {
      image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": " << e.what();
      continue;
    }
    ++compared;
    EXPECT_EQ(image.width, c.width) << c.name;
    EXPECT_EQ(image.height, c.height) << c.name;
    EXPECT_EQ(image.channels, 3) << c.name;
    if (image.pixels.size() != pil.size()) {
      ADD_FAILURE() << c.name << ": " << image.pixels.size() << " bytes, PIL " << pil.size();
      continue;
    }
    size_t differ = 0, first = 0;
    int worst = 0;
    for (size_t i = 0; i < pil.size(); ++i)
      if (image.pixels[i] != pil[i]) {
        if (!differ++) first = i;
        worst = std::max(worst, std::abs(image.pixels[i] - pil[i]));
      }
    EXPECT_EQ(differ, 0u) << c.name << ": " << differ << " of " << pil.size() << " bytes differ from PIL, by up to "
                          << worst << "; first at pixel " << first / 3 << " channel " << first % 3 << ": "
                          << int(image.pixels[first]) << " vs PIL " << int(pil[first]);
  }
  return compared;
}
}  // namespace

// Every PNG colour type and bit depth (grey 1/2/4/8/16, grey+alpha 8/16,
// palette 1/2/4/8 with and without tRNS, RGB 8/16 with and without tRNS,
// RGBA 8/16), plain and Adam7-interlaced, equals PIL's convert('RGB') byte
// for byte: alpha dropped keeping the stored colour (white under the
// transparent background here), 16-bit RGB as v >> 8, 16-bit grey clipped.
TEST(Decode, PngOfEveryKindEqualsPil) {
  EXPECT_EQ(expect_pil_parity({".png"}), 44);
}

// Greyscale, CMYK (Adobe, inverted), baseline and progressive, 4:4:4 / 4:2:2
// / 4:2:0 JPEGs; and WebP, TIFF, BMP, PPM/PGM of their common kinds.
TEST(Decode, JpegWebpTiffBmpPnmOfEveryKindEqualPil) {
  EXPECT_EQ(expect_pil_parity({".jpg"}), 5);
  EXPECT_EQ(expect_pil_parity({".webp"}), 4);
  EXPECT_EQ(expect_pil_parity({".tif", ".tiff"}), 10);
  EXPECT_EQ(expect_pil_parity({".bmp", ".ppm", ".pgm"}), 6);
}

// A 16-bit file gives the same pixels as its 8-bit twin (v >> 8, as PIL),
// not gamma-encoded as if linear (32768 came out 186, 16384 136).
TEST(Decode, SixteenBitRgbPngEqualsItsEightBitTwin) {
  for (int value : {32768, 16384, 65535, 255}) {
    Image uniform(8, 4, 3);
    std::fill(uniform.pixels.begin(), uniform.pixels.end(), static_cast<uint8_t>(value >> 8));
    auto eight = test::encode_png(uniform, PNG_COLOR_TYPE_RGB, 8);
    auto sixteen = test::encode_png(uniform, PNG_COLOR_TYPE_RGB, 16);  // each sample v * 257
    Image a = decode_image(eight.data(), eight.size(), kMaxPixels);
    Image b = decode_image(sixteen.data(), sixteen.size(), kMaxPixels);
    EXPECT_EQ(a.pixels, b.pixels) << value;
    EXPECT_EQ(b.pixels[0], value >> 8) << value;
  }
}

// The transparent part of an RGBA PNG comes from the file, the same on
// every decode: each decode first dirties the heap where its buffer lands.
TEST(Decode, TransparentPixelsKeepTheirStoredColourEveryTime) {
  Image opaque = test::pattern_image(32, 32);
  for (size_t i = 0; i < 32 * 32; ++i)  // a coloured disc; outside it, transparent white
    if (std::hypot(i % 32 - 16.0, i / 32 - 16.0) >= 32 / 3.0) std::fill_n(&opaque.pixels[3 * i], 3, 255);
  auto bytes = test::encode_png(opaque, PNG_COLOR_TYPE_RGBA, 8, /*transparent_outside_disc=*/true);
  for (int round = 0; round < 4; ++round) {
    {
      std::vector<uint8_t> junk(32 * 32 * 3, static_cast<uint8_t>(17 + 80 * round));
      volatile uint8_t sink = junk[5];
      (void)sink;
    }
    Image image = decode_image(bytes.data(), bytes.size(), kMaxPixels);
    EXPECT_EQ(image.pixels, opaque.pixels) << "round " << round;
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
  EXPECT_EQ(decode_error({'h', 'e', 'l', 'l', 'o'}), "not an image flowrun reads (JPEG, PNG, WebP, TIFF, BMP, PPM/PGM)");
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
  const std::string error = test::without_where(fail.error);
  bool named = error == "stage 'decode' (decode): " + root + "/a/empty.jpg: empty file" ||
               error == "stage 'decode' (decode): " + root +
                            "/b/text.png: not an image flowrun reads (JPEG, PNG, WebP, TIFF, BMP, PPM/PGM)" ||
               error.rfind("stage 'decode' (decode): " + root + "/b/truncated.jpeg: corrupt JPEG: ", 0) == 0;
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

// torchvision's ImageFolder extensions, any case; the bytes decide the
// format (a .tif that is really a JPEG decodes); other types are counted
// in the source's figures, never silently dropped.
TEST(ImageFolder, TakesTorchvisionsFileTypesAndCountsTheOthers) {
  std::string root = test::make_jpeg_folder({"a", "b"}, 4, 24, 20);
  for (const char* name : {"lossy.webp", "rgb.bmp", "rgb_lzw.tiff", "rgb.ppm", "grey.pgm", "rgb.tif"}) {
    std::string ext = std::filesystem::path(name).extension().string();
    for (auto& c : ext) c = static_cast<char>(std::toupper(c));  // upper-case names count too
    test::write_file(root + "/a/" + std::string(name).substr(0, std::string(name).find('.')) + ext,
                     read_bytes(oracle_dir() + "/" + name));
  }
  test::write_file(root + "/a/really_a_jpeg.tif", test::encode_jpeg(test::pattern_image(20, 20), 90));
  test::write_file(root + "/a/a4.gif", {'G', 'I', 'F', '8', '9', 'a'});
  test::write_file(root + "/a/notes.txt", {'x'});
  test::write_file(root + "/b/sub/readme.md", {'x'});
  FolderRun run = run_decode_graph(root, "fail");
  ASSERT_EQ(run.error, "");
  const auto& source = run.result.stages[0];
  EXPECT_EQ(source.figures.at("dataset_size"), 15.0);  // 4 + 6 + 1 in a, 4 in b
  EXPECT_EQ(source.figures.at("other_files_ignored"), 3.0);
  EXPECT_EQ(run.result.stages[1].figures.at("decoded"), 15.0);
}

// A dataset unzipped from a Mac archive: __MACOSX/ beside the classes,
// "._name.jpg" AppleDouble files and .DS_Store inside them, a hidden folder.
// None of it is a class or a sample; real classes keep their labels.
TEST(ImageFolder, HiddenEntriesAndMacDebrisAreLeftOut) {
  std::string root = test::make_jpeg_folder({"cat", "dog"}, 2, 16, 16);
  const std::vector<uint8_t> apple_double = {0x00, 0x05, 0x16, 0x07, 0x00, 0x02, 0x00, 0x00};
  test::write_file(root + "/__MACOSX/cat/._cat_0.jpg", apple_double);
  test::write_file(root + "/.git/HEAD", {'x'});
  test::write_file(root + "/cat/._cat_0.jpg", apple_double);
  test::write_file(root + "/cat/.DS_Store", {'x'});
  test::write_file(root + "/dog/.thumbnails/t.jpg", test::encode_jpeg(test::pattern_image(8, 8)));
  stages::FolderListing listing = stages::list_image_folder(root);
  EXPECT_EQ(listing.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(listing.paths.size(), 4u);
  EXPECT_EQ(listing.labels, (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_EQ(listing.ignored.hidden, 5);  // __MACOSX, .git, ._cat_0.jpg, .DS_Store, .thumbnails
  EXPECT_EQ(listing.ignored.other_types, 0);
  FolderRun run = run_decode_graph(root, "fail");
  ASSERT_EQ(run.error, "");
  EXPECT_EQ(run.result.stages[0].figures.at("classes"), 2.0);
  EXPECT_EQ(run.result.stages[0].figures.at("hidden_ignored"), 5.0);
}

// on_error=skip skips files, not classes: a class folder none of whose
// files decode stops the run, naming the class, never an empty class.
TEST(Decode, ClassWithNoDecodableFileIsAnErrorEvenWhenSkipping) {
  std::string root = test::make_jpeg_folder({"a", "c"}, 2, 16, 16);
  test::write_file(root + "/b/one.jpg", {'n', 'o', 'p', 'e'});
  test::write_file(root + "/b/two.png", {});
  FolderRun run = run_decode_graph(root, "skip");
  EXPECT_EQ(run.error, "stage 'decode' (decode): class 'b' of " + root +
                           ": none of its 2 files visited could be decoded (see the warnings above); fix or remove them");
  // One good file is enough.
  test::write_file(root + "/b/three.jpg", test::encode_jpeg(test::pattern_image(16, 16)));
  FolderRun fixed = run_decode_graph(root, "skip");
  EXPECT_EQ(fixed.error, "");
}

// Two damaged JPEGs from the decode fuzzer's corpus that showed how a reused
// TurboJPEG handle and TurboJPEG's error code misled decode:
//  - e2f06fb7 lacks a table, which a reused decompressor took from the file
//    decoded before it (PIL's fresh one takes the standard tables): its
//    pixels must not depend on what was decoded before;
//  - 04eb5e68 warns ("extraneous bytes"), then fails ("Bogus Huffman table
//    definition"): TurboJPEG calls that a warning and leaves rows unwritten;
//    it is an error, as in PIL.
TEST(Decode, DamagedJpegsDecodeAloneAndFatalErrorsAfterWarningsAreErrors) {
  auto corpus = [](const std::string& name) {
    std::ifstream in(std::string(FLOWRUN_SOURCE_DIR) + "/fuzz/corpus/decode/" + name, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::vector<uint8_t> tableless = corpus("e2f06fb701546707d60f31ad615d9c0a4f86b6c6");
  ASSERT_FALSE(tableless.empty());
  const Image alone = decode_image(tableless.data(), tableless.size(), kMaxPixels);
  for (int seed = 0; seed < 3; ++seed) {
    const std::vector<uint8_t> other = test::encode_jpeg(test::pattern_image(64 + seed * 8, 48, seed), 50 + seed * 20);
    decode_image(other.data(), other.size(), kMaxPixels);
    const Image after = decode_image(tableless.data(), tableless.size(), kMaxPixels);
    EXPECT_TRUE(after.pixels == alone.pixels) << "its pixels followed the JPEG decoded before it (seed " << seed << ")";
  }
  const std::vector<uint8_t> fatal = corpus("04eb5e6827fd786ef470f06367a77251602d7132");
  ASSERT_FALSE(fatal.empty());
  EXPECT_NE(decode_error(fatal).find("corrupt JPEG: Bogus Huffman table definition"), std::string::npos)
      << decode_error(fatal);
}

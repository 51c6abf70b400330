// The data path end to end: sources, the whole augmentation chain, batches,
// reproducibility across thread counts, show_batch, IDX files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "data_support.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "stages/data/idx.h"
#include "stages/data/imagefolder.h"
#include "stages/image/texture_blend.h"
#include "stages/tensor/batch_data.h"
#include "test_support.h"

using namespace flowrun;

namespace {

// Keeps the raw bytes of every batch's images and labels, in order (the
// order matters), for tests that compare runs exactly: one 8-bit level of
// one pixel must show. Also reports the batches' count and shapes.
class BatchDigest : public SerialStage {
 public:
  static Schema schema() { return Schema("batch_digest", "raw bytes of every batch, for reproducibility tests"); }
  explicit BatchDigest(const StageInit&) { last_run_bytes.clear(); }
  void process(Item& item, const Emit& emit) override {
    const auto& batch = item.get<stages::Batch>();
    at::Tensor images = batch.images.contiguous(), labels = batch.labels.to(at::kLong).contiguous();
    last_run_bytes.append(static_cast<const char*>(images.data_ptr()), images.nbytes());
    last_run_bytes.append(static_cast<const char*>(labels.data_ptr()), labels.nbytes());
    shapes_.push_back(images.sizes().vec());
    emit(item);
  }
  void report(Report& report) const override {
    report.set("batches", static_cast<double>(shapes_.size()));
    if (!shapes_.empty()) {
      report.set("first_n", static_cast<double>(shapes_.front()[0]));
      report.set("last_n", static_cast<double>(shapes_.back()[0]));
      report.set("c", static_cast<double>(shapes_.front()[1]));
      report.set("h", static_cast<double>(shapes_.front()[2]));
      report.set("w", static_cast<double>(shapes_.front()[3]));
    }
  }
  static std::string last_run_bytes;  // the latest run's batches (tests run one graph at a time)

 private:
  std::vector<std::vector<int64_t>> shapes_;
};
std::string BatchDigest::last_run_bytes;
FLOWRUN_REGISTER_STAGE(BatchDigest);

std::map<std::string, double> run_figures(const std::string& text, int threads, const std::vector<std::string>& sets = {}) {
  ResolvedGraph graph = test::resolve_text(text, sets);
  RunOptions options;
  options.threads = threads;
  RunResult result = run_graph(graph, options);
  std::map<std::string, double> figures;
  for (const auto& stage : result.stages)
    for (const auto& [key, value] : stage.figures) figures[stage.name + "." + key] = value;
  return figures;
}

std::string recipe_graph(const std::string& root, int epochs = 2) {
  return "run in_flight=64 epochs=" + std::to_string(epochs) + "\n"
         "source = imagefolder root=\"" + root + "\" sampler=sampler\n"
         "sampler = shuffle\n"
         "decode = decode\n"
         "augment = random_crop size=24 padding=4 mode=reflect | hflip | color_jitter brightness=0.2 contrast=0.2 "
         "saturation=0.2 | random_resized_crop size=20\n"
         "normalize = normalize stats=cifar\n"
         "batch = batch size=8\n"
         "out = batch_digest\n";
}

}  // namespace

TEST(ImageFolder, ListsClassesSortedAndFilesBelowThem) {
  std::string root = test::temp_dir() + "/root";
  auto jpeg = test::encode_jpeg(test::pattern_image(8, 8), 90);
  for (const char* path : {"zebra/1.jpg", "ant/b.JPEG", "ant/a.png", "ant/nested/deeper/c.Jpg", "ant/notes.txt",
                           "Bee/x.jpeg"})
    test::write_file(root + "/" + path, jpeg);
  std::filesystem::create_symlink(root + "/ant", root + "/ant/nested/loop");  // a loop ends, not hangs
  stages::FolderListing listing = stages::list_image_folder(root);
  EXPECT_EQ(listing.class_names, (std::vector<std::string>{"Bee", "ant", "zebra"}));  // byte order, as sorted()
  std::vector<std::string> relative;
  for (const auto& path : listing.paths) relative.push_back(path.substr(root.size() + 1));
  EXPECT_EQ(relative, (std::vector<std::string>{"Bee/x.jpeg", "ant/a.png", "ant/b.JPEG", "ant/nested/deeper/c.Jpg",
                                                "zebra/1.jpg"}));
  EXPECT_EQ(listing.labels, (std::vector<int64_t>{0, 1, 1, 1, 2}));
}

TEST(ImageFolder, EmptyOrMissingIsAClearError) {
  auto error_of = [](const std::string& root) {
    try {
      stages::list_image_folder(root);
      return std::string();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  std::string root = test::temp_dir();
  EXPECT_EQ(error_of(root), root + ": no class folders (expected one subfolder per class)");
  EXPECT_EQ(error_of(root + "/missing"), root + "/missing: not a folder (expected one subfolder per class)");
  test::write_file(root + "/cats/a.jpg", test::encode_jpeg(test::pattern_image(8, 8)));
  test::write_file(root + "/dogs/readme.txt", {'x'});
  EXPECT_EQ(error_of(root),
            root + "/dogs: class folder has no images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp; 1 file of other types)");
  // Through a run: exit with the stage named.
  try {
    run_figures("source = imagefolder root=\"" + root + "\"\nsink = sink\n", 1);
    FAIL();
  } catch (const StageError& e) {
    EXPECT_EQ(std::string(e.what()), "stage 'source' (imagefolder): " + root +
                "/dogs: class folder has no images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp; 1 file of other types)");
  }
}

TEST(DataPipeline, RecipeTransformsMakeBatchesOfTheRightShape) {
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 7, 40, 30);
  auto figures = run_figures(recipe_graph(root), 2);
  EXPECT_EQ(figures["out.batches"], 6.0);  // 21 images: 8 + 8 + 5, twice
  EXPECT_EQ(figures["out.first_n"], 8.0);
  EXPECT_EQ(figures["out.last_n"], 5.0);
  EXPECT_EQ(figures["out.c"], 3.0);
  EXPECT_EQ(figures["out.h"], 20.0);
  EXPECT_EQ(figures["out.w"], 20.0);
  EXPECT_EQ(figures["batch.images"], 42.0);
  EXPECT_GT(figures["batch.images_per_s"], 0.0);
  auto dropped = run_figures(recipe_graph(root), 2, {"batch.drop_last=true"});
  EXPECT_EQ(dropped["out.batches"], 4.0);
}

namespace {
// The bytes of every batch of a run (images float32, then labels int64, batch after batch).
std::string run_batches(const std::string& text, int threads, const std::vector<std::string>& sets = {}) {
  run_figures(text, threads, sets);
  return std::move(BatchDigest::last_run_bytes);
}
// "" when a and b are the same bytes, else where they first differ.
std::string difference(const std::string& a, const std::string& b) {
  if (a == b) return "";
  size_t at = 0;
  while (at < a.size() && at < b.size() && a[at] == b[at]) ++at;
  return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size()) + ", first difference at byte " +
         std::to_string(at);
}
}  // namespace

TEST(DataPipeline, SameSeedSameBatchesWhateverTheThreads) {
  std::string root = test::make_jpeg_folder({"a", "b"}, 10, 36, 28);
  const std::string one = run_batches(recipe_graph(root), 1);
  // 2 epochs of 20 images of 3x20x20 float32, and their int64 labels.
  ASSERT_EQ(one.size(), 2u * 20 * (3 * 20 * 20 * 4 + 8));
  // Byte for byte: a single pixel one level off would differ.
  EXPECT_EQ(difference(one, run_batches(recipe_graph(root), 2)), "");
  EXPECT_EQ(difference(one, run_batches(recipe_graph(root), 4, {"decode.concurrency=4", "augment.concurrency=3"})), "");
  EXPECT_NE(difference(one, run_batches(recipe_graph(root), 2, {"run.seed=1"})), "");
}

TEST(DataPipeline, NormalizingHereOrInTheBatchGivesTheSameBatches) {
  std::string root = test::make_jpeg_folder({"a", "b"}, 6, 36, 28);
  const std::string in_batch = run_batches(recipe_graph(root), 2);
  ASSERT_EQ(in_batch.size(), 2u * 12 * (3 * 20 * 20 * 4 + 8));
  EXPECT_EQ(difference(in_batch, run_batches(recipe_graph(root), 2, {"normalize.in_batch=false"})), "");
}

TEST(DataPipeline, MismatchedSizesNameTheSample) {
  std::string root = test::make_jpeg_folder({"a"}, 3, 30, 20);  // widths 30, 38, 46
  try {
    run_figures("source = imagefolder root=\"" + root + "\"\ndecode = decode\nnorm = normalize\nbatch = batch size=4\n"
                "sink = sink\n", 1);
    FAIL();
  } catch (const StageError& e) {
    EXPECT_EQ(test::without_where(e.what()), "stage 'batch' (batch): " + root + "/a/a_1.jpg is 3x20x38 but the batch is 3x20x30 "
                                     "(add resize/center_crop so all samples match)");
  }
}

TEST(DataPipeline, ShowBatchWritesALabelledGrid) {
  std::string root = test::make_jpeg_folder({"cat", "dog"}, 5, 32, 32);
  std::string png = test::temp_dir() + "/batch.png";
  auto figures = run_figures("source = imagefolder root=\"" + root + "\" sampler=s\ns = shuffle\ndecode = decode\ncrop = center_crop size=32\n"
                             "norm = normalize\nbatch = batch size=6\nshow = show_batch path=\"" + png +
                             "\" columns=3\nsink = sink\n", 2);
  EXPECT_EQ(figures["show.show_batch_written"], 1.0);
  std::ifstream in(png, std::ios::binary);
  unsigned char header[24] = {};
  in.read(reinterpret_cast<char*>(header), 24);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(header) + 1, 3), "PNG");
  uint32_t width = (header[16] << 24) | (header[17] << 16) | (header[18] << 8) | header[19];
  uint32_t height = (header[20] << 24) | (header[21] << 16) | (header[22] << 8) | header[23];
  EXPECT_EQ(width, 3u * (96 + 8));  // 3 tiles of 96 px (the minimum) with 4 px margins
  EXPECT_EQ(height, 2u * (96 + 12 + 8));
  EXPECT_EQ(figures["sink.items"], 2.0);  // batches pass through
}

TEST(Idx, ReadsFashionMnistAndItsClassNames) {
  std::string cache = test::temp_dir();
  auto figures = run_figures("source = idx part=test cache=\"" + cache + "\" sampler=s\ns = subset count=100\n"
                             "norm = normalize stats=custom mean=[0.5] std=[0.5]\nbatch = batch size=50\nout = batch_digest\n", 2);
  EXPECT_EQ(figures["source.dataset_size"], 10000.0);
  EXPECT_EQ(figures["source.classes"], 10.0);
  EXPECT_EQ(figures["out.batches"], 2.0);
  EXPECT_EQ(figures["out.c"], 3.0);
  EXPECT_EQ(figures["out.h"], 28.0);
  // The gzip was unpacked once into the cache and is reused.
  int cached = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(cache)) cached += entry.is_regular_file();
  EXPECT_EQ(cached, 2);
}

TEST(Idx, BadFilesAreClearErrors) {
  std::string dir = test::temp_dir();
  auto error_of = [&](const std::string& name) {
    try {
      stages::open_idx(dir + "/" + name, dir + "/cache");
      return std::string();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(error_of("missing"), dir + "/missing[.gz]: no such file");
  test::write_file(dir + "/magic", {1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_EQ(error_of("magic"), dir + "/magic: not an IDX file (bad magic)");
  test::write_file(dir + "/short", {0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3});
  EXPECT_EQ(error_of("short"), dir + "/short: truncated IDX file (19 bytes)");
  test::write_file(dir + "/broken.gz", {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5});
  EXPECT_NE(error_of("broken.gz").find("broken.gz"), std::string::npos);
}

// texture_blend: a fixed shifted dataset. Ink (255) takes the texture's
// inverse and background (0) the texture, so a black and a white image of
// one sample sum to 255 everywhere; each sample's texture depends on its
// index and the stage's seed, never on the epoch or the run's seed.
TEST(TextureBlend, ASamplesTextureIsFixedAndInkTakesItsInverse) {
  using flowrun::stages::Image;
  using flowrun::stages::blend_with_texture;
  Image black(28, 28, 1), white(28, 28, 1);
  std::fill(black.pixels.begin(), black.pixels.end(), uint8_t{0});
  std::fill(white.pixels.begin(), white.pixels.end(), uint8_t{255});
  Image a = black, b = white, other = black;
  blend_with_texture(a, 7);
  blend_with_texture(b, 7);
  blend_with_texture(other, 8);
  ASSERT_EQ(a.channels, 3);
  int spread = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    EXPECT_EQ(a.pixels[i] + b.pixels[i], 255) << i;
    spread = std::max(spread, std::abs(a.pixels[i] - a.pixels[0]));
  }
  EXPECT_GT(spread, 30);                  // a texture, not a flat colour
  EXPECT_NE(a.pixels, other.pixels);      // another sample, another texture
  // As a stage: the same pixels in every epoch and under another run seed;
  // in a joined flow, `source=` blends that source's items alone.
  auto blended = [&](uint64_t run_seed, int epoch, uint32_t origin, const std::string& params) {
    test::StageBench bench("a = count\nt = count\nblend = texture_blend " + params + "\nend = sink\n"
                           "flow a + t -> blend -> end\n", run_seed);
    flowrun::Stage& stage = bench.stage("blend");
    flowrun::EpochInfo info;
    info.epoch = epoch;
    stage.begin_epoch(info);
    flowrun::stages::Sample sample;
    sample.index = 41;
    sample.image = white;
    flowrun::Item item;
    item.set(std::move(sample));
    item.origin = origin;
    static_cast<flowrun::TransformStage&>(stage).process(item);
    return item.get<flowrun::stages::Sample>().image.pixels;
  };
  const auto first = blended(0, 0, 0, "");
  EXPECT_EQ(blended(5, 3, 0, ""), first);
  EXPECT_NE(blended(0, 0, 0, "seed=1"), first);
  EXPECT_EQ(blended(0, 0, 1, "source=t"), first);
  EXPECT_EQ(blended(0, 0, 0, "source=t"), white.pixels);  // the other source's item: untouched
  EXPECT_THROW(blended(0, 0, 0, "source=nope"), std::runtime_error);
}

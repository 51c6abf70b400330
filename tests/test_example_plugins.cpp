// The example plugins of plugins/ (each built outside the tree against the
// installed SDK, as a user builds one): random_erasing against torchvision,
// focal loss inside the train stage, and both in one graph run by the
// flowrun program beside the built-in weighted sampler (once a plugin too).
// Also: a plugin built for another stage API is refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data_support.h"
#include "pipeline/executor.h"
#include "pipeline/plugin_abi.h"
#include "pipeline/plugin_loader.h"
#include "pipeline/registry.h"
#include "stages/data/sample.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/loss.h"
#include "stages/train/train.h"
#include "test_support.h"

using namespace flowrun;
using namespace flowrun::stages;

namespace {

const std::string kErasing = FLOWRUN_PLUGIN_DIR "/libflowrun_random_erasing.so";
const std::string kFocal = FLOWRUN_PLUGIN_DIR "/libflowrun_focal_loss.so";

void load(const std::string& path) { load_plugin(path, Registry::global()); }

std::string load_error(const std::string& path) {
  try {
    load(path);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

void write_floats(const std::string& path, const FloatImage& image) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(image.data.data()), static_cast<std::streamsize>(image.data.size() * 4));
}

Item sample_item(const Image& image, int64_t index) {
  Sample sample;
  sample.index = index;
  sample.image = image;
  Item item;
  item.set(std::move(sample));
  return item;
}

EpochInfo epoch(int number) {
  EpochInfo info;
  info.phase = "main";
  info.epoch = info.epoch_in_phase = number;
  info.epochs_in_phase = 10;
  return info;
}

}  // namespace

TEST(ExamplePlugins, RandomErasingMatchesTorchvision) {
  ASSERT_EQ(load_error(kErasing), "");
  EXPECT_EQ(Registry::global().find("random_erasing")->origin, kErasing);
  std::string dir = test::temp_dir();
  struct Case {
    int width, height;
    double scale, ratio;
    std::string value;
    std::vector<double> torch_value;
  };
  // Fixed scale and ratio fix the rectangle's size; its place is the sample's draw.
  const std::vector<Case> cases = {{40, 30, 0.1, 1.0, "[0]", {0}},
                                   {40, 30, 0.2, 2.5, "[0.5, -1, 2]", {0.5, -1, 2}},
                                   {33, 51, 0.05, 0.4, "[-0.25]", {-0.25}},
                                   {24, 24, 0.7, 3.0, "[1]", {1}}};  // too tall to fit: torchvision leaves it
  nlohmann::json jobs = nlohmann::json::array();
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    char scale[64], ratio[64];
    std::snprintf(scale, sizeof scale, "[%g, %g]", c.scale, c.scale);
    std::snprintf(ratio, sizeof ratio, "[%g, %g]", c.ratio, c.ratio);
    test::StageBench bench(std::string("source = count\nnorm = normalize stats=imagenet in_batch=false\n") +
                           "erase = random_erasing p=1 scale=" + scale + " ratio=" + ratio + " value=" + c.value + "\n");
    Item item = sample_item(test::pattern_image(c.width, c.height, static_cast<int>(k)), static_cast<int64_t>(k));
    static_cast<TransformStage&>(bench.stage("norm")).process(item);
    const std::string in = dir + "/in" + std::to_string(k) + ".f32", out = dir + "/out" + std::to_string(k) + ".f32";
    write_floats(in, item.get<Sample>().tensor);
    static_cast<TransformStage&>(bench.stage("erase")).process(item);
    write_floats(out, item.get<Sample>().tensor);
    jobs.push_back({{"input", in}, {"output", out}, {"shape", {3, c.height, c.width}}, {"scale", {c.scale, c.scale}},
                    {"ratio", {c.ratio, c.ratio}}, {"value", c.torch_value}});
  }
  std::ofstream(dir + "/cases.json") << jobs.dump();
  std::string command =
      FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_erasing.py' '" + dir + "/cases.json'";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe)) output += buffer;
  ASSERT_EQ(pclose(pipe), 0) << command;
  nlohmann::json results = nlohmann::json::parse(output);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    SCOPED_TRACE("case " + std::to_string(k));
    if (results[k]["erased"].get<bool>()) {
      // torchvision's erase of that size at one place gives exactly our tensor.
      EXPECT_EQ(results[k]["matches"].size(), 1u) << results[k].dump();
      EXPECT_FALSE(results[k]["unchanged"].get<bool>());
    } else {
      EXPECT_TRUE(results[k]["unchanged"].get<bool>()) << "no rectangle fits, as in torchvision: no erasing";
    }
  }
  EXPECT_FALSE(results[3]["erased"].get<bool>());  // the case meant to exercise the ten failed tries
}

TEST(ExamplePlugins, RandomErasingIsTheSamplesOwnDrawOnBytesToo) {
  ASSERT_EQ(load_error(kErasing), "");
  test::StageBench bench("source = count\nerase = random_erasing p=0.5 value=[7]\n");
  auto& erase = static_cast<TransformStage&>(bench.stage("erase"));
  const Image original = test::pattern_image(32, 32, 9);
  auto erased = [&](int64_t index, int epoch_number) {
    erase.begin_epoch(epoch(epoch_number));
    Item item = sample_item(original, index);
    erase.process(item);
    return item.get<Sample>().image.pixels;
  };
  int changed = 0;
  for (int64_t index = 0; index < 400; ++index) {
    auto pixels = erased(index, 0);
    if (pixels != original.pixels) {
      ++changed;
      // Every changed byte is the fill value.
      for (size_t b = 0; b < pixels.size(); ++b)
        if (pixels[b] != original.pixels[b]) {
          ASSERT_EQ(pixels[b], 7);
        }
    }
    EXPECT_EQ(pixels, erased(index, 0)) << "a function of (seed, epoch, index)";
  }
  // p = 0.5 of 400: 200 expected, 4.5 standard deviations either side.
  EXPECT_GT(changed, 155);
  EXPECT_LT(changed, 245);
  int differ = 0;
  for (int64_t index = 0; index < 50; ++index) differ += erased(index, 0) != erased(index, 1);
  EXPECT_GT(differ, 10) << "another epoch draws again";
  EXPECT_NE(test::errors_of("source = count\nerase = random_erasing scale=[0.5, 0.1]\n").find(
                "scale must be [min, max] with 0 < min <= max <= 1"),
            std::string::npos);
}

TEST(ExamplePlugins, FocalLossIsWhatItSaysAndTrainsTheModel) {
  ASSERT_EQ(load_error(kFocal), "");
  test::StageBench bench("source = count\nmodel = resnet depth=18 classes=3\noptim = adam lr=0.01\n"
                         "sched = onecycle\nfocal = focal_loss gamma=2 alpha=0.5\nce = focal_loss gamma=0\n"
                         "train = train freezer=\"\" loss=focal\n");
  auto& focal = dynamic_cast<LossStage&>(bench.stage("focal"));
  auto& ce = dynamic_cast<LossStage&>(bench.stage("ce"));
  torch::manual_seed(3);
  torch::Tensor logits = torch::randn({16, 3}) * 3, labels = torch::randint(3, {16}, torch::kLong);
  EXPECT_NEAR(ce.loss(logits, labels).item<double>(), torch::nn::functional::cross_entropy(logits, labels).item<double>(),
              1e-6);
  torch::Tensor p = torch::softmax(logits.to(torch::kDouble), 1).gather(1, labels.unsqueeze(1)).squeeze(1);
  double expected = (-0.5 * torch::pow(1 - p, 2) * torch::log(p)).mean().item<double>();
  EXPECT_NEAR(focal.loss(logits, labels).item<double>(), expected, 1e-6);

  // The train stage steps on the plugin's loss: it falls on a fixed batch.
  torch::manual_seed(7);
  Batch batch;
  batch.images = torch::randn({16, 3, 32, 32});
  batch.labels = torch::randint(3, {16}, torch::kLong);
  batch.batches_in_epoch = 20;
  Item item;
  item.set(batch);
  Network& net = find_model(bench, "model").net();
  auto focal_now = [&] {  // in training mode (batch statistics): what the steps minimise
    net->train();
    torch::NoGradGuard no_grad;
    return focal.loss(net->forward(batch.images), batch.labels).item<double>();
  };
  const double before = focal_now();
  auto& train = static_cast<Train&>(bench.stage("train"));
  train.begin_epoch(epoch(0));
  for (int step = 0; step < 15; ++step) train.process(item, [](Item) {});
  train.end_epoch(epoch(0));
  EXPECT_LT(focal_now(), before * 0.5);
  EXPECT_NE(test::errors_of("source = count\nmodel = resnet depth=18 classes=3\noptim = adam\n"
                            "train = train loss=optim\n")
                .find("stage 'optim' is no loss"),
            std::string::npos);
}

TEST(ExamplePlugins, BothInOneGraphRunByFlowrun) {
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 6, 40, 40);
  std::string dir = test::temp_dir();
  std::ofstream(dir + "/weights.csv") << "class,weight\na,1\nb,1\nc,4\n";
  std::ofstream(dir + "/job.graph")
      << "plugin \"" << kErasing << "\"\nplugin \"" << kFocal << "\"\n"
      << "run seed=5 epochs=2 compute_threads=1\n"
      << "sampler = weighted weights=\"" << dir << "/weights.csv\" num_samples=24\n"  // built in
      << "source = imagefolder root=\"" << root << "\" sampler=sampler\n"
      << "prep = decode | resize size=32 | center_crop size=32 | normalize stats=imagenet in_batch=false | random_erasing p=0.5\n"
      << "batch = batch size=8\n"
      << "train = train loss=focal\n"
      << "flow source -> prep -> batch -> train\n"
      // fp32: the figures below were measured so (precision=auto is bf16 on CPUs with AVX512_BF16).
      << "model = resnet depth=18 classes=3 precision=fp32\noptim = adam lr=0.001\nfocal = focal_loss\n";
  auto run = test::run_flowrun({dir + "/job.graph", "--threads", "2", "--summary-json", dir + "/summary.json",
                                "--run-dir", dir + "/run"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json summary = nlohmann::json::parse(std::ifstream(dir + "/summary.json"));
  EXPECT_EQ(summary["train_steps"].get<double>(), 6.0)  // 24 draws a epoch, batches of 8, 2 epochs
      << summary.dump();
  const double loss = summary["train_loss"].get<double>();
  EXPECT_TRUE(std::isfinite(loss));
  // Each plugin has its effect. The same run (same seed: the same numbers)
  // with one plugin's op turned off gives another loss.
  auto loss_with = [&](const std::string& set) {
    auto other = test::run_flowrun({dir + "/job.graph", "--threads", "2", "--summary-json", dir + "/other.json",
                                    "--set", set});
    EXPECT_EQ(other.exit_code, 0) << other.err;
    return nlohmann::json::parse(std::ifstream(dir + "/other.json"))["train_loss"].get<double>();
  };
  // Focal loss (gamma 2) weighs each sample's cross-entropy by (1 - p_t)^2 <= 1:
  // clearly below cross-entropy's (measured: 0.588 against 0.828).
  const double cross_entropy = loss_with("train.loss=");
  EXPECT_LT(loss, 0.85 * cross_entropy) << "focal " << loss << ", cross-entropy " << cross_entropy;
  // Random erasing changes the images, hence the loss; p=0 leaves them be.
  const double no_erasing = loss_with("prep.random_erasing.p=0");
  EXPECT_NE(loss, no_erasing);

  // --list-stages names each plugin stage's origin.
  auto list = test::run_flowrun({"--plugin", kErasing, "--list-stages"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("random_erasing"), std::string::npos);
  EXPECT_NE(list.out.find(kErasing), std::string::npos) << list.out;
}

TEST(ExamplePlugins, APluginForAnotherStageApiIsRefusedByName) {
  EXPECT_EQ(load_error(TEST_PLUGIN_BAD_STAGE_API),
            std::string(TEST_PLUGIN_BAD_STAGE_API) + ": error: plugin 'old-augmentations' was built against stage API "
                "version " + std::to_string(FLOWRUN_STAGE_API_VERSION + 6) + " but this flowrun has stage API version " +
                std::to_string(FLOWRUN_STAGE_API_VERSION) + "; rebuild it against this flowrun's SDK");
}

TEST(ExamplePlugins, AModelOfAnotherArchitectureTrainsFreezesAndLoadsLikeResNet) {
  const std::string kSmallCnn = FLOWRUN_PLUGIN_DIR "/libflowrun_small_cnn.so";
  ASSERT_EQ(load_error(kSmallCnn), "");
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 8, 40, 40);
  std::string dir = test::temp_dir();
  auto graph = [&](const std::string& model, const std::string& freezer, int epochs, const std::string& save) {
    return "run epochs=" + std::to_string(epochs) + " seed=4 compute_threads=1\n"
           "src = imagefolder root=\"" + root + "\" sampler=shuffle\nshuffle = shuffle\n"
           "prep = decode | resize size=32 | center_crop size=32 | normalize\nbatch = batch size=8\n"
           "train = train\nflow src -> prep -> batch -> train\n"
           "model = " + model + "\nfreezer = " + freezer + "\noptim = adam lr=1e-2 backbone_lr_factor=0.5\n"
           "sched = onecycle\nsave = save_weights path=\"" + dir + "/" + save + "\"\n";
  };
  RunOptions options;
  options.threads = 2;
  // Trained end to end by the built-in train stage: the loss falls.
  RunResult result = run_graph(test::resolve_text(graph("small_cnn classes=3 stages=2 width=16", "freeze mode=none", 12,
                                                        "trained.safetensors")),
                               options);
  std::map<std::string, double> figures;
  for (const auto& stage : result.stages)
    if (stage.name == "train") figures = stage.figures;
  EXPECT_EQ(figures["train_steps"], 36.0);
  // It learned: below chance's loss (ln 3) and well above chance's 1/3 of the 24 images right.
  EXPECT_LT(figures["train_loss"], std::log(3.0));
  EXPECT_GT(figures["train_top1"], 0.6);
  StateDict trained = read_weights(dir + "/trained.safetensors");
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : trained) keys.push_back(key);
  EXPECT_NE(std::find(keys.begin(), keys.end(), "stage2.3.weight"), keys.end());  // its own names
  EXPECT_EQ(keys.front(), "stem.0.weight");

  // Its weights load into a 5-class model (head re-initialised); freeze
  // mode=backbone then trains only its fc, and precompute applies.
  result = run_graph(test::resolve_text(graph("small_cnn classes=5 stages=2 width=16 weights=\"" + dir +
                                                  "/trained.safetensors\"",
                                              "freeze mode=backbone", 3, "head.safetensors")),
                     options);
  for (const auto& stage : result.stages)
    if (stage.name == "train") figures = stage.figures;
  EXPECT_EQ(figures["precompute_batches"], 6.0);  // epochs 2 and 3 from the cache
  StateDict head = read_weights(dir + "/head.safetensors");
  ASSERT_EQ(head.size(), trained.size());
  for (size_t i = 0; i < head.size(); ++i) {
    if (head[i].first.rfind("fc.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(head[i].second, trained[i].second)) << head[i].first << " changed while frozen";
  }
  // A block the model does not have is named with the ones it has.
  try {
    run_graph(test::resolve_text(graph("small_cnn classes=3 stages=2 width=8", "freeze mode=until until=layer3", 1,
                                       "x.safetensors")),
              options);
    FAIL() << "until=layer3 was accepted for a small_cnn";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("until='layer3' is not a block of the model's backbone (stem, stage1, stage2)"),
              std::string::npos)
        << e.what();
  }
}

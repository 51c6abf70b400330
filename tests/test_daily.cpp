// Issue 21, the daily tool: files a job writes from several ranks' shares are
// those of a process alone; predict in a training graph predicts once, at the
// end; a run failing at start-up leaves no temporaries; ...
#include <cairo.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "data_support.h"
#include "stages/common/random.h"
#include "stages/model/weights.h"
#include "stages/report/chart.h"
#include "stages/report/metrics_log.h"
#include "stages/report/predict.h"
#include "test_support.h"

using namespace flowrun;
using test::slurp;
using test::lines_of;
using test::split;
using test::write_graph;

namespace {

// Files in `dir` (recursively) whose names hold `.tmp.` or `.spool.`.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != decltype(it)(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find(".tmp.") != std::string::npos || name.find(".spool.") != std::string::npos)
      found.push_back(it->path().string());
  }
  return found;
}

// 9 labelled images of 3 classes: two ranks take 5 and 4 of them.
const std::string& nine_images() {
  static const std::string root = test::make_jpeg_folder({"a", "b", "c"}, 3, 40, 36);
  return root;
}

// Predictions and features of a ResNet-18 made from the seed (the same weights every run).
std::string inference_graph(const std::string& out) {
  return "run seed=5 compute_threads=1 timeout=60\n"
         "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"
         "sampler = shuffle\n"
         "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
         "batch = batch size=3\n"
         "predict = predict csv=\"" + out + "/p.csv\" grid=\"" + out + "/p.png\" columns=3\n"
         "flow src -> prep -> batch -> predict\n"
         "src2 = like src\n"
         "prep2 = like prep\n"
         "batch2 = like batch\n"
         "features = features path=\"" + out + "/f.safetensors\"\n"
         "flow src2 -> prep2 -> batch2 -> features\n"
         "model = resnet depth=18 classes=3\n";
}

}  // namespace

// Item 1: rank 0's share was lost (its spool was the atomic writer's temporary).
TEST(Daily, FilesMergedFromTwoRanksAreThoseOfAProcessAlone) {
  const std::string dir = test::temp_dir();
  std::filesystem::create_directories(dir + "/alone");
  std::filesystem::create_directories(dir + "/job");
  auto alone = test::run_flowrun({write_graph(dir, "alone.graph", inference_graph(dir + "/alone"))});
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  auto job = test::run_flowrun({write_graph(dir, "job.graph", inference_graph(dir + "/job")), "--nproc", "2"});
  ASSERT_EQ(job.exit_code, 0) << job.err;

  // The predictions CSV: the header and the 9 rows, in the same order, the same figures.
  const auto one = lines_of(dir + "/alone/p.csv"), two = lines_of(dir + "/job/p.csv");
  ASSERT_EQ(one.size(), 10u);
  ASSERT_EQ(two.size(), 10u) << slurp(dir + "/job/p.csv");
  EXPECT_EQ(two[0], one[0]);
  for (size_t i = 1; i < one.size(); ++i) {
    const auto a = split(one[i]), b = split(two[i]);
    ASSERT_EQ(a.size(), b.size()) << two[i];
    for (size_t j = 0; j < a.size(); ++j) {
      if (j >= 4 && j % 2 == 0 && !a[j].empty())  // a probability: the ranks' batches are smaller
        EXPECT_NEAR(std::stod(a[j]), std::stod(b[j]), 1e-4) << one[i] << " | " << two[i];
      else
        EXPECT_EQ(a[j], b[j]) << one[i] << " | " << two[i];
    }
  }
  // The grid: the same 9 tiles (both ranks' first images, in a process alone's order).
  EXPECT_EQ(slurp(dir + "/job/p.png"), slurp(dir + "/alone/p.png"));

  // The features: the same rows, indices and labels, and the same CSV.
  EXPECT_EQ(slurp(dir + "/job/f.csv"), slurp(dir + "/alone/f.csv"));
  auto f1 = stages::read_weights(dir + "/alone/f.safetensors"), f2 = stages::read_weights(dir + "/job/f.safetensors");
  ASSERT_EQ(f1.size(), 3u);
  for (const auto& [key, tensor] : f1) {
    torch::Tensor other;
    for (const auto& [k2, t2] : f2)
      if (k2 == key) other = t2;
    ASSERT_TRUE(other.defined()) << key;
    ASSERT_EQ(tensor.sizes(), other.sizes()) << key;
    if (tensor.is_floating_point())
      EXPECT_LT((tensor - other).abs().max().item<double>(), 1e-4) << key;
    else
      EXPECT_TRUE(tensor.equal(other)) << key;
  }
  for (const auto& [key, tensor] : f1) EXPECT_EQ(tensor.size(0), 9) << key;  // every image, once
  EXPECT_TRUE(leftovers(dir).empty()) << leftovers(dir).front();
}

// Item 3: in a training graph predict ran every epoch, appending to one CSV.
TEST(Daily, PredictInATrainingGraphPredictsOnceWithTheFinalModel) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "train.graph",
      "run epochs=3 seed=2 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"
      "sampler = shuffle\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> batch -> train\n"
      "val = like src sampler=\"\"\n"
      "vprep = like prep\n"
      "vbatch = like batch\n"
      "predict = predict csv=\"" + dir + "/p.csv\" grid=\"" + dir + "/p.png\"\n"
      "flow val -> vprep -> vbatch -> predict\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.05\n"
      "save = save_weights path=\"" + dir + "/final.safetensors\"\n");
  auto run = test::run_flowrun({graph, "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto rows = lines_of(dir + "/p.csv");
  ASSERT_EQ(rows.size(), 10u);  // the header and one pass over the 9 images, not 3 passes
  EXPECT_EQ(nlohmann::json::parse(slurp(dir + "/s.json"))["predicted"], 9.0);

  // The same predictions as the final weights give in a graph of its own.
  const std::string alone = write_graph(dir, "predict.graph",
      "run seed=2 compute_threads=1\n"
      "val = imagefolder root=\"" + nine_images() + "\"\n"
      "vprep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "vbatch = batch size=3\n"
      "predict = predict csv=\"" + dir + "/q.csv\" grid=\"" + dir + "/q.png\"\n"
      "flow val -> vprep -> vbatch -> predict\n"
      "model = resnet depth=18 classes=3 weights=\"" + dir + "/final.safetensors\"\n");
  auto again = test::run_flowrun({alone});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const auto expected = lines_of(dir + "/q.csv");
  ASSERT_EQ(expected.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto a = split(rows[i]), b = split(expected[i]);
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < 3; ++j) EXPECT_EQ(a[j], b[j]) << rows[i] << " | " << expected[i];
    if (i > 0) {
      EXPECT_NEAR(std::stod(a[4]), std::stod(b[4]), 1e-4) << rows[i] << " | " << expected[i];
    }
  }
  EXPECT_EQ(slurp(dir + "/p.png"), slurp(dir + "/q.png"));

  // every=2: epochs 2 and 3, each row with its epoch.
  auto every = test::run_flowrun({graph, "--set", "predict.every=2"});
  ASSERT_EQ(every.exit_code, 0) << every.err;
  const auto both = lines_of(dir + "/p.csv");
  ASSERT_EQ(both.size(), 19u);
  EXPECT_EQ(both[0].substr(both[0].size() - 6), ",epoch");
  for (size_t i = 1; i < both.size(); ++i)
    EXPECT_EQ(split(both[i]).back(), i <= 9 ? "2" : "3") << both[i];
}

// Item 10: predict opened its temporary in its constructor, before the run could fail.
TEST(Daily, ARunFailingAtStartUpLeavesNoTemporaries) {
  const std::string dir = test::temp_dir();
  std::filesystem::create_directories(dir + "/out");
  const std::string graph = write_graph(dir, "bad.graph",
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "predict = predict csv=\"" + dir + "/out/p.csv\" grid=\"" + dir + "/out/p.png\"\n"
      "features = features path=\"" + dir + "/out/f.safetensors\"\n"
      "flow src -> prep -> batch -> predict -> features\n"
      "model = resnet depth=18 classes=3 weights=\"" + dir + "/missing.safetensors\"\n");
  auto run = test::run_flowrun({graph});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("missing.safetensors"), std::string::npos) << run.err;
  EXPECT_TRUE(leftovers(dir).empty()) << leftovers(dir).front();
}

// Item 9: the resolved graph a run saves runs from where it is saved, and
// from any working directory.
TEST(Daily, TheResolvedGraphRunsFromWhereItIsSaved) {
  const std::string dir = test::temp_dir();
  std::filesystem::create_directories(dir + "/g");
  std::filesystem::create_directory_symlink(nine_images(), dir + "/images");
  write_graph(dir + "/g", "x.graph",
      "src = imagefolder root=\"../images\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "predict = predict csv=\"out/p.csv\"\n"
      "flow src -> prep -> batch -> predict\n"
      "model = resnet depth=18 classes=3\n");
  auto first = test::run_flowrun({"g/x.graph", "--run-dir", "runs/one"}, dir);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(std::filesystem::exists(dir + "/g/out/p.csv"));
  std::filesystem::remove(dir + "/g/out/p.csv");
  const std::string resolved = slurp(dir + "/runs/one/graph.resolved");
  EXPECT_NE(resolved.find("root=\"" + std::filesystem::path(dir + "/images").lexically_normal().string() + "\""),
            std::string::npos) << resolved;
  // From another working directory, by the saved file's own path.
  auto again = test::run_flowrun({dir + "/runs/one/graph.resolved"}, "/");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(std::filesystem::exists(dir + "/g/out/p.csv"));
  // --check prints the same absolute paths.
  auto check = test::run_flowrun({"--check", "g/x.graph"}, dir);
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("csv=\"" + dir + "/g/out/p.csv\""), std::string::npos) << check.out;
}

// Item 12: results on stdout (epoch lines, final figures, the files written),
// diagnostics on stderr.
TEST(Daily, ResultsGoToStdoutDiagnosticsToStderr) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run epochs=2 seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> batch -> train\n"
      "val = like src\nvprep = like prep\nvbatch = like batch\n"
      "evaluate = evaluate\n"
      "flow val -> vprep -> vbatch -> evaluate\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n"
      "save = save_weights path=\"" + dir + "/w.safetensors\"\n");
  auto run = test::run_flowrun({graph, "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("epoch 2 (main 2/2) train: loss"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("epoch 2 (main 2/2) evaluate: val_loss"), std::string::npos) << run.out;
  EXPECT_EQ(run.err.find("epoch 2 (main 2/2)"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find("final: "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(" val_top1 "), std::string::npos) << run.out;
  // Where files went, once, at the default log level.
  const auto wrote = run.out.find("wrote: ");
  ASSERT_NE(wrote, std::string::npos) << run.out;
  EXPECT_NE(run.out.find(dir + "/w.safetensors", wrote), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(dir + "/s.json", wrote), std::string::npos) << run.out;
  // The stage table is a diagnostic.
  EXPECT_NE(run.err.find("bottleneck: "), std::string::npos) << run.err;
  EXPECT_EQ(run.out.find("bottleneck: "), std::string::npos) << run.out;
  // Item 13: the summary of the complete run.
  const auto summary = nlohmann::json::parse(slurp(dir + "/s.json"));
  EXPECT_EQ(summary["stopped_at"], "end of epoch 2");
  EXPECT_EQ(summary["stop_reason"], "completed");
  EXPECT_TRUE(summary["train_steps"].is_number_integer()) << summary["train_steps"];
  EXPECT_EQ(summary["train_steps"], 6);
  EXPECT_TRUE(summary["val_samples"].is_number_integer());
  ASSERT_TRUE(summary.contains("train_images_per_s_best_epoch"));
  EXPECT_GE(summary["train_images_per_s_best"].get<double>(), summary["train_images_per_s"].get<double>());
}

// Item 14: --check's precompute note for mode=none, and a --set that breaks
// a schema's rule is reported at the --set.
TEST(Daily, CheckWordingAndSetErrorsAtTheSet) {
  auto check = test::run_flowrun({"--check", "graphs/finetune.graph"});
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("trains the whole backbone (mode=none)"), std::string::npos) << check.out;
  EXPECT_EQ(check.out.find("trains part of the backbone (mode=none)"), std::string::npos) << check.out;
  auto depth = test::run_flowrun({"--check", "graphs/predict.graph", "--set", "model.depth=19"});
  EXPECT_EQ(depth.exit_code, 2);
  EXPECT_NE(depth.err.find("--set #1:1:"), std::string::npos) << depth.err;
  EXPECT_NE(depth.err.find("depth must be 18, 34, 50 or 101"), std::string::npos) << depth.err;
  EXPECT_EQ(depth.err.find("predict.graph:"), std::string::npos) << depth.err;
}

// Item 16: --list-stages NAME lists that stage alone; an unknown name is an error.
TEST(Daily, ListStagesOfOneStage) {
  auto one = test::run_flowrun({"--list-stages", "predict"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out.rfind("predict (serial, built-in)", 0), 0u) << one.out;
  EXPECT_NE(one.out.find("    every "), std::string::npos) << one.out;
  EXPECT_EQ(one.out.find("sleep (transform"), std::string::npos) << one.out;
  auto typo = test::run_flowrun({"--list-stages", "predcit"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("did you mean 'predict'"), std::string::npos) << typo.err;
}

// Item 5: the best epoch's weights kept by a monitored figure, and early
// stopping with patience and min_delta, its reason in the summary.
TEST(Daily, BestWeightsAndEarlyStopping) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run epochs=6 seed=4 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"
      "sampler = shuffle\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> batch -> train\n"
      "val = imagefolder root=\"" + nine_images() + "\"\nvprep = like prep\nvbatch = like batch\n"
      "evaluate = evaluate\n"
      "flow val -> vprep -> vbatch -> evaluate\n"
      // Declared before the stages whose figures they watch: the order does not matter.
      "best = best_weights path=\"" + dir + "/best.safetensors\" monitor=val_top1\n"
      "stop = early_stopping monitor=val_top1 patience=2 min_delta=1\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.05\n");
  auto run = test::run_flowrun({graph, "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto summary = nlohmann::json::parse(slurp(dir + "/s.json"));
  // Epoch 1 sets the best accuracy; nothing improves it by more than 1: epochs 2 and 3 wait, the run ends after 3.
  EXPECT_EQ(summary["epochs"], 3);
  EXPECT_EQ(summary["interrupted"], false);
  EXPECT_EQ(summary["stopped_at"], "end of epoch 3");
  EXPECT_EQ(summary["stop_reason"].get<std::string>().rfind("early stopping after epoch 3: val_top1 did not improve", 0),
            0u) << summary["stop_reason"];
  EXPECT_EQ(summary["early_stopping_epoch"], 3);
  EXPECT_EQ(run.out.find("epoch 4 ("), std::string::npos) << run.out;

  // The best val_top1 of the three epochs, from their epoch lines: the first epoch reaching the maximum.
  std::vector<double> top1;
  for (int e = 1; e <= 3; ++e) {
    const std::string tag = "epoch " + std::to_string(e) + " (main " + std::to_string(e) + "/6) evaluate: ";
    const auto at = run.out.find(tag);
    ASSERT_NE(at, std::string::npos) << run.out;
    const auto value = run.out.find("val_top1 ", at);
    top1.push_back(std::stod(run.out.substr(value + 9, 6)));
  }
  int best = 1;
  for (int e = 2; e <= 3; ++e)
    if (top1[e - 1] > top1[best - 1] + 1e-9) best = e;
  stages::Metadata metadata;
  auto weights = stages::read_weights(dir + "/best.safetensors", &metadata);
  EXPECT_FALSE(weights.empty());
  EXPECT_EQ(metadata["monitor"], "val_top1");
  // The class names too, as save_weights writes them: a later graph maps its classes by name.
  EXPECT_EQ(metadata["classes"], R"(["a","b","c"])");
  EXPECT_EQ(metadata["best_epoch"], std::to_string(best)) << top1[0] << " " << top1[1] << " " << top1[2];
  EXPECT_NEAR(std::stod(metadata["best_value"]), top1[best - 1], 1e-4);
  EXPECT_EQ(summary["best_epoch"], best);
  // A monitored figure no stage reports is an error naming the ones there are.
  auto typo = test::run_flowrun({graph, "--set", "stop.monitor=val_acc"});
  EXPECT_EQ(typo.exit_code, 1);
  EXPECT_NE(typo.err.find("monitor='val_acc': no stage of this phase reports it"), std::string::npos) << typo.err;
  EXPECT_NE(typo.err.find("val_top1"), std::string::npos) << typo.err;
}

// Item 4: a random augmentation that does not declare randomized() is
// caught at its first draw, with a message saying what to add.
TEST(Daily, ARandomStageWithoutRandomizedIsRefused) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "j.graph",
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | jiggle\n"
      "sink = sink\n");
  auto run = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_UNDECLARED_RANDOM});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("stage type 'jiggle' draws random numbers"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("add .randomized() to its Schema"), std::string::npos) << run.err;
  // A stage cannot build a generator of its own: the only ways to one are its
  // declared randomness (RandomStream, refused below) and a sampler op's.
  EXPECT_FALSE((std::is_constructible_v<stages::Rng, uint64_t, uint64_t, uint64_t, uint64_t>));
  EXPECT_FALSE((std::is_constructible_v<stages::Rng, uint64_t, uint64_t>));
  EXPECT_FALSE((std::is_constructible_v<stages::RandomStream, uint64_t, uint64_t>));
  const std::string plain = write_graph(dir, "w.graph",
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | wobble\n"
      "sink = sink\n");
  auto wobble = test::run_flowrun({plain, "--plugin", TEST_PLUGIN_UNDECLARED_RANDOM});
  EXPECT_EQ(wobble.exit_code, 1) << wobble.err;
  EXPECT_NE(wobble.err.find("stage type 'wobble' draws random numbers but its schema does not declare them"),
            std::string::npos) << wobble.err;
}

// Item 6: Ctrl-C to a training run without a checkpoint stage says what was
// lost and how to keep it next time.
TEST(Daily, AnInterruptedRunWithoutCheckpointSaysWhatWasLost) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run epochs=3 seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "stop = stop_at epoch=2 item=2\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> stop -> batch -> train\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n"
      "save = save_weights path=\"" + dir + "/w.safetensors\"\n");
  auto run = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT});
  EXPECT_EQ(run.exit_code, 130) << run.err;
  EXPECT_NE(run.err.find("the graph has no checkpoint stage: the weights and optimizer state of these 1 epoch(s)"),
            std::string::npos) << run.err;
  EXPECT_NE(run.err.find("checkpoint = checkpoint path="), std::string::npos) << run.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/w.safetensors"));
  // With a checkpoint stage there is nothing to say.
  const std::string with = write_graph(dir, "c.graph", slurp(graph) + "checkpoint = checkpoint path=\"" + dir +
                                                          "/c.ckpt\" every=0\n");
  auto checkpointed = test::run_flowrun({with, "--plugin", TEST_PLUGIN_STOP_AT});
  EXPECT_EQ(checkpointed.exit_code, 130) << checkpointed.err;
  EXPECT_EQ(checkpointed.err.find("no checkpoint stage"), std::string::npos) << checkpointed.err;
  EXPECT_TRUE(std::filesystem::exists(dir + "/c.ckpt"));
}

// Item 14: the range test's passes over the data are not reported as the
// phase's epochs ("epoch 1 (head 1/100)").
TEST(Daily, LrFindSaysPassesAndStepsNotEpochs) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> batch -> train\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n"
      "phase head epochs=2 {\n}\n");
  auto run = test::run_flowrun({graph, "--lr-find=5", "--run-dir", dir + "/lr"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out.find("epoch 1 ("), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("lr_find train: pass 1 over the data, step 3 of 5"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("suggested learning rates: valley "), std::string::npos) << run.out;
}

// Item 8, end to end: a run stopped and resumed exactly as the README says
// (--set checkpoint.resume=FILE) does not warn that the graph differs; a
// changed parameter is named.
TEST(Daily, ResumingAsTheReadmeSaysDoesNotWarn) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run epochs=2 seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "stop = stop_at epoch=2 item=2\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> stop -> batch -> train\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n"
      "checkpoint = checkpoint path=\"" + dir + "/c.ckpt\" every=0\n");
  auto stopped = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT});
  ASSERT_EQ(stopped.exit_code, 130) << stopped.err;
  auto resumed = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT, "--set", "checkpoint.resume=" + dir + "/c.ckpt",
                                    "--set", "stop.epoch=9"});
  // stop_at's epoch is no run-control setting: that difference is named.
  EXPECT_NE(resumed.err.find("resuming under a graph that differs"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("now: stop = stop_at epoch=9"), std::string::npos) << resumed.err;
  EXPECT_EQ(resumed.err.find("resume="), std::string::npos) << resumed.err;
  // As the README says: only checkpoint.resume differs.
  auto again = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT});
  ASSERT_EQ(again.exit_code, 130) << again.err;
  auto plain = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT, "--set", "checkpoint.resume=" + dir + "/c.ckpt"});
  EXPECT_NE(plain.err.find("resuming at epoch 2"), std::string::npos) << plain.err;
  EXPECT_EQ(plain.err.find("differs"), std::string::npos) << plain.err;
}

// Item 16c: value checks a stage's constructor made passed --check and
// failed only at run time; they are its schema's rules now, reported by
// --check at the graph's line, naming the stage.
TEST(Daily, CheckReportsValueErrorsAtTheGraphsLine) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "bad.graph",
      "plugin \"" FLOWRUN_PLUGIN_DIR "/libflowrun_focal_loss.so\"\n"          // 1
      "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"   // 2
      "sampler = shuffle\n"                                                  // 3
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"   // 4
      "batch = batch size=3\n"                                                // 5
      "train = train scheduler=\"\" freezer=\"\" label_smoothing=0.1\n"      // 6: and a loss stage
      "flow src -> prep -> batch -> train\n"                                  // 7
      "val = like src sampler=\"\"\nvprep = like prep\nvbatch = like batch\n" // 8-10
      "features = features path=\"" + dir + "/f.csv\"\n"                       // 11: csv = path
      "flow val -> vprep -> vbatch -> features\n"                              // 12
      "model = resnet depth=18 classes=3 device=cpu precision=bf16\n"         // 13: bf16 on the CPU is fine
      "optim = sgd lr=0.05\n"                                                  // 14
      "focal = focal_loss\n");                                                // 15
  auto check = test::run_flowrun({"--check", graph});
  EXPECT_EQ(check.exit_code, 2) << check.out << check.err;
  const auto has = [&](const std::string& text) { return check.err.find(text) != std::string::npos; };
  EXPECT_TRUE(has(graph + ":6:9: error: stage 'train' (train): label_smoothing belongs to the built-in cross-entropy; "
                          "loss stage 'focal' has its own parameters")) << check.err;
  EXPECT_TRUE(has(graph + ":11:12: error: stage 'features' (features): csv and path are the same file")) << check.err;
  EXPECT_FALSE(has(":13:")) << check.err;  // CPU autocast: bf16 there is a choice, not an error
  // Each once (the rule is checked in every phase), and nothing ran.
  EXPECT_EQ(check.err.find("csv and path"), check.err.rfind("csv and path")) << check.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/f.csv"));
  // The rules refuse only the bad values: fixed, the graph checks clean.
  auto fixed = test::run_flowrun({"--check", graph, "--set", "train.label_smoothing=0", "--set",
                                  "features.csv=" + dir + "/rows.csv", "--set", "model.precision=fp32"});
  EXPECT_EQ(fixed.exit_code, 0) << fixed.err;
}

namespace {
// A training graph of `epochs` epochs over the nine images with an evaluate
// flow, then a predict flow, and `extra` stages (best_weights, early_stopping).
std::string monitored_graph(const std::string& dir, int epochs, const std::string& extra) {
  return "run epochs=" + std::to_string(epochs) + " seed=4 compute_threads=1\n"
         "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"
         "sampler = shuffle\n"
         "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
         "batch = batch size=3\n"
         "train = train scheduler=\"\" freezer=\"\"\n"
         "flow src -> prep -> batch -> train\n"
         "val = imagefolder root=\"" + nine_images() + "\"\nvprep = like prep\nvbatch = like batch\n"
         "evaluate = evaluate\n"
         "flow val -> vprep -> vbatch -> evaluate\n"
         "pval = like val\npprep = like prep\npbatch = like batch\n"
         "predict = predict csv=\"" + dir + "/p.csv\" grid=\"" + dir + "/p.png\"\n"
         "flow pval -> pprep -> pbatch -> predict\n"
         "model = resnet depth=18 classes=3\n"
         "optim = sgd lr=0.05\n"
         "save = save_weights path=\"" + dir + "/final.safetensors\"\n" + extra;
}

// Every epoch's figure `name` from metrics.jsonl.
std::vector<double> figures_of(const std::string& run_dir, const std::string& name) {
  std::vector<double> values;
  for (const auto& line : lines_of(run_dir + "/metrics.jsonl")) values.push_back(nlohmann::json::parse(line)[name]);
  return values;
}
}  // namespace

// Item 5, by a loss: best_weights and early_stopping watch val_loss, lower
// being better (mode=min, and auto for a *loss* figure).
TEST(Daily, BestWeightsAndEarlyStoppingByValLossMin) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph", monitored_graph(dir, 4,
      "best = best_weights path=\"" + dir + "/best.safetensors\" monitor=val_loss mode=min\n"
      "auto_best = best_weights path=\"" + dir + "/auto.safetensors\" monitor=val_loss\n"
      "stop = early_stopping monitor=val_loss mode=min patience=2 min_delta=1e9\n"));
  auto run = test::run_flowrun({graph, "--summary-json", dir + "/s.json", "--run-dir", dir + "/run"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto summary = nlohmann::json::parse(slurp(dir + "/s.json"));
  // No loss falls by more than 1e9: epoch 1 is early stopping's best, epochs 2 and 3 wait, the run ends after 3.
  EXPECT_EQ(summary["epochs"], 3);
  EXPECT_EQ(summary["stop_reason"].get<std::string>().rfind("early stopping after epoch 3: val_loss did not improve", 0),
            0u) << summary["stop_reason"];
  EXPECT_NE(summary["stop_reason"].get<std::string>().find("at epoch 1)"), std::string::npos) << summary["stop_reason"];
  // best_weights (min_delta 0) keeps the epoch of the lowest val_loss, the first of equals.
  const std::vector<double> loss = figures_of(dir + "/run", "val_loss");
  ASSERT_EQ(loss.size(), 3u);
  const auto lowest = std::min_element(loss.begin(), loss.end());
  const int best = static_cast<int>(lowest - loss.begin()) + 1;
  const int highest = static_cast<int>(std::max_element(loss.begin(), loss.end()) - loss.begin()) + 1;
  ASSERT_NE(best, highest) << "the losses do not tell min from max: " << loss[0] << " " << loss[1] << " " << loss[2];
  for (const std::string file : {"best", "auto"}) {
    stages::Metadata metadata;
    auto weights = stages::read_weights(dir + "/" + file + ".safetensors", &metadata);
    EXPECT_FALSE(weights.empty()) << file;
    EXPECT_EQ(metadata["monitor"], "val_loss") << file;
    EXPECT_EQ(metadata["best_epoch"], std::to_string(best)) << file << ": " << loss[0] << " " << loss[1] << " " << loss[2];
    EXPECT_NEAR(std::stod(metadata["best_value"]), *lowest, 1e-8 * std::abs(*lowest) + 1e-6) << file;  // %.9g
  }
  EXPECT_NEAR(summary["best_val_loss"].get<double>(), *lowest, 1e-8 * std::abs(*lowest) + 1e-6) << summary.dump();
}

// Items 3 and 5: predict's default pass is the run's last epoch, the one it
// ends at, also when early stopping ends it before the graph's last epoch
// (it predicted nothing: the run stopped before the epoch it waited for).
TEST(Daily, PredictRunsOnceWhenEarlyStoppingEndsTheRun) {
  const std::string dir = test::temp_dir();
  const std::string stop = "stop = early_stopping monitor=val_loss patience=1 min_delta=1e9\n";
  const std::string graph = write_graph(dir, "t.graph", monitored_graph(dir, 5, stop));
  auto run = test::run_flowrun({graph, "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto summary = nlohmann::json::parse(slurp(dir + "/s.json"));
  ASSERT_EQ(summary["epochs"], 2) << summary.dump();  // epoch 2 did not improve by 1e9: the run ends after it
  const auto rows = lines_of(dir + "/p.csv");
  ASSERT_EQ(rows.size(), 10u) << slurp(dir + "/p.csv");  // the header and one pass over the 9 images
  EXPECT_EQ(summary["predicted"], 9);
  EXPECT_TRUE(std::filesystem::exists(dir + "/p.png"));
  EXPECT_EQ(run.err.find("predict: the run ended before"), std::string::npos) << run.err;

  // The predictions of the model the run ended with (save_weights' file).
  const std::string alone = write_graph(dir, "predict.graph",
      "run seed=4 compute_threads=1\n"
      "val = imagefolder root=\"" + nine_images() + "\"\n"
      "vprep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "vbatch = batch size=3\n"
      "predict = predict csv=\"" + dir + "/q.csv\" grid=\"" + dir + "/q.png\"\n"
      "flow val -> vprep -> vbatch -> predict\n"
      "model = resnet depth=18 classes=3 weights=\"" + dir + "/final.safetensors\"\n");
  auto again = test::run_flowrun({alone});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const auto expected = lines_of(dir + "/q.csv");
  ASSERT_EQ(expected.size(), rows.size());
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto a = split(rows[i]), b = split(expected[i]);
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < 4; ++j) EXPECT_EQ(a[j], b[j]) << rows[i] << " | " << expected[i];
    EXPECT_NEAR(std::stod(a[4]), std::stod(b[4]), 1e-4) << rows[i] << " | " << expected[i];
  }
  EXPECT_EQ(slurp(dir + "/p.png"), slurp(dir + "/q.png"));

  // every=3 with patience 3: the passes of epoch 3 (every 3rd) and 4 (where the run ends), none of 1, 2.
  auto every = test::run_flowrun({graph, "--set", "predict.every=3", "--set", "stop.patience=3"});
  ASSERT_EQ(every.exit_code, 0) << every.err;
  const auto both = lines_of(dir + "/p.csv");
  ASSERT_EQ(both.size(), 19u) << slurp(dir + "/p.csv");
  for (size_t i = 1; i < both.size(); ++i) EXPECT_EQ(split(both[i]).back(), i <= 9 ? "3" : "4") << both[i];
  EXPECT_TRUE(leftovers(dir).empty()) << leftovers(dir).front();
}

namespace {
// A PNG read back as RGB pixels; `width` 0 when it cannot be read.
struct Pixels {
  int width = 0, height = 0;
  std::vector<uint32_t> rgb;  // 0xRRGGBB, row by row
  uint32_t at(int x, int y) const { return rgb[static_cast<size_t>(y) * width + x]; }
};
Pixels read_png(const std::string& path) {
  Pixels p;
  cairo_surface_t* surface = cairo_image_surface_create_from_png(path.c_str());
  if (cairo_surface_status(surface) == CAIRO_STATUS_SUCCESS) {
    cairo_surface_flush(surface);
    p.width = cairo_image_surface_get_width(surface);
    p.height = cairo_image_surface_get_height(surface);
    const int stride = cairo_image_surface_get_stride(surface);
    const unsigned char* data = cairo_image_surface_get_data(surface);
    for (int y = 0; y < p.height; ++y)
      for (int x = 0; x < p.width; ++x)
        p.rgb.push_back(reinterpret_cast<const uint32_t*>(data + static_cast<size_t>(y) * stride)[x] & 0xffffff);
  }
  cairo_surface_destroy(surface);
  return p;
}
// Pixels of (about) colour (r, g, b) in [x0, x1) x [y0, y1).
int count_colour(const Pixels& p, double r, double g, double b, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = std::max(0, y0); y < std::min(p.height, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(p.width, x1); ++x) {
      const uint32_t c = p.at(x, y);
      const int dr = static_cast<int>(c >> 16 & 255) - static_cast<int>(r * 255 + 0.5),
                dg = static_cast<int>(c >> 8 & 255) - static_cast<int>(g * 255 + 0.5),
                db = static_cast<int>(c & 255) - static_cast<int>(b * 255 + 0.5);
      n += std::abs(dr) <= 3 && std::abs(dg) <= 3 && std::abs(db) <= 3;
    }
  return n;
}
}  // namespace

// Item 15: the loss axis never goes below zero (nor accuracy above one),
// whatever the padding; a negative figure still gets an axis that shows it.
TEST(Daily, PlotValueAxesStayWithinWhatTheFiguresCanBe) {
  const auto loss = stages::chart_value_axis({0.02, 0.7, 1.9}, false);
  EXPECT_EQ(loss.lo, 0.0);  // 0.02 padded by 5 % of the range would be -0.074
  ASSERT_EQ(loss.ticks.size(), 5u);
  EXPECT_GE(loss.ticks.front(), 0.0);
  EXPECT_GT(loss.hi, 1.9);
  const auto accuracy = stages::chart_value_axis({0.4, 1.0}, true);
  EXPECT_EQ(accuracy.hi, 1.0);
  EXPECT_LT(accuracy.lo, 0.4);
  EXPECT_LE(accuracy.ticks.back(), 1.0);
  const auto negative = stages::chart_value_axis({-2.0, 3.0}, false);
  EXPECT_LT(negative.lo, -2.0);  // not clamped: the figure is below zero
  const auto flat = stages::chart_value_axis({0.5, 0.5}, false);
  EXPECT_LT(flat.lo, flat.hi);
}

// Item 15: metrics.png's legend is drawn under each chart's axes, not over
// the curves: every series' colour appears below the plot frame, in the
// legend band, and the band is clear of the frame and the epoch labels.
TEST(Daily, MetricsPlotLegendIsUnderTheAxes) {
  const std::string dir = test::temp_dir();
  stages::MetricsLog log(dir);
  for (int e = 0; e < 4; ++e) {
    EpochInfo epoch;
    epoch.epoch = e;
    epoch.phase = "main";
    log.record(epoch, {{"train_loss", 1.5 - 0.3 * e}, {"val_loss", 1.6 - 0.25 * e}, {"train_top1", 0.4 + 0.1 * e},
                       {"val_top1", 0.35 + 0.12 * e}});
  }
  const Pixels png = read_png(dir + "/metrics.png");
  ASSERT_EQ(png.width, stages::kMetricsPlotWidth);
  ASSERT_EQ(png.height, stages::kMetricsPlotHeight);
  const double half = stages::kMetricsPlotWidth / 2.0;
  // The series colours in drawing order (sorted names: train_* before val_*).
  const double colours[2][3] = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}};
  for (int chart = 0; chart < 2; ++chart) {
    const auto layout = stages::chart_layout(chart * half, 0, half, stages::kMetricsPlotHeight, 2);
    ASSERT_EQ(layout.legend.size(), 2u);
    for (int s = 0; s < 2; ++s) {
      const auto [lx, ly] = layout.legend[s];
      EXPECT_GT(ly - 12, layout.plot_bottom + 28) << "legend entry " << s << " overlaps the axis labels";
      EXPECT_LT(ly, stages::kMetricsPlotHeight);
      const auto& c = colours[s];
      // The swatch and name under the frame...
      EXPECT_GT(count_colour(png, c[0], c[1], c[2], static_cast<int>(lx), static_cast<int>(ly) - 12,
                             static_cast<int>(lx) + 120, static_cast<int>(ly) + 4), 20)
          << "chart " << chart << " series " << s << ": no legend under the axes";
      // ... and the curve inside it.
      EXPECT_GT(count_colour(png, c[0], c[1], c[2], static_cast<int>(layout.plot_left) + 1,
                             static_cast<int>(layout.plot_top) + 1, static_cast<int>(layout.plot_right) - 1,
                             static_cast<int>(layout.plot_bottom) - 1), 50)
          << "chart " << chart << " series " << s;
    }
  }
}

// Item 15: lr_find.png labels its y axis (a rotated "loss (smoothed)" left
// of the tick values, which start at x = 20).
TEST(Daily, LrFindPlotHasAYAxisLabel) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> batch -> train\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n");
  auto run = test::run_flowrun({graph, "--lr-find=6", "--run-dir", dir + "/lr"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const Pixels png = read_png(dir + "/lr/lr_find.png");
  ASSERT_GT(png.width, 0);
  int dark = 0;
  for (int y = 36; y < png.height - 44; ++y)
    for (int x = 0; x < 17; ++x) {
      const uint32_t c = png.at(x, y);
      dark += (c >> 16 & 255) < 128 && (c >> 8 & 255) < 128 && (c & 255) < 128;
    }
  EXPECT_GT(dark, 40) << "no y-axis label left of the loss ticks";
}

// Item 15: a prediction tile's title shows the predicted class's probability.
TEST(Daily, PredictionTilesShowTheProbability) {
  EXPECT_EQ(stages::prediction_title("cat", "dog", 0.934), "cat / dog 0.93");
  EXPECT_EQ(stages::prediction_title("?", "dog", 1.0), "? / dog 1.00");
}

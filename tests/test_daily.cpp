// Issue 21, the daily tool: files a job writes from several ranks' shares are
// those of a process alone; predict in a training graph predicts once, at the
// end; a run failing at start-up leaves no temporaries; ...
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data_support.h"
#include "stages/model/weights.h"
#include "test_support.h"

using namespace flowrun;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream in(line);
  for (std::string field; std::getline(in, field, ',');) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.push_back("");
  return fields;
}

std::string write_graph(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

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

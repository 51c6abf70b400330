// Checkpoints: a run stopped anywhere (mid-epoch, at a phase boundary, by a
// real SIGTERM) and resumed from its checkpoint ends with the same weights,
// bit for bit, and the same metrics as a run that never stopped. Bad
// checkpoint files are clear errors.
#include <gtest/gtest.h>

#include <png.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data_support.h"
#include "stages/model/weights.h"
#include "stages/train/checkpoint.h"
#include "test_support.h"

using namespace flowrun;
using test::slurp;
using test::write_graph;

namespace {

// ResNet-18 on three Fashion-MNIST classes: a frozen-backbone phase, then a
// full phase with discriminative rates, one-cycle and clipping; a validation
// flow after the training flow. `after_train` is the stage the training flow
// ends with (a no-op, or a stop for the test).
std::string graph_text(const std::string& after_train = "sleep us=0") {
  // compute_threads pinned: LibTorch's CPU sums (BatchNorm's statistics on
  // 1x1 maps among them) change with the count, and auto's count follows
  // --threads and the machine's cores; pinned, the runs compared bit for bit
  // take one count whatever runs the tests.
  return R"(run seed=3 in_flight=64 compute_threads=2
train_src     = idx part=train sampler=train_sampler
train_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=8 | shuffle
train_aug     = resize size=32 | random_crop size=32 padding=4 mode=reflect | hflip
train_norm    = normalize stats=custom mean=[0.286] std=[0.353]
train_batch   = batch size=4
train         = train model=model optimizer=optim scheduler=sched freezer=freezer
after_train   = )" + after_train + R"(
val_src       = idx part=test sampler=val_sampler
val_sampler   = classes names=[Shirt, Sneaker, Bag] | per_class k=4
val_aug       = resize size=32
val_norm      = normalize stats=custom mean=[0.286] std=[0.353]
val_batch     = batch size=5
evaluate      = evaluate model=model
flow train_src -> train_aug -> train_norm -> train_batch -> train -> after_train
flow val_src -> val_aug -> val_norm -> val_batch -> evaluate
model      = resnet depth=18 classes=3
checkpoint = checkpoint
save       = save_weights model=model path="weights.safetensors"
phase head epochs=1 {
  freezer = freeze mode=backbone
  optim   = adam lr=2e-3
  sched   = onecycle
}
phase full epochs=2 {
  freezer = freeze mode=none
  optim   = adam lr=1e-3 wd=1e-4 backbone_lr_factor=0.1 clip_value=0.1
  sched   = onecycle
}
)";
}

// One run of a graph in `dir`, its outputs in dir/RUN (run dir) and dir/RUN.safetensors.
test::CommandResult run(const std::string& dir, const std::string& graph, const std::string& name,
                        std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {graph, "--threads", "2", "--run-dir", dir + "/" + name,
                                   "--set", "save.path=" + dir + "/" + name + ".safetensors"};
  args.insert(args.end(), extra.begin(), extra.end());
  return test::run_flowrun(args, dir);
}

// The uninterrupted run of `graph` every resumed run must reproduce, in
// DIR/whole and DIR/whole.safetensors.
void make_whole_run(const std::string& dir, const std::string& graph) {
  auto whole = run(dir, graph, "whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
}

// Made once for all test processes by the CTest fixture resume_reference,
// which names its folder in FLOWRUN_RESUME_REFERENCE.
TEST(ResumeReference, DISABLED_MakeTheWholeRun) {
  const char* dir = std::getenv("FLOWRUN_RESUME_REFERENCE");
  ASSERT_NE(dir, nullptr) << "FLOWRUN_RESUME_REFERENCE names the folder to make";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  make_whole_run(dir, write_graph(dir, "resume.graph", graph_text()));
}

class Resume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::temp_dir());
    graph_ = new std::string(write_graph(*dir_, "resume.graph", graph_text()));
    const char* shared = std::getenv("FLOWRUN_RESUME_REFERENCE");
    if (shared && std::filesystem::exists(std::string(shared) + "/whole.safetensors")) {
      whole_ = new std::string(std::string(shared) + "/whole");
    } else {  // run outside CTest: made here
      make_whole_run(*dir_, *graph_);
      whole_ = new std::string(*dir_ + "/whole");
    }
  }
  static std::string* dir_;    // this process's runs
  static std::string* graph_;
  static std::string* whole_;  // the whole run: WHOLE/ (run dir) and WHOLE.safetensors

  // Stops a run at `stop_at`, resumes it, and compares it with the whole run.
  void stop_and_resume(const std::string& stop_at, const std::string& name) {
    const std::string& dir = *dir_;
    std::string stop_graph = write_graph(dir, name + ".graph", graph_text(stop_at));
    auto stopped = run(dir, stop_graph, name + "-stopped", {"--plugin", TEST_PLUGIN_STOP_AT});
    ASSERT_EQ(stopped.exit_code, 130) << stopped.err;
    const std::string checkpoint = dir + "/" + name + "-stopped/checkpoint.ckpt";
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    EXPECT_NE(stopped.err.find("--set checkpoint.resume=" + checkpoint), std::string::npos) << stopped.err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/" + name + "-stopped.safetensors"));  // weights only when complete
    auto resumed = run(dir, *graph_, name + "-resumed", {"--set", "checkpoint.resume=" + checkpoint});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("resuming at epoch"), std::string::npos) << resumed.err;
    // The same weights, bit for bit, and the same per-epoch metrics.
    // (==, not EXPECT_EQ: gtest's diff of two 45 MB strings takes tens of GB.)
    EXPECT_TRUE(slurp(dir + "/" + name + "-resumed.safetensors") == slurp(*whole_ + ".safetensors"));
    EXPECT_EQ(slurp(dir + "/" + name + "-resumed/metrics.csv"), slurp(*whole_ + "/metrics.csv"));
    auto summary = [&](const std::string& run_dir) { return nlohmann::json::parse(slurp(run_dir + "/summary.json")); };
    nlohmann::json whole = summary(*whole_), again = summary(dir + "/" + name + "-resumed");
    for (const char* key : {"val_top1", "val_loss", "train_loss", "train_steps"}) EXPECT_EQ(whole[key], again[key]) << key;
    EXPECT_EQ(again["epochs"], 3);
    EXPECT_TRUE(again.contains("resumed_from"));
  }
};
std::string* Resume::dir_ = nullptr;
std::string* Resume::graph_ = nullptr;
std::string* Resume::whole_ = nullptr;

}  // namespace

TEST_F(Resume, MidEpochInTheFrozenPhase) { stop_and_resume("stop_at epoch=1 item=2", "head-mid"); }

TEST_F(Resume, AtTheLastBatchBeforeAPhaseChange) { stop_and_resume("stop_at epoch=1 item=6", "head-end"); }

TEST_F(Resume, MidEpochInTheFullPhase) { stop_and_resume("stop_at epoch=2 item=3", "full-mid"); }

TEST_F(Resume, SigtermWritesAResumableCheckpoint) {
  const std::string& dir = *dir_;
  // every=0: no checkpoint at epoch ends, so the file can only come from the
  // signal. Batches reach train 0.4 s apart (a sleep before it changes no
  // number), so the signal, sent 1.5 s after epoch 1 ended (metrics.csv
  // written), lands mid-way through epoch 2's 6 batches.
  const std::string checkpoint = dir + "/signalled/checkpoint.ckpt";
  std::string text = graph_text();
  for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"train_batch   = batch size=4\n", "train_batch   = batch size=4\nslow          = sleep us=400000 concurrency=1\n"},
           {"-> train_batch -> train ->", "-> train_batch -> slow -> train ->"}}) {
    ASSERT_NE(text.find(from), std::string::npos) << from;
    text.replace(text.find(from), from.size(), to);
  }
  const std::string slow = write_graph(dir, "slow.graph", text);
  bool checkpoint_before_signal = false;
  std::chrono::steady_clock::time_point epoch_ended{};
  auto signalled = test::run_flowrun_signalled(
      {slow, "--threads", "2", "--run-dir", dir + "/signalled", "--set", "checkpoint.every=0", "--set",
       "run.compute_threads=1",
       "--set", "save.path=" + dir + "/signalled.safetensors"},
      [&] {
        checkpoint_before_signal = checkpoint_before_signal || std::filesystem::exists(checkpoint);
        if (epoch_ended == std::chrono::steady_clock::time_point{}) {
          if (std::filesystem::exists(dir + "/signalled/metrics.csv")) epoch_ended = std::chrono::steady_clock::now();
          return false;
        }
        return std::chrono::steady_clock::now() - epoch_ended > std::chrono::milliseconds(1500);
      },
      SIGTERM, dir);
  ASSERT_EQ(signalled.exit_code, 130) << signalled.err;
  EXPECT_FALSE(checkpoint_before_signal);
  ASSERT_TRUE(std::filesystem::exists(checkpoint)) << signalled.err;
  // The checkpoint holds the run up to where the signal stopped it, in the
  // middle of epoch 2's training flow (epoch 1 from 0): the position flowrun
  // reports. Mid-epoch for sure: the flow's 6 batches take 2.4 s at least
  // (the sleep), so 1.5 s in some, not all, have passed train, and a first
  // batch needs 0.4 s and a step, leaving a loaded machine 1 s to spare. A
  // checkpoint written as of the epoch's start would be item 0.
  RunState state = stages::read_checkpoint(checkpoint);
  EXPECT_EQ(state.position.epoch, 1) << state.position.describe();
  EXPECT_EQ(state.position.flow, 0) << state.position.describe();  // the training flow
  EXPECT_GT(state.position.items, 0u) << state.position.describe();
  EXPECT_LT(state.position.items, 24u) << state.position.describe();  // 3 classes x 8, batches of 4
  EXPECT_NE(signalled.err.find("flowrun: interrupted at " + state.position.describe() + " (1 complete epoch(s))"),
            std::string::npos) << signalled.err;
  // Resumed, the run ends as one of the same graph that never stopped. compute_threads is pinned: with auto,
  // the cores left to the model follow the sleep stage's timing, and LibTorch's float sums change order with
  // its intra-op thread count (about 1e-6 relative in the losses).
  auto uninterrupted = run(dir, slow, "slow-whole", {"--set", "checkpoint.every=0", "--set", "run.compute_threads=1"});
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.err;
  auto resumed = run(dir, slow, "after-signal",
                     {"--set", "checkpoint.every=0", "--set", "run.compute_threads=1", "--set", "checkpoint.resume=" + checkpoint});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming at " + state.position.describe()), std::string::npos) << resumed.err;
  // Compared as booleans: gtest's diff of two differing weight files (megabytes of bytes) takes gigabytes.
  EXPECT_TRUE(slurp(dir + "/after-signal.safetensors") == slurp(dir + "/slow-whole.safetensors"))
      << "the resumed run's weights differ from the uninterrupted run's (stopped at " << state.position.describe() << ")";
  EXPECT_EQ(slurp(dir + "/after-signal/metrics.csv"), slurp(dir + "/slow-whole/metrics.csv"));
}

TEST_F(Resume, AFinishedRunResumesToTheSameResult) {
  const std::string& dir = *dir_;
  auto again = run(dir, *graph_, "finished", {"--set", "checkpoint.resume=" + *whole_ + "/checkpoint.ckpt"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out.find("train: loss"), std::string::npos) << "no epoch should run:\n" << again.out;
  EXPECT_TRUE(slurp(dir + "/finished.safetensors") == slurp(*whole_ + ".safetensors"));
  nlohmann::json whole = nlohmann::json::parse(slurp(*whole_ + "/summary.json"));
  nlohmann::json finished = nlohmann::json::parse(slurp(dir + "/finished/summary.json"));
  EXPECT_EQ(whole["val_top1"], finished["val_top1"]);
  EXPECT_EQ(slurp(dir + "/finished/metrics.csv"), slurp(*whole_ + "/metrics.csv"));
}

// A finished run resumed with more epochs: its one-cycle schedule was planned
// for the epochs it had and stays at its floor; the run says so at the phase's start.
TEST_F(Resume, AFinishedRunResumedWithMoreEpochsSaysItsScheduleHasEnded) {
  const std::string& dir = *dir_;
  auto more = run(dir, *graph_, "more", {"--set", "checkpoint.resume=" + *whole_ + "/checkpoint.ckpt", "--set", "full.epochs=3"});
  ASSERT_EQ(more.exit_code, 0) << more.err;
  EXPECT_NE(more.out.find("epoch 4 (full 3/3)"), std::string::npos) << "the added epoch should run:\n" << more.out;
  // The resumed epoch's figures are its own, not summed with the finished epoch's
  // the end-of-epoch checkpoint holds: evaluate saw its 12 validation images once.
  EXPECT_NE(more.out.find("epoch 4 (full 3/3) evaluate: val_loss"), std::string::npos) << more.out;
  EXPECT_NE(more.out.find("val_top5 1.0000 (12 samples)"), std::string::npos) << more.out;
  EXPECT_EQ(more.out.find("(24 samples)"), std::string::npos) << more.out;
  const std::string said = "train: phase 'full': the schedule ended at step";
  const size_t warning = more.err.find(said);
  ASSERT_NE(warning, std::string::npos) << more.err;
  EXPECT_NE(more.err.find("epoch 4 and later train at its final rate", warning), std::string::npos) << more.err;
  EXPECT_EQ(more.err.find("the schedule ended", warning + said.size()), std::string::npos) << "said once:\n" << more.err;
}

TEST_F(Resume, BadCheckpointsAreClearErrors) {
  const std::string& dir = *dir_;
  const std::string good = *whole_ + "/checkpoint.ckpt";
  auto resume_from = [&](const std::string& path, std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--set", "checkpoint.resume=" + path});
    return run(dir, *graph_, "bad", extra);
  };
  // Missing.
  auto missing = resume_from(dir + "/nowhere.ckpt");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find(dir + "/nowhere.ckpt: cannot open"), std::string::npos) << missing.err;
  // Cut short, as a copy interrupted part way would be.
  std::string bytes = slurp(good);
  std::ofstream(dir + "/short.ckpt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  auto truncated = resume_from(dir + "/short.ckpt");
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.err.find(dir + "/short.ckpt: "), std::string::npos) << truncated.err;
  EXPECT_NE(truncated.err.find("outside the file"), std::string::npos) << truncated.err;
  // A weights file is not a checkpoint.
  auto weights = resume_from(*whole_ + ".safetensors");
  EXPECT_EQ(weights.exit_code, 1);
  EXPECT_NE(weights.err.find("whole.safetensors: not a flowrun checkpoint"), std::string::npos) << weights.err;
  // A checkpoint from a longer run than this graph.
  auto shorter = resume_from(good, {"--set", "full.epochs=1"});
  EXPECT_EQ(shorter.exit_code, 1);
  EXPECT_NE(shorter.err.find("the saved state is at epoch 4, which this graph (2 epochs, 2 flows) does not have"),
            std::string::npos)
      << shorter.err;
  // Another model: the saved weights do not fit, and the message names them.
  auto other_model = resume_from(good, {"--set", "model.classes=5"});
  EXPECT_EQ(other_model.exit_code, 1);
  EXPECT_NE(other_model.err.find("saved state of model 'model': weights do not fit the model"), std::string::npos)
      << other_model.err;
  EXPECT_NE(other_model.err.find("key 'fc.weight' has shape [3, 512] but the model needs [5, 512]"), std::string::npos)
      << other_model.err;
}

// Prediction on files named in a list, with the model taken from the
// checkpoint: the same predictions as from the exported weights.
TEST_F(Resume, PredictOnAnImageListFromTheCheckpoint) {
  const std::string& dir = *dir_;
  std::filesystem::create_directories(dir + "/images/sub");
  test::write_file(dir + "/images/a.jpg", test::encode_jpeg(test::pattern_image(40, 30, 1)));
  test::write_file(dir + "/images/sub/b.png", test::encode_png(test::pattern_image(28, 28, 2), PNG_COLOR_TYPE_GRAY));
  std::ofstream(dir + "/images/list.txt") << "# two images, one with its true class\na.jpg\tBag\nsub/b.png\n";
  const std::string graph = write_graph(dir, "predict.graph", R"(
source  = imagelist list="images/list.txt" classes=[Shirt, Sneaker, Bag]
decode  = decode
resize  = resize size=32 | center_crop size=32
norm    = normalize stats=custom mean=[0.286] std=[0.353]
batch   = batch size=2
predict = predict grid=""
model   = resnet depth=18 classes=3
)");
  auto predict_with = [&](const std::string& weights, const std::string& csv) {
    return test::run_flowrun({graph, "--set", "model.weights=" + weights, "--set", "predict.csv=" + csv}, dir);
  };
  auto from_checkpoint = predict_with(*whole_ + "/checkpoint.ckpt", dir + "/from-checkpoint.csv");
  ASSERT_EQ(from_checkpoint.exit_code, 0) << from_checkpoint.err;
  auto from_weights = predict_with(*whole_ + ".safetensors", dir + "/from-weights.csv");
  ASSERT_EQ(from_weights.exit_code, 0) << from_weights.err;
  std::string csv = slurp(dir + "/from-checkpoint.csv");
  EXPECT_EQ(csv, slurp(dir + "/from-weights.csv"));
  std::stringstream lines(csv);
  std::string header, first, second, extra;
  std::getline(lines, header), std::getline(lines, first), std::getline(lines, second);
  EXPECT_FALSE(std::getline(lines, extra));
  EXPECT_EQ(first.rfind(dir + "/images/a.jpg,Bag,", 0), 0u) << first;
  EXPECT_EQ(second.rfind(dir + "/images/sub/b.png,,", 0), 0u) << second;  // no true class
  for (const std::string& row : {first, second}) {
    std::vector<std::string> fields;
    std::stringstream cells(row);
    for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(cell);
    ASSERT_GE(fields.size(), 3u) << row;
    EXPECT_TRUE(fields[2] == "Shirt" || fields[2] == "Sneaker" || fields[2] == "Bag") << row;  // named, not numbered
  }
  // A class the list names but the model does not know: the list's line.
  std::ofstream(dir + "/images/bad.txt") << "a.jpg\nsub/b.png\tCat\n";
  auto bad = test::run_flowrun({graph, "--set", "source.list=images/bad.txt", "--set", "predict.csv=" + dir + "/x.csv"}, dir);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("images/bad.txt:2: class 'Cat' is not one of the stage's classes=[Shirt, Sneaker, Bag]"), std::string::npos) << bad.err;
}

TEST(Checkpoint, FileRoundTripsPositionAndStates) {
  std::string dir = test::temp_dir();
  RunState state;
  state.position = {4, 1, 120};
  state.stages = {{"model", std::string("\0\1\2weights", 10)}, {"train", "moments"}, {"empty", ""}};
  state.graph = "run seed=1\n";
  stages::write_checkpoint(dir + "/c.ckpt", state);
  RunState back = stages::read_checkpoint(dir + "/c.ckpt");
  EXPECT_EQ(back.position.epoch, 4);
  EXPECT_EQ(back.position.flow, 1);
  EXPECT_EQ(back.position.items, 120u);
  EXPECT_EQ(back.stages, state.stages);
  EXPECT_EQ(back.graph, state.graph);
  EXPECT_EQ(back.position.describe(), "epoch 5, flow 2, item 120");
}

// Model stages run LibTorch's kernels on the threads the data path leaves
// free, read back from LibTorch inside the stage; the worker threads that
// run data stages keep one intra-op thread, so tensor ops there never start
// OpenMP teams of their own.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "data_support.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "stages/common/compute_threads.h"
#include "test_support.h"

using namespace flowrun;

namespace {

// A transform that notes the most intra-op threads LibTorch reports on the
// worker threads that run it.
std::atomic<int> g_most_threads_seen{0};

class ThreadProbe : public TransformStage {
 public:
  static Schema schema() { return Schema("thread_probe", "test: notes at::get_num_threads() on the workers"); }
  explicit ThreadProbe(const StageInit&) {}
  void process(Item&) override {
    int threads = at::get_num_threads();
    int seen = g_most_threads_seen.load();
    while (threads > seen && !g_most_threads_seen.compare_exchange_weak(seen, threads)) {
    }
  }
};
const bool kRegistered = [] {
  Registry::global().add<ThreadProbe>();
  return true;
}();

struct Outcome {
  double train_threads = 0, evaluate_threads = 0;
  int probe_threads = 0;
};

Outcome run_tiny_training(int threads, const std::vector<std::string>& sets = {}) {
  static const std::string root = test::make_jpeg_folder({"a", "b"}, 6, 40, 36);
  const std::string text = "run epochs=2\n"
                           "src = imagefolder root=\"" + root + "\"\n"
                           "decode = decode\n"
                           "probe = thread_probe\n"
                           "aug = resize size=32 | center_crop size=32\n"
                           "norm = normalize\n"
                           "batch = batch size=4\n"
                           "train = train scheduler=\"\" freezer=\"\"\n"
                           "val_src = imagefolder root=\"" + root + "\"\n"
                           "val_decode = decode | resize size=32 | center_crop size=32 | normalize\n"
                           "val_probe = thread_probe\n"
                           "val_batch = batch size=6\n"
                           "evaluate = evaluate\n"
                           "flow src -> decode -> probe -> aug -> norm -> batch -> train\n"
                           "flow val_src -> val_decode -> val_probe -> val_batch -> evaluate\n"
                           "model = resnet depth=18 classes=2\n"
                           "optim = sgd lr=0.01\n";
  g_most_threads_seen = 0;
  RunOptions options;
  options.threads = threads;
  RunResult result = run_graph(test::resolve_text(text, sets), options);
  Outcome out;
  for (const auto& stage : result.stages) {
    auto figure = stage.figures.find("compute_threads");
    if (stage.name == "train" && figure != stage.figures.end()) out.train_threads = figure->second;
    if (stage.name == "evaluate" && figure != stage.figures.end()) out.evaluate_threads = figure->second;
  }
  out.probe_threads = g_most_threads_seen.load();
  return out;
}

int cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace

// A directory whose flow reports a measured load, and notes what the
// policy asked of the scheduler.
class LoadedFlow : public StageDirectory {
 public:
  explicit LoadedFlow(double busy) : busy_(busy) {}
  std::vector<Stage*> find(const std::string&) const override { return {}; }
  double busy_threads_besides(const std::string&) const override { return busy_; }
  void run_flow_on_one_thread(const std::string&, bool one) const override { one_thread = one; }
  mutable bool one_thread = false;

 private:
  double busy_;
};

TEST(ComputeThreads, AutoTakesEveryWorkerWhateverTheMeasuredLoad) {
  // LibTorch's CPU results depend on the intra-op count: a count that
  // followed the measured load would give two runs of one command
  // different numbers. The load decides scheduling only.
  const std::string name = "train";
  Params params;
  Services services;
  for (double busy : {0.0, 0.3, 0.9, 1.6}) {
    RunInfo run;
    run.threads = 2;
    LoadedFlow flow(busy);
    stages::ComputeThreads policy(StageInit{name, params, run, services, flow});
    policy.begin_epoch(/*on_cpu=*/true);
    EXPECT_EQ(policy.chosen(), std::min(2, cores())) << "busy " << busy;
    // A light data path waits between batches on one worker; a busy one keeps its workers.
    EXPECT_EQ(flow.one_thread, cores() >= 2 && busy < 0.5) << "busy " << busy;
  }
  RunInfo fixed;
  fixed.threads = 2;
  fixed.compute_threads = 1;
  LoadedFlow flow(0);
  stages::ComputeThreads pinned(StageInit{name, params, fixed, services, flow});
  pinned.begin_epoch(true);
  EXPECT_EQ(pinned.chosen(), 1);
  EXPECT_FALSE(flow.one_thread) << "one compute thread leaves the other worker to the data path";
}

TEST(ComputeThreads, ModelStagesUseTheCoresTheDataPathLeavesFree) {
  // --threads 2 and a data path that keeps far less than a core busy: the
  // model stages run on both (as many as the machine has, when it has fewer).
  Outcome two = run_tiny_training(2);
  EXPECT_EQ(two.train_threads, std::min(2, cores()));
  EXPECT_EQ(two.evaluate_threads, std::min(2, cores()));
  // ...while the workers that ran the data stages, the model stages' own
  // among them, kept one.
  EXPECT_EQ(two.probe_threads, 1);
  Outcome one = run_tiny_training(1);
  EXPECT_EQ(one.train_threads, 1);
  EXPECT_EQ(one.probe_threads, 1);
}

TEST(ComputeThreads, RunComputeThreadsSetsTheCount) {
  Outcome three = run_tiny_training(2, {"run.compute_threads=3"});
  EXPECT_EQ(three.train_threads, 3);  // read back from LibTorch inside the stage
  EXPECT_EQ(three.evaluate_threads, 3);
  EXPECT_EQ(three.probe_threads, 1);
  Outcome one = run_tiny_training(2, {"run.compute_threads=1"});
  EXPECT_EQ(one.train_threads, 1);
}

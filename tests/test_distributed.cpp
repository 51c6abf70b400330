// Jobs of several processes on c10d, on loopback: the ranks' averaged
// gradients give the same weights as one process over the same samples,
// evaluation figures are the job's, a dead rank ends the others with an
// error naming it, rendezvous failures name the address, a stopped job
// resumes to the very weights of one that never stopped, and torchrun's
// --no_python launch works.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data_support.h"
#include "stages/model/weights.h"
#include "test_support.h"

using namespace flowrun;
using test::slurp;
using test::write_graph;
extern char** environ;

namespace {

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// A flowrun process started with extra environment variables; its output goes to files.
struct Process {
  pid_t pid = 0;
  std::string out, err;  // file paths
  int wait() const {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

Process start(const std::string& program, const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
              const std::string& dir, const std::string& name) {
  Process p;
  p.out = dir + "/" + name + ".out";
  p.err = dir + "/" + name + ".err";
  std::string script = "cd '" FLOWRUN_SOURCE_DIR "' && exec";
  for (const auto& [key, value] : env) script += " env '" + key + "=" + value + "'";
  script += " '" + program + "'";
  for (const auto& arg : args) script += " '" + arg + "'";
  script += " >'" + p.out + "' 2>'" + p.err + "'";
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  posix_spawn(&p.pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ);
  return p;
}

// A small labelled JPEG folder: 4 classes x 8 images.
const std::string& image_root() {
  static const std::string root = test::make_jpeg_folder({"a", "b", "c", "d"}, 8, 40, 36);
  return root;
}

// Trains a ResNet-18 on the 32 images (BatchNorm in eval mode: each sample's
// gradient then depends on that sample alone) and saves the weights.
std::string training_graph(int batch, int epochs, const std::string& weights, const std::string& extra = "") {
  return "run epochs=" + std::to_string(epochs) + " seed=3 compute_threads=1 timeout=60\n"
         "src = imagefolder root=\"" + image_root() + "\" sampler=sampler\n"
         "sampler = shuffle\n"
         "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
         "batch = batch size=" + std::to_string(batch) + "\n"
         "train = train scheduler=\"\" freezer=freezer\n"
         "flow src -> prep -> batch -> train\n"
         // fp32: a job's ranks and one process sum the same gradients in other orders and
         // batch sizes, equal to 1e-5 in fp32; bf16 (precision=auto on CPUs with AVX512_BF16)
         // rounds the batch's products, 2e-3 apart.
         "model = resnet depth=18 classes=4 precision=fp32\n"
         "freezer = freeze mode=none bn_eval=true\n"
         "optim = sgd lr=0.05 momentum=0.9\n"
         "save = save_weights path=\"" + weights + "\"\n" + extra;
}

// The largest |a - b| over all the tensors of two weight files (counters
// such as BatchNorm's num_batches_tracked included). Every
// tensor of either file must be in the other, with the same shape, and hold
// no NaN: a missing tensor, another shape or a NaN fails the test (naming
// the tensor) and counts as an infinite difference, so it can never pass as
// "close" (std::max ignores NaN; a loop over one file's keys misses the
// other's extra ones).
double max_difference(const std::string& a, const std::string& b) {
  std::map<std::string, torch::Tensor> first, second;
  for (const auto& [key, tensor] : stages::read_weights(a)) first[key] = tensor;
  for (const auto& [key, tensor] : stages::read_weights(b)) second[key] = tensor;
  double most = 0;
  for (const auto& [key, tensor] : first)
    if (!second.count(key)) ADD_FAILURE() << key << " is in " << a << " but not in " << b, most = INFINITY;
  for (const auto& [key, y] : second) {
    auto it = first.find(key);
    if (it == first.end()) {
      ADD_FAILURE() << key << " is in " << b << " but not in " << a;
      most = INFINITY;
      continue;
    }
    const torch::Tensor& x = it->second;
    if (x.sizes() != y.sizes()) {
      ADD_FAILURE() << key << ": shape " << x.sizes() << " in " << a << " but " << y.sizes() << " in " << b;
      most = INFINITY;
    } else if (x.isnan().any().item<bool>() || y.isnan().any().item<bool>()) {
      ADD_FAILURE() << key << " holds a NaN (" << a << " / " << b << ")";
      most = INFINITY;
    } else if (x.numel() > 0) {
      const double d = (x.to(torch::kDouble) - y.to(torch::kDouble)).abs().max().item<double>();
      most = std::isnan(d) ? INFINITY : std::max(most, d);  // inf - inf
    }
  }
  return most;
}

}  // namespace

TEST(Distributed, TwoRanksOfBatch8TrainAsOneProcessOfBatch16) {
  std::string dir = test::temp_dir();
  // One process, batches of 16; two ranks, batches of 8 each: rank r takes
  // samples r, r+2, ... of the same shuffled order, so step k of the job sees
  // the very samples of step k of the process alone.
  std::string single = write_graph(dir, "single.graph", training_graph(16, 2, dir + "/single.safetensors"));
  std::string pair = write_graph(dir, "pair.graph", training_graph(8, 2, dir + "/pair.safetensors"));
  std::string initial = write_graph(dir, "initial.graph", training_graph(16, 0, dir + "/initial.safetensors"));
  auto alone = test::run_flowrun({single, "--threads", "1"});
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  auto job = test::run_flowrun({pair, "--nproc", "2", "--summary-json", dir + "/pair.json"});
  ASSERT_EQ(job.exit_code, 0) << job.err;
  ASSERT_EQ(test::run_flowrun({initial}).exit_code, 0);
  EXPECT_LE(max_difference(dir + "/single.safetensors", dir + "/pair.safetensors"), 1e-5);
  EXPECT_GT(max_difference(dir + "/initial.safetensors", dir + "/pair.safetensors"), 1e-3);  // it did train
  nlohmann::json summary = read_json(dir + "/pair.json");
  EXPECT_EQ(summary["rank"], 0);
  EXPECT_EQ(summary["world_size"], 2);
  EXPECT_EQ(summary["train_steps"], 4.0);  // 2 epochs of 16 samples per rank in batches of 8
  EXPECT_EQ(read_json(dir + "/pair.json.rank1")["rank"], 1);
  EXPECT_NE(job.err.find("rank 1 of 2:"), std::string::npos) << job.err;  // every rank's stage table
}

// A multi-task job on semi-supervised labels: most ranks' batches have no
// class label, some no label at all. Every head still takes part in every
// step with a zero gradient (as a masked loss in a DDP loop), so the
// ranks' gradient all-reduce, which expects every parameter's gradient,
// neither hangs nor fails, and the job trains.
TEST(Distributed, AMultiTaskJobStepsWhenARanksBatchHasNoLabelForAHead) {
  std::string dir = test::temp_dir();
  std::ofstream(dir + "/groups.tsv") << "a\tx\nb\tx\nc\ty\nd\ty\n";
  auto graph_text = [&](int epochs, const std::string& weights) {
    std::string text = training_graph(2, epochs, weights);
    const std::string sampler = "sampler = shuffle\n";
    text.replace(text.find(sampler), sampler.size(),
                 "sampler = class_groups file=\"" + dir + "/groups.tsv\" | keep_labels k=1 | "
                 "keep_labels k=3 task=group | shuffle\n");
    const std::string model = "classes=4";
    text.replace(text.find(model), model.size(), "classes=4 tasks=[group] task_classes=[2]");
    const std::string lr = "lr=0.05";  // two heads on batches of 2 diverge at 0.05
    text.replace(text.find(lr), lr.size(), "lr=0.005");
    return text;
  };
  std::string pair = write_graph(dir, "pair.graph", graph_text(2, dir + "/pair.safetensors"));
  std::string initial = write_graph(dir, "initial.graph", graph_text(0, dir + "/initial.safetensors"));
  auto job = test::run_flowrun({pair, "--nproc", "2", "--summary-json", dir + "/pair.json"});
  ASSERT_EQ(job.exit_code, 0) << job.err;
  ASSERT_EQ(test::run_flowrun({initial}).exit_code, 0);
  EXPECT_GT(max_difference(dir + "/initial.safetensors", dir + "/pair.safetensors"), 1e-3);  // it did train
  nlohmann::json summary = read_json(dir + "/pair.json");
  EXPECT_EQ(summary["train_steps"], 16.0);  // 2 epochs of 16 samples per rank in batches of 2
  EXPECT_TRUE(summary.contains("train_group_loss")) << summary.dump();
}

TEST(Distributed, EvaluationFiguresAreTheJobs) {
  std::string dir = test::temp_dir();
  // 23 samples: the ranks get 12 and 11 plus one repeat that evens them out
  // and must not be counted.
  std::string graph = write_graph(dir, "eval.graph",
                                  "run epochs=1 compute_threads=1\n"
                                  "val = imagefolder root=\"" + image_root() + "\" sampler=pick\n"
                                  "pick = subset count=23\n"
                                  "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
                                  "batch = batch size=4\n"
                                  "evaluate = evaluate\n"
                                  "model = resnet depth=18 classes=4\n");
  auto alone = test::run_flowrun({graph, "--threads", "1", "--summary-json", dir + "/one.json", "--run-dir", dir + "/one"});
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  auto job = test::run_flowrun({graph, "--nproc", "2", "--summary-json", dir + "/two.json", "--run-dir", dir + "/two"});
  ASSERT_EQ(job.exit_code, 0) << job.err;
  nlohmann::json one = read_json(dir + "/one.json"), two = read_json(dir + "/two.json"), other = read_json(dir + "/two.json.rank1");
  EXPECT_EQ(two["val_samples"], 23.0);
  EXPECT_EQ(other["val_samples"], 23.0);  // every rank reports the job's figures
  for (const char* key : {"val_top1", "val_top5", "val_samples"}) EXPECT_EQ(one[key], two[key]) << key;
  EXPECT_NEAR(one["val_loss"].get<double>(), two["val_loss"].get<double>(), 1e-6 * one["val_loss"].get<double>());
  EXPECT_EQ(slurp(dir + "/one/val_confusion.csv"), slurp(dir + "/two/val_confusion.csv"));
  // Rank 0 alone writes the run directory.
  EXPECT_TRUE(std::filesystem::exists(dir + "/two/summary.json"));
  EXPECT_EQ(read_json(dir + "/two/summary.json")["rank"], 0);
}

TEST(Distributed, ADeadRankEndsTheOthersNamingIt) {
  std::string dir = test::temp_dir();
  std::string graph = write_graph(dir, "long.graph", training_graph(8, 200, dir + "/w.safetensors"));
  const std::string port = std::to_string(free_port());
  auto rank = [&](int r) {
    return start(FLOWRUN_BINARY, {graph, "--threads", "1", "--set", "run.timeout=30"},
                 {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}},
                 dir, "rank" + std::to_string(r));
  };
  Process zero = rank(0), one = rank(1);
  // Once the job trains (rank 0 reports its first epoch), rank 1 dies.
  for (int i = 0; i < 600 && slurp(zero.out).find("epoch 1 (") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_NE(slurp(zero.out).find("epoch 1 ("), std::string::npos) << slurp(zero.err) << slurp(one.err);
  kill(one.pid, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  one.wait();
  EXPECT_EQ(zero.wait(), 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(seconds, 30.0);  // within the timeout: a dead peer is seen at once
  const std::string err = slurp(zero.err);
  EXPECT_NE(err.find("rank 0 of 2: "), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 stopped answering"), std::string::npos) << err;
}

TEST(Distributed, ARendezvousThatNeverCompletesNamesTheAddress) {
  std::string dir = test::temp_dir();
  std::string graph = write_graph(dir, "g.graph", training_graph(8, 1, dir + "/w.safetensors"));
  const std::string port = std::to_string(free_port());
  for (int r : {0, 1}) {
    Process alone = start(FLOWRUN_BINARY, {graph, "--set", "run.timeout=2"},
                          {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                           {"MASTER_PORT", port}}, dir, "alone" + std::to_string(r));
    EXPECT_EQ(alone.wait(), 1);
    const std::string err = slurp(alone.err);
    EXPECT_NE(err.find("rank " + std::to_string(r) + " of 2: "), std::string::npos) << err;
    EXPECT_NE(err.find("127.0.0.1:" + port), std::string::npos) << err;
    EXPECT_EQ(err.find("frame #"), std::string::npos) << err;  // no LibTorch backtrace
  }
  // A place in a job that cannot be is a usage error naming the variable.
  Process wrong = start(FLOWRUN_BINARY, {graph}, {{"RANK", "5"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}}, dir, "wrong");
  EXPECT_EQ(wrong.wait(), 2);
  EXPECT_NE(slurp(wrong.err).find("RANK='5' is not a whole number in 0..1"), std::string::npos) << slurp(wrong.err);
}

TEST(Distributed, AStoppedJobResumesToTheWeightsOfOneThatNeverStopped) {
  std::string dir = test::temp_dir();
  const std::string checkpoint = "checkpoint = checkpoint path=\"" + dir + "/ck.ckpt\" every=1\n";
  std::string graph = write_graph(dir, "g.graph", training_graph(4, 6, dir + "/resumed.safetensors", checkpoint));
  auto whole = test::run_flowrun({graph, "--nproc", "2", "--set", "save.path=" + dir + "/whole.safetensors",
                                  "--set", "checkpoint.path=" + dir + "/whole.ckpt"});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  // Ctrl-C to `flowrun --nproc` once the job is in its second epoch: every rank stops after the same step.
  Process job = start(FLOWRUN_BINARY, {graph, "--nproc", "2"}, {}, dir, "job");
  for (int i = 0; i < 600 && slurp(job.out).find("epoch 1 (") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(job.pid, SIGINT);
  ASSERT_EQ(job.wait(), 130) << slurp(job.err);
  ASSERT_TRUE(std::filesystem::exists(dir + "/ck.ckpt")) << slurp(job.err);
  // Another world size is refused, naming both.
  auto other = test::run_flowrun({graph, "--set", "checkpoint.resume=" + dir + "/ck.ckpt"});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("written by a job of 2 process(es); resume it with as many (this run has 1)"),
            std::string::npos) << other.err;
  auto resumed = test::run_flowrun({graph, "--nproc", "2", "--set", "checkpoint.resume=" + dir + "/ck.ckpt"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming at"), std::string::npos);
  EXPECT_EQ(max_difference(dir + "/whole.safetensors", dir + "/resumed.safetensors"), 0.0);
}

TEST(Distributed, TorchrunStartsTheRanks) {
  std::string dir = test::temp_dir();
  std::string graph = write_graph(dir, "g.graph", training_graph(8, 1, dir + "/w.safetensors"));
  // Debian 12's torchrun (PyTorch 1.13 on Python 3.11) cannot parse its own
  // default --redirects=0; --redirects 2 --tee 2 sidesteps that (README).
  Process torchrun = start("/usr/bin/torchrun", {"--no_python", "--standalone", "--nproc_per_node=2", "--redirects", "2",
                                                 "--tee", "2", FLOWRUN_BINARY, graph, "--summary-json", dir + "/s.json"},
                           {}, dir, "torchrun");
  ASSERT_EQ(torchrun.wait(), 0) << slurp(torchrun.err);
  EXPECT_EQ(read_json(dir + "/s.json")["world_size"], 2);
  EXPECT_EQ(read_json(dir + "/s.json.rank1")["rank"], 1);
  EXPECT_TRUE(std::filesystem::exists(dir + "/w.safetensors"));
}

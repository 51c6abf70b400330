// Mixed precision on the CPU (issue 25): which precision `precision=` takes,
// the CPU features that choice reads, CPU bf16 autocast and its cast cache,
// and a bf16 training run against fp32 over the same batches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "stages/model/precision.h"
#include "data_support.h"
#include "test_support.h"

using namespace flowrun;
using stages::Autocast;

namespace {

// The flags of /proc/cpuinfo's first "flags" line, space-padded; "" off Linux.
std::string cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  return "";
}

// One epoch of a ResNet-18 on a tiny folder on the CPU (no shuffle, no
// augmentation, seeded initial weights, 2 compute threads) at `precision`:
// the summary's mean training loss, and the run's stderr in `err`.
double cpu_train_loss(const std::string& root, const std::string& precision, std::string* err = nullptr) {
  std::string dir = test::temp_dir();
  auto run = test::run_flowrun({"bench/gpu_train.graph", "--threads", "2", "--log-level", "info",
                                "--set", "source.root=" + root, "--set", "source.sampler=",
                                "--set", "augment.random_crop.padding=0", "--set", "augment.random_crop.size=64",
                                "--set", "decode.min_size=64", "--set", "augment.hflip.p=0", "--set", "batch.size=8",
                                "--set", "run.epochs=1", "--set", "run.compute_threads=2", "--set", "model.depth=18",
                                "--set", "model.device=cpu", "--set", "upload.device=cpu",
                                "--set", "model.precision=" + precision, "--summary-json", dir + "/summary.json"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  if (err) *err = run.err;
  std::ifstream in(dir + "/summary.json");
  if (!in) return -1.0;
  return nlohmann::json::parse(in)["train_loss"].get<double>();
}

}  // namespace

// CPUID's answer is the kernel's: /proc/cpuinfo lists avx512_bf16 or
// amx_bf16 exactly when cpu_has_native_bf16() says so (the kernel, too,
// hides what the OS does not save).
TEST(Precision, NativeBf16MatchesProcCpuinfo) {
  const std::string flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags here";
  const bool listed = flags.find(" avx512_bf16 ") != std::string::npos || flags.find(" amx_bf16 ") != std::string::npos;
  EXPECT_EQ(stages::cpu_has_native_bf16(), listed) << flags;
  // Every extension named is one the kernel lists.
  std::istringstream names(stages::cpu_vector_extensions());
  for (std::string name; names >> name;) EXPECT_NE(flags.find(" " + name + " "), std::string::npos) << name;
}

TEST(Precision, ChoiceFollowsTheParameterAndTheCpu) {
  std::string why;
  EXPECT_EQ(stages::choose_precision("fp32", false).device, Autocast::kOff);
  EXPECT_EQ(stages::choose_precision("fp32", true).device, Autocast::kOff);
  EXPECT_EQ(stages::choose_precision("bf16", false).device, Autocast::kCpu);
  EXPECT_EQ(stages::choose_precision("bf16", true).device, Autocast::kCuda);
  EXPECT_EQ(stages::choose_precision("auto", true).device, Autocast::kCuda);
  const Autocast cpu = stages::choose_precision("auto", false, &why);
  // bf16 where the CPU has it natively, fp32 where LibTorch would emulate it.
  EXPECT_EQ(cpu.device, stages::cpu_has_native_bf16() ? Autocast::kCpu : Autocast::kOff) << why;
  EXPECT_NE(why.find(stages::cpu_has_native_bf16() ? "bf16 autocast" : "emulated"), std::string::npos) << why;
  EXPECT_NE(why.find("precision=auto"), std::string::npos) << why;
  EXPECT_STREQ(cpu.name(), cpu ? "bf16" : "fp32");
  EXPECT_THROW(stages::choose_precision("fp16", false), std::invalid_argument);
}

// Inside the scope a CPU matmul runs in bf16; after it, in fp32 again with
// autocast off.
TEST(Precision, CpuAutocastScopeCastsAndEnds) {
  torch::manual_seed(0);
  at::Tensor a = torch::randn({4, 8}), b = torch::randn({8, 3});
  {
    stages::AutocastScope scope(Autocast{Autocast::kCpu});
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
    scope.end();
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat);
  }
  {
    stages::AutocastScope off(Autocast{});
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat);
  }
}

// Autocast caches the bf16 copy of a leaf weight: without clearing it at
// the end of each scope, a forward after an optimizer step would use the
// weight from before the step.
TEST(Precision, CpuAutocastSeesTheWeightsOfEachStep) {
  torch::manual_seed(0);
  torch::nn::Linear linear(8, 4);
  at::Tensor x = torch::randn({2, 8});
  at::Tensor before;
  {
    stages::AutocastScope scope(Autocast{Autocast::kCpu});
    before = linear(x).to(torch::kFloat);
  }
  {
    torch::NoGradGuard no_grad;
    linear->weight.add_(1.0);
  }
  at::Tensor after;
  {
    stages::AutocastScope scope(Autocast{Autocast::kCpu});
    after = linear(x).to(torch::kFloat);
  }
  torch::NoGradGuard no_grad;
  at::Tensor expected = torch::nn::functional::linear(x, linear->weight, linear->bias);
  EXPECT_GT((after - before).abs().max().item<float>(), 0.5f);
  EXPECT_TRUE(torch::allclose(after, expected, 5e-2, 5e-2)) << after << expected;
}

// The same batches trained in CPU bf16 autocast give fp32's loss within
// 3e-2 (relative); the run says which precision it took, in its log and in
// the stage table.
TEST(Precision, CpuBf16TrainingLossAgreesWithFp32) {
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 8, 72, 72);
  std::string err32, err16;
  const double fp32 = cpu_train_loss(root, "fp32", &err32);
  const double bf16 = cpu_train_loss(root, "bf16", &err16);
  ASSERT_GT(fp32, 0.0);
  EXPECT_LE(std::abs(bf16 - fp32), 3e-2 * std::max(1.0, std::abs(fp32))) << fp32 << " vs " << bf16;
  EXPECT_NE(bf16, fp32);  // it did run in bf16
  EXPECT_NE(err32.find("model 'model': fp32 on the CPU (precision=fp32)"), std::string::npos) << err32;
  EXPECT_NE(err16.find("model 'model': bf16 on the CPU (precision=bf16)"), std::string::npos) << err16;
  // The table's train row: "train  train  serial  conc thr prec ...".
  auto row_has = [](const std::string& err, const std::string& prec) {
    std::istringstream lines(err);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("train ", 0) == 0 && line.find(" serial ") != std::string::npos)
        return line.find(" " + prec + " ") != std::string::npos;
    return false;
  };
  EXPECT_TRUE(row_has(err32, "fp32")) << err32;
  EXPECT_TRUE(row_has(err16, "bf16")) << err16;
}

// The GPU path. Tests that need a CUDA device are skipped with the words
// "no CUDA device" where there is none (every development and CI machine:
// ctest counts them as skipped, not passed); on a GPU host they run
// (bench/gpu_bench.sh runs this suite there). The build they need is the
// LibTorch 2.x lane (scripts/torch2.sh: CUDA compiled in); in a CPU-only
// build CUDA is never available and they are skipped alike.
//   Build.* -- what `flowrun --version` says of the build, on every machine.
//   DeviceErrors.* -- asking for CUDA where there is none, on every machine.
//   Gpu.* -- need a device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "stages/tensor/device.h"
#include "data_support.h"
#include "test_support.h"

#if defined(FLOWRUN_WITH_NCCL)
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "stages/dist/c10d_compat.h"
#endif

using namespace flowrun;

#define REQUIRE_CUDA_DEVICE() \
  if (!stages::cuda_available()) GTEST_SKIP() << "no CUDA device"

namespace {

// Trains one epoch of a ResNet-18 on a tiny folder (no shuffle, no
// augmentation, seeded initial weights) on `device` at `precision`; returns
// the epoch's mean training loss.
double train_loss_on(const std::string& root, const std::string& device, const std::string& precision) {
  std::string dir = test::temp_dir();
  auto run = test::run_flowrun({"bench/gpu_train.graph", "--threads", "2", "--set", "source.root=" + root,
                                "--set", "source.sampler=", "--set", "augment.random_crop.padding=0",
                                "--set", "augment.random_crop.size=64", "--set", "decode.min_size=64",
                                "--set", "augment.hflip.p=0", "--set", "batch.size=8", "--set", "run.epochs=1",
                                "--set", "model.depth=18", "--set", "model.device=" + device,
                                "--set", "model.precision=" + precision, "--set", "upload.device=" + device,
                                "--summary-json", dir + "/summary.json"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  std::ifstream in(dir + "/summary.json");
  if (!in) return -1.0;
  return nlohmann::json::parse(in)["train_loss"].get<double>();
}

}  // namespace

// `flowrun --version` says whether CUDA is compiled in: the LibTorch 2.x lane
// (FLOWRUN_REQUIRE_CUDA) must have it, the default build (Debian's CPU
// LibTorch) must not; and it names the devices it sees.
TEST(Build, VersionSaysWhetherCudaIsCompiledIn) {
  auto run = test::run_flowrun({"--version"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("flowrun "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(std::string("LibTorch ") + TORCH_VERSION), std::string::npos) << run.out;
#if FLOWRUN_EXPECT_CUDA
  EXPECT_NE(run.out.find("compiled in, cuDNN "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(", NCCL 2."), std::string::npos) << run.out;
#else
  EXPECT_NE(run.out.find("CUDA not compiled in"), std::string::npos) << run.out;
#endif
  if (stages::cuda_available())
    EXPECT_NE(run.out.find(" CUDA device"), std::string::npos) << run.out;
  else
    EXPECT_NE(run.out.find("; no CUDA device"), std::string::npos) << run.out;
}

// device=cuda where there is none: a clear error naming the stage, exit 2 or
// 1 before any batch is trained, never a LibTorch trace.
TEST(DeviceErrors, CudaWithoutADeviceIsAClearErrorNamingTheStage) {
  if (stages::cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  std::string root = test::make_jpeg_folder({"a", "b"}, 2, 64, 64);
  for (const std::string stage : {"model", "upload"}) {
    auto run = test::run_flowrun({"bench/gpu_train.graph", "--set", "source.root=" + root,
                                  "--set", stage + ".device=cuda", "--set", "model.depth=18",
                                  "--set", "batch.size=2", "--set", "run.epochs=1"});
    EXPECT_NE(run.exit_code, 0) << stage;
    EXPECT_NE(run.err.find("'" + stage + "'"), std::string::npos) << run.err;
    EXPECT_NE(run.err.find("device=cuda"), std::string::npos) << run.err;
    EXPECT_NE(run.err.find("no CUDA device"), std::string::npos) << run.err;
    EXPECT_EQ(run.err.find("epoch 1"), std::string::npos) << run.err;  // nothing ran
    EXPECT_EQ(run.err.find("frame #"), std::string::npos) << run.err;  // no C++ trace
  }
}

// A batch uploaded on the side stream arrives whole and equal on the device,
// and the compute stream sees it without an explicit synchronisation.
TEST(Gpu, UploadCopiesTheBatchOnASideStream) {
  REQUIRE_CUDA_DEVICE();
  torch::manual_seed(0);
  at::Tensor host = torch::rand({8, 3, 64, 64}).pin_memory();
  at::Tensor device = stages::upload(host, 0, /*non_blocking=*/true);
  ASSERT_TRUE(device.is_cuda());
  // Work queued on the compute stream after the upload reads the copied bytes.
  at::Tensor back = (device * 2).cpu();
  EXPECT_TRUE(torch::equal(back, host * 2));
}

// The same batches trained on the GPU give the CPU's loss: fp32 within 1e-3,
// bf16 autocast within 3e-2 (relative).
TEST(Gpu, TrainingLossAgreesWithTheCpu) {
  REQUIRE_CUDA_DEVICE();
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 8, 72, 72);
  const double cpu = train_loss_on(root, "cpu", "fp32");
  const double gpu32 = train_loss_on(root, "cuda", "fp32");
  const double gpu16 = train_loss_on(root, "cuda", "bf16");
  ASSERT_GT(cpu, 0.0);
  EXPECT_LE(std::abs(gpu32 - cpu), 1e-3 * std::max(1.0, std::abs(cpu))) << cpu << " vs " << gpu32;
  EXPECT_LE(std::abs(gpu16 - cpu), 3e-2 * std::max(1.0, std::abs(cpu))) << cpu << " vs " << gpu16;
}

// A job of one rank on NCCL (the 2.x c10d branch: a ProcessGroup holding a
// ProcessGroupNCCL backend) all-reduces a CUDA tensor.
TEST(Gpu, NcclGroupOfOneRankAllReduces) {
  REQUIRE_CUDA_DEVICE();
#if defined(FLOWRUN_WITH_NCCL)
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto group = stages::compat::make_nccl_group(store, 0, 1, std::chrono::milliseconds(60000));
  std::vector<at::Tensor> tensors{torch::arange(4, torch::dtype(torch::kFloat32).device(torch::kCUDA))};
  group->allreduce(tensors)->wait();
  EXPECT_TRUE(torch::equal(tensors[0].cpu(), torch::arange(4, torch::kFloat32)));
#else
  GTEST_SKIP() << "this build has no NCCL";
#endif
}

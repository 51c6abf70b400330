// What data-parallel training costs on this machine, over Gloo on loopback:
// (1) all-reducing ResNet-50's gradients (25.6 M floats) per step, in DDP's
// 25 MB buckets; (2) a ResNet-50 training step of each rank with those
// gradients averaged by c10d's Reducer as backward goes (overlapped), and
// by one all-reduce after backward (not overlapped), beside a step alone.
//   build/bench/dist_bench [--ranks 2] [--batch 8] [--size 64] [--steps 6]
// It starts the ranks itself (fork + exec), as `flowrun --nproc` does.
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pipeline/trace.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/gradient_sync.h"
#include "stages/dist/job.h"
#include "stages/model/resnet.h"

extern char** environ;
using namespace flowrun;
using namespace flowrun::stages;

namespace {

int arg(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoi(argv[i + 1]);
  return fallback;
}

double seconds_since(int64_t start) { return (now_ns() - start) / 1e9; }

// One rank's measurements; rank 0 prints them.
int run_rank(int argc, char** argv, int rank, int ranks) {
  const int batch = arg(argc, argv, "--batch", 8), size = arg(argc, argv, "--size", 64);
  const int steps = arg(argc, argv, "--steps", 6);
  JobInfo info;
  info.rank = rank;
  info.world_size = ranks;
  info.master_addr = "127.0.0.1";
  info.master_port = std::atoi(std::getenv("MASTER_PORT"));
  info.timeout_s = 300;
  spdlog::set_level(spdlog::level::warn);
  Job& job = *Job::of(info);
  set_intra_op_threads(1);  // the ranks share the cores

  // (1) ResNet-50's gradients, in 25 MB buckets, all-reduced.
  const int64_t floats = 25'557'032, bucket = 25 * 1024 * 1024 / 4;
  std::vector<at::Tensor> buckets;
  for (int64_t done = 0; done < floats; done += bucket) buckets.push_back(at::ones({std::min(bucket, floats - done)}));
  job.allreduce_sum({buckets.front()}, "warm-up");
  int64_t start = now_ns();
  for (int s = 0; s < steps; ++s)
    for (auto& b : buckets) job.allreduce_sum({b}, "bench");
  const double allreduce = seconds_since(start) / steps;

  // (2) Training steps of ResNet-50.
  torch::manual_seed(0);
  ResNet net(50, 10);
  net->train();
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.01));
  const at::Tensor images = torch::randn({batch, 3, size, size}), labels = torch::randint(10, {batch}, at::kLong);
  auto step = [&](GradientSync* sync, bool after) {
    if (sync) sync->before_forward();
    at::Tensor loss = torch::nn::functional::cross_entropy(net->forward(images), labels);
    if (sync) sync->before_backward();
    optimizer.zero_grad();
    loss.backward();
    if (after) {  // the gradients all-reduced once backward is done
      std::vector<at::Tensor> grads;
      for (auto& p : net->parameters()) grads.push_back(p.grad());
      job.allreduce_sum(grads, "bench");
      for (auto& g : grads) g.div_(job.size());
    }
    optimizer.step();
  };
  auto time_steps = [&](GradientSync* sync, bool after) {
    step(sync, after);  // warm-up
    job.barrier("bench");
    int64_t begin = now_ns();
    for (int s = 0; s < steps; ++s) step(sync, after);
    return seconds_since(begin) / steps;
  };
  const double alone = time_steps(nullptr, false);
  GradientSync sync(job, *net);
  const double overlapped = time_steps(&sync, false);
  const double not_overlapped = time_steps(nullptr, true);
  if (rank == 0) {
    std::printf("%d ranks over Gloo on loopback, %d cores; ResNet-50, batch %d per rank at %d px, SGD\n", ranks,
                static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)), batch, size);
    std::printf("  all-reduce of 25.6 M gradient floats (%zu buckets of 25 MB): %8.1f ms per step\n", buckets.size(),
                allreduce * 1e3);
    std::printf("  step, each rank alone (no gradient exchange):        %8.1f ms\n", alone * 1e3);
    std::printf("  step, c10d Reducer (all-reduce overlapped):          %8.1f ms  (+%.1f ms)\n", overlapped * 1e3,
                (overlapped - alone) * 1e3);
    std::printf("  step, one all-reduce after backward:                 %8.1f ms  (+%.1f ms)\n", not_overlapped * 1e3,
                (not_overlapped - alone) * 1e3);
  }
  Job::leave();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* rank = std::getenv("RANK")) return run_rank(argc, argv, std::atoi(rank), std::atoi(std::getenv("WORLD_SIZE")));
  const int ranks = arg(argc, argv, "--ranks", 2);
  const std::string port = std::to_string(20000 + getpid() % 20000);
  std::vector<pid_t> children;
  for (int r = 0; r < ranks; ++r) {
    setenv("RANK", std::to_string(r).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(ranks).c_str(), 1);
    setenv("MASTER_PORT", port.c_str(), 1);
    pid_t pid = 0;
    posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, environ);
    children.push_back(pid);
  }
  int worst = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    worst = std::max(worst, WIFEXITED(status) ? WEXITSTATUS(status) : 1);
  }
  return worst;
}

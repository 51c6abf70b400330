#include "job_launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

namespace flowrun {
namespace {

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value && *value ? value : nullptr;
}

int env_int(const char* name, int lo, int hi) {
  const char* text = env(name);
  char* end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (errno || end == text || *end || value < lo || value > hi)
    throw std::invalid_argument(std::string(name) + "='" + text + "' is not a whole number in " + std::to_string(lo) +
                                ".." + std::to_string(hi));
  return static_cast<int>(value);
}

constexpr int kDefaultPort = 29500;  // PyTorch's

// The ranks started by run_local_ranks, for the signal handler.
constexpr int kMaxRanks = 1024;
pid_t g_children[kMaxRanks];
std::atomic<int> g_child_count{0};

void forward_signal(int signal) {
  for (int i = 0; i < g_child_count.load(); ++i)
    if (g_children[i] > 0) kill(g_children[i], signal);
}

int free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    throw std::runtime_error(std::string("no free loopback port: ") + std::strerror(errno));
  }
  close(fd);
  return ntohs(address.sin_port);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "ended";
}

}  // namespace

JobInfo job_from_environment() {
  JobInfo job;
  if (env("WORLD_SIZE")) {
    job.world_size = env_int("WORLD_SIZE", 1, 1 << 20);
    if (!env("RANK")) throw std::invalid_argument("WORLD_SIZE is set but RANK is not");
    job.rank = env_int("RANK", 0, job.world_size - 1);
    job.local_rank = env("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, 1 << 20) : job.rank;
    job.local_world_size = env("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", 1, 1 << 20) : 1;
    job.master_addr = env("MASTER_ADDR") ? env("MASTER_ADDR") : "";
  } else if (env("SLURM_STEP_NUM_TASKS") && env("SLURM_PROCID")) {  // a step started by srun
    job.world_size = env_int("SLURM_STEP_NUM_TASKS", 1, 1 << 20);
    job.rank = env_int("SLURM_PROCID", 0, job.world_size - 1);
    job.local_rank = env("SLURM_LOCALID") ? env_int("SLURM_LOCALID", 0, 1 << 20) : 0;
    job.local_world_size = env("SLURM_STEP_TASKS_PER_NODE") ? std::max(1, std::atoi(env("SLURM_STEP_TASKS_PER_NODE"))) : 1;
    job.master_addr = env("MASTER_ADDR") ? env("MASTER_ADDR")
                      : env("SLURM_LAUNCH_NODE_IPADDR") ? env("SLURM_LAUNCH_NODE_IPADDR") : "";
  } else {
    return job;
  }
  job.master_port = env("MASTER_PORT") ? env_int("MASTER_PORT", 1, 65535) : kDefaultPort;
  if (job.distributed() && job.master_addr.empty())
    throw std::invalid_argument("a job of " + std::to_string(job.world_size) +
                                " processes needs MASTER_ADDR: where rank 0 serves the job's store");
  return job;
}

int run_local_ranks(int ranks, const std::vector<std::string>& argv, double grace_s) {
  if (ranks > kMaxRanks) throw std::invalid_argument("--nproc: at most " + std::to_string(kMaxRanks) + " ranks");
  const int port = free_loopback_port();
  struct sigaction action {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  for (int r = 0; r < ranks; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      forward_signal(SIGTERM);
      throw std::runtime_error(std::string("--nproc: cannot start a rank: ") + std::strerror(errno));
    }
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      execv("/proc/self/exe", args.data());
      std::cerr << "flowrun: cannot start rank " << r << ": " << std::strerror(errno) << "\n";
      _exit(127);
    }
    g_children[r] = pid;
    g_child_count.store(r + 1);
  }
  bool failed = false, interrupted = false;
  int running = ranks;
  std::chrono::steady_clock::time_point failed_at;
  bool terminated = false, killed = false;
  while (running > 0) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR) break;
    if (pid <= 0) {
      // A rank failed: the others end by themselves (their collectives fail
      // at once or time out); past the grace period they are ended.
      if (failed) {
        double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - failed_at).count();
        if (!terminated && waited > grace_s) {
          std::cerr << "flowrun: stopping the ranks still running\n";
          forward_signal(SIGTERM);
          terminated = true;
        } else if (!killed && waited > grace_s + 10) {
          forward_signal(SIGKILL);
          killed = true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int rank = 0;
    for (int i = 0; i < ranks; ++i)
      if (g_children[i] == pid) {
        rank = i;
        g_children[i] = -1;
      }
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    const bool stopped = WIFEXITED(status) && WEXITSTATUS(status) == 130;
    interrupted |= stopped;
    if (!ok && !stopped) {
      std::cerr << "flowrun: rank " << rank << " of " << ranks << " " << describe_status(status) << "\n";
      if (!failed) failed_at = std::chrono::steady_clock::now();
      failed = true;
    }
  }
  return failed ? 1 : interrupted ? 130 : 0;
}

}  // namespace flowrun

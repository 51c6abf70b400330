#include "stages/dist/job.h"

#include <stdexcept>

#ifdef FLOWRUN_WITH_DISTRIBUTED
#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FLOWRUN_WITH_NCCL
#include <torch/csrc/distributed/c10d/NCCLUtils.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "pipeline/interrupt.h"
#include "pipeline/trace.h"
#include "stages/dist/c10d_compat.h"

namespace flowrun::stages {
namespace {

using std::chrono::milliseconds;

milliseconds to_ms(double seconds) { return milliseconds(static_cast<int64_t>(seconds * 1000)); }

std::string where(const JobInfo& info) { return info.master_addr + ":" + std::to_string(info.master_port); }

std::string heartbeat_key(int rank) { return "flowrun/heartbeat/" + std::to_string(rank); }
std::string failure_key(int rank) { return "flowrun/failed/" + std::to_string(rank); }

// What went wrong, without LibTorch's backtrace: its first line.
std::string reason(const std::exception& e) {
  const auto* error = dynamic_cast<const c10::Error*>(&e);
  std::string text = error ? error->what_without_backtrace() : e.what();
  return text.substr(0, text.find('\n'));
}

bool is_loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

std::mutex g_job_mutex;
std::unique_ptr<Job> g_job;

// A connection to the job's store. The rendezvous (`join`): rank 0 serves
// it, and every rank counts itself in and waits until all have (c10d's
// wait_for_workers: without it rank 0 would wait for the count until its
// timeout). The heartbeat thread and the look at the other ranks after a
// failure take connections of their own, which do not count.
c10::intrusive_ptr<c10d::TCPStore> connect_store(const JobInfo& info, bool join, double timeout_s) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(info.master_port);
  options.isServer = join && info.rank == 0;
  options.numWorkers = static_cast<std::size_t>(info.world_size);
  options.waitWorkers = join;
  options.timeout = to_ms(timeout_s);
  return c10::make_intrusive<c10d::TCPStore>(info.master_addr, options);
}

}  // namespace

struct Job::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroup> gloo;
#ifdef FLOWRUN_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroup> nccl;
#endif
  at::Tensor vote;
  c10::intrusive_ptr<c10d::Work> vote_work;
  // The heartbeat: a counter in the store this rank bumps every second.
  std::thread heartbeat;
  std::mutex heartbeat_mutex;
  std::condition_variable heartbeat_wake;
  bool heartbeat_stop = false;
  c10::intrusive_ptr<c10d::TCPStore> heartbeat_store;
};

Job* Job::of(const JobInfo& info) {
  if (!info.distributed()) return nullptr;
  std::lock_guard<std::mutex> lock(g_job_mutex);
  if (!g_job) g_job.reset(new Job(info));
  return g_job.get();
}

Job::Job(const JobInfo& info) : info_(info), impl_(std::make_unique<Impl>()) {
  const std::string prefix = "rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": ";
  if (info.master_addr.empty() || info.master_port <= 0)
    throw std::runtime_error(prefix + "MASTER_ADDR and MASTER_PORT must say where the job's ranks meet");
  const int64_t start = now_ns();
  // flowrun reports a failed exchange itself (one line naming the rank and the address); LibTorch 2.x's c10d
  // would also log it, with a C++ backtrace. Its own log stays on when flowrun logs at debug.
  compat::quiet_c10d_error_log(!spdlog::should_log(spdlog::level::debug));
  spdlog::info("joining the job at {} ({} ranks, timeout {} s)", where(info), info.world_size, info.timeout_s);
  try {
    impl_->store = connect_store(info, /*join=*/true, info.timeout_s);
  } catch (const std::exception& e) {
    if (info.rank == 0)
      throw std::runtime_error(prefix + "the job's ranks did not all meet at " + where(info) + " within " +
                               std::to_string(static_cast<int>(info.timeout_s)) + " s (every rank must start, "
                               "with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE): " + reason(e));
    throw std::runtime_error(prefix + "could not reach the job's store at " + where(info) + " within " +
                             std::to_string(static_cast<int>(info.timeout_s)) + " s (is rank 0 running there, and "
                             "are MASTER_ADDR and MASTER_PORT right?): " + reason(e));
  }
  // Gloo: bound to the loopback interface for a job on one machine, else to
  // GLOO_SOCKET_IFNAME or this host's address (as PyTorch does).
  auto options = c10d::ProcessGroupGloo::Options::create(to_ms(info.timeout_s));
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface && *interface)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  else if (is_loopback(info.master_addr))
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  try {
    impl_->gloo = compat::make_gloo_group(c10::make_intrusive<c10d::PrefixStore>("flowrun/gloo", impl_->store),
                                          info.rank, info.world_size, options);
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + "the ranks met at " + where(info) + " but could not connect to each other: " +
                             reason(e));
  }
  if (info.backend == "nccl") {
#ifndef FLOWRUN_WITH_NCCL
    throw std::runtime_error(prefix + "run.backend=nccl, but this flowrun's LibTorch has no NCCL");
#endif
  }
  // Heartbeats go through a connection of their own (a store client is not
  // shared between threads).
  impl_->heartbeat_store = connect_store(info, false, info.timeout_s);
  impl_->heartbeat = std::thread([this] {
    std::unique_lock<std::mutex> lock(impl_->heartbeat_mutex);
    while (!impl_->heartbeat_stop) {
      try {
        impl_->heartbeat_store->add(heartbeat_key(info_.rank), 1);
      } catch (const std::exception&) {
        // rank 0's store is gone: the job is ending or failed; the collectives say which
      }
      impl_->heartbeat_wake.wait_for(lock, std::chrono::seconds(1));
    }
  });
  // From now on a stop needs the ranks' agreement (see pipeline/interrupt.h).
  agree_on_stops([this](bool wanted) {
    at::Tensor vote = at::full({1}, wanted ? 1 : 0, at::kInt);
    c10d::AllreduceOptions max;
    max.reduceOp = c10d::ReduceOp::MAX;
    std::vector<at::Tensor> tensors{vote};
    wait(impl_->gloo->allreduce(tensors, max), "the stop vote");
    return vote.item<int>() > 0;
  });
  spdlog::info("joined the job: rank {} of {} ({:.2f} s)", info.rank, info.world_size, (now_ns() - start) / 1e9);
}

Job::~Job() {
  {
    std::lock_guard<std::mutex> lock(impl_->heartbeat_mutex);
    impl_->heartbeat_stop = true;
  }
  impl_->heartbeat_wake.notify_all();
  if (impl_->heartbeat.joinable()) impl_->heartbeat.join();
}

void Job::leave() {
  std::unique_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(g_job_mutex);
    job = std::move(g_job);
  }
  if (!job) return;
  agree_on_stops({});
  try {
    job->barrier("leaving the job");
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
}

void Job::report_failure(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_job_mutex);
  if (!g_job) return;
  try {
    std::string text = reason.substr(0, 2000);
    g_job->impl_->store->set(failure_key(g_job->rank()), std::vector<uint8_t>(text.begin(), text.end()));
  } catch (const std::exception&) {
  }
}

void Job::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    fail(what, reason(e));
  }
}

void Job::failed(const std::string& what, const std::exception& cause) { fail(what, reason(cause)); }

void Job::fail(const std::string& what, const std::string& cause) {
  throw std::runtime_error("rank " + std::to_string(rank()) + " of " + std::to_string(size()) + ": " + what +
                           " with the other ranks failed: " + diagnose() + " (c10d: " + cause + ")");
}

// Which rank is to blame: one that left its reason, else one whose
// heartbeat stopped, else rank 0 when its store is gone.
std::string Job::diagnose() {
  try {
    auto store = connect_store(info_, false, 5.0);
    std::vector<int64_t> before(size()), after(size());
    for (int r = 0; r < size(); ++r) {
      if (store->check({failure_key(r)})) {
        std::vector<uint8_t> reason = store->get(failure_key(r));
        return "rank " + std::to_string(r) + " failed: " + std::string(reason.begin(), reason.end());
      }
      before[r] = store->add(heartbeat_key(r), 0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // three heartbeats
    std::string silent;
    for (int r = 0; r < size(); ++r) {
      if (store->check({failure_key(r)})) {
        std::vector<uint8_t> reason = store->get(failure_key(r));
        return "rank " + std::to_string(r) + " failed: " + std::string(reason.begin(), reason.end());
      }
      after[r] = store->add(heartbeat_key(r), 0);
      if (after[r] == before[r]) silent += (silent.empty() ? "rank " : ", rank ") + std::to_string(r);
    }
    if (!silent.empty()) return silent + " stopped answering (no heartbeat for 3 s: the process died or hangs)";
    return "every rank is still alive: one of them failed or was stopped (its own output says why)";
  } catch (const std::exception&) {
    return "rank 0 stopped answering (the job's store at " + where(info_) + " is gone: it died or was stopped)";
  }
}

namespace {
// The tensors grouped by type and device: one flat buffer each, so that a
// collective moves one message per group.
struct FlatGroup {
  std::vector<at::Tensor> members;
  at::Tensor flat;
};
std::vector<FlatGroup> flatten(const std::vector<at::Tensor>& tensors) {
  std::map<std::pair<int, std::string>, FlatGroup> groups;
  for (const auto& t : tensors)
    groups[{static_cast<int>(t.scalar_type()), t.device().str()}].members.push_back(t);
  std::vector<FlatGroup> out;
  for (auto& entry : groups) {
    FlatGroup& group = entry.second;
    std::vector<at::Tensor> flat;
    for (const auto& t : group.members) flat.push_back(t.reshape({-1}));
    group.flat = at::cat(flat);
    out.push_back(std::move(group));
  }
  return out;
}
void unflatten(const FlatGroup& group) {
  int64_t offset = 0;
  for (const auto& t : group.members) {
    at::Tensor target = t;  // a handle sharing the caller's storage
    target.copy_(group.flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}
}  // namespace

void Job::allreduce_sum(const std::vector<at::Tensor>& tensors, const std::string& what) {
  for (FlatGroup& group : flatten(tensors)) {
    std::vector<at::Tensor> flat{group.flat};
    wait(this->group(group.flat.device())->allreduce(flat), what);
    unflatten(group);
  }
}

void Job::broadcast(const std::vector<at::Tensor>& tensors, int root, const std::string& what) {
  for (FlatGroup& group : flatten(tensors)) {
    std::vector<at::Tensor> flat{group.flat};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    wait(this->group(group.flat.device())->broadcast(flat, options), what);
    unflatten(group);
  }
}

std::vector<std::string> Job::allgather(const std::string& mine, const std::string& what) {
  // Sizes first, then every rank's bytes padded to the longest.
  at::Tensor size = at::full({1}, static_cast<int64_t>(mine.size()), at::kLong);
  std::vector<std::vector<at::Tensor>> sizes(1);
  for (int r = 0; r < this->size(); ++r) sizes[0].push_back(at::empty({1}, at::kLong));
  std::vector<at::Tensor> input{size};
  wait(impl_->gloo->allgather(sizes, input), what);
  int64_t longest = 0;
  for (const auto& s : sizes[0]) longest = std::max(longest, s.item<int64_t>());
  at::Tensor bytes = at::zeros({std::max<int64_t>(1, longest)}, at::kByte);
  std::memcpy(bytes.data_ptr<uint8_t>(), mine.data(), mine.size());
  std::vector<std::vector<at::Tensor>> all(1);
  for (int r = 0; r < this->size(); ++r) all[0].push_back(at::empty_like(bytes));
  std::vector<at::Tensor> bytes_input{bytes};
  wait(impl_->gloo->allgather(all, bytes_input), what);
  std::vector<std::string> out;
  for (int r = 0; r < this->size(); ++r)
    out.emplace_back(reinterpret_cast<const char*>(all[0][r].data_ptr<uint8_t>()),
                     static_cast<size_t>(sizes[0][r].item<int64_t>()));
  return out;
}

void Job::barrier(const std::string& what) {
  at::Tensor token = at::zeros({1}, at::kInt);
  std::vector<at::Tensor> tensors{token};
  wait(impl_->gloo->allreduce(tensors), what);
}

void Job::start_stop_vote(bool wanted) {
  impl_->vote = at::full({1}, wanted ? 1 : 0, at::kInt);
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  std::vector<at::Tensor> tensors{impl_->vote};
  impl_->vote_work = impl_->gloo->allreduce(tensors, max);
}

bool Job::finish_stop_vote() {
  if (!impl_->vote_work) return false;
  wait(impl_->vote_work, "the stop vote");
  impl_->vote_work.reset();
  return impl_->vote.item<int>() > 0;
}

c10::intrusive_ptr<c10d::ProcessGroup> Job::group(const at::Device& device) {
  if (!device.is_cuda()) return impl_->gloo;
#ifdef FLOWRUN_WITH_NCCL
  if (info_.backend != "gloo") {
    if (!impl_->nccl)
      impl_->nccl = compat::make_nccl_group(c10::make_intrusive<c10d::PrefixStore>("flowrun/nccl", impl_->store),
                                            info_.rank, info_.world_size, to_ms(info_.timeout_s));
    return impl_->nccl;
  }
#endif
  return impl_->gloo;  // Gloo moves CUDA tensors too, through host memory
}

void Job::announce(const std::string& key) {
  impl_->store->set("flowrun/announce/" + key, std::vector<uint8_t>{1});
}

void Job::wait_for(const std::string& key, double timeout_s) {
  try {
    impl_->store->wait({"flowrun/announce/" + key}, to_ms(timeout_s));
  } catch (const std::exception& e) {
    fail("waiting for rank 0 (" + key + ")", reason(e));
  }
}

}  // namespace flowrun::stages

#else  // built without gloo's headers: a process alone works as ever, a job is refused

namespace flowrun::stages {

struct Job::Impl {};

Job* Job::of(const JobInfo& info) {
  if (!info.distributed()) return nullptr;
  throw std::runtime_error("rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) +
                           ": this flowrun was built without data-parallel jobs (CMake found no gloo headers: "
                           "install libgloo-dev and rebuild)");
}
Job::Job(const JobInfo& info) : info_(info) {}
Job::~Job() = default;
void Job::leave() {}
void Job::report_failure(const std::string&) {}
void Job::failed(const std::string&, const std::exception& cause) { throw std::runtime_error(cause.what()); }
[[noreturn]] static void unavailable() { throw std::logic_error("no data-parallel jobs in this build"); }
void Job::allreduce_sum(const std::vector<at::Tensor>&, const std::string&) { unavailable(); }
void Job::broadcast(const std::vector<at::Tensor>&, int, const std::string&) { unavailable(); }
std::vector<std::string> Job::allgather(const std::string&, const std::string&) { unavailable(); }
void Job::barrier(const std::string&) { unavailable(); }
void Job::start_stop_vote(bool) { unavailable(); }
bool Job::finish_stop_vote() { unavailable(); }
c10::intrusive_ptr<c10d::ProcessGroup> Job::group(const at::Device&) { unavailable(); }
void Job::announce(const std::string&) { unavailable(); }
void Job::wait_for(const std::string&, double) { unavailable(); }

}  // namespace flowrun::stages

#endif

namespace flowrun::stages {

std::string nccl_build_info() {
#ifdef FLOWRUN_WITH_NCCL
  return "NCCL " + c10d::getNcclVersion();
#else
  return "";
#endif
}

}  // namespace flowrun::stages

// A job of several flowrun processes training one model data-parallel, on
// PyTorch's own distributed engine, c10d (what DistributedDataParallel and
// torchrun stand on): the ranks meet through a c10d TCPStore that rank 0
// serves at MASTER_ADDR:MASTER_PORT, then exchange tensors through Gloo (CPU
// tensors, and the job's own small messages) or NCCL (CUDA tensors, in a
// build whose LibTorch has it). Every wait has the run's timeout
// (run.timeout); when a collective fails, the error names the rank that
// stopped answering: each rank keeps a heartbeat in the store, and a rank
// that fails leaves its reason there.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>

#include <memory>
#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace c10d {
class ProcessGroup;
class Work;
}

namespace flowrun::stages {

// The NCCL this build carries ("NCCL 2.28.9"), or "" in a build without it.
std::string nccl_build_info();

class Job {
 public:
  // The job this process belongs to, joined on first use (the rendezvous:
  // every rank must come); nullptr for a process alone. Throws with a clear
  // message when the ranks do not meet within the timeout.
  static Job* of(const JobInfo& info);

  int rank() const { return info_.rank; }
  int size() const { return info_.world_size; }
  const JobInfo& info() const { return info_; }

  // Collectives: every rank calls them in the same order. The tensors are
  // changed in place; any number, of any types and devices (they travel
  // flattened, one message per type and device). `what` names the exchange
  // in errors ("the evaluation sums").
  void allreduce_sum(const std::vector<at::Tensor>& tensors, const std::string& what);
  void broadcast(const std::vector<at::Tensor>& tensors, int root, const std::string& what);
  // Every rank's bytes, in rank order.
  std::vector<std::string> allgather(const std::string& mine, const std::string& what);
  void barrier(const std::string& what);

  // The stop vote of a training step: started with what this rank wants
  // before the step's work (it travels while the step computes), finished
  // after it: true when any rank wants to stop, on every rank alike.
  void start_stop_vote(bool wanted);
  bool finish_stop_vote();

  // The process group that carries tensors on `device` (for c10d's Reducer).
  c10::intrusive_ptr<c10d::ProcessGroup> group(const at::Device& device);

  // Rank 0 has done something the others wait for (made a file), by name.
  void announce(const std::string& key);
  void wait_for(const std::string& key, double timeout_s);

  // `what` failed with `cause` (a collective run on this rank's behalf, such
  // as the Reducer's during backward): throws an error naming the rank to blame.
  [[noreturn]] void failed(const std::string& what, const std::exception& cause);

  // Leaves the job: waits until every rank got here (so rank 0's store
  // outlives the others' last use), then closes the connections.
  static void leave();
  // Leaves this rank's reason for failing where the others look when their
  // collectives fail. Never throws.
  static void report_failure(const std::string& reason);

  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

 private:
  explicit Job(const JobInfo& info);
  struct Impl;
  // Waits for `work` (a collective), turning a failure into an error that
  // names the rank that stopped answering.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);
  [[noreturn]] void fail(const std::string& what, const std::string& cause);
  std::string diagnose();

  JobInfo info_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flowrun::stages

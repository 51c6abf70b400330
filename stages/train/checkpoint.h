// `checkpoint`: keeps the run's state so that a stopped run can go on to the
// same result as if it had never stopped. It writes one file (safetensors:
// each stateful stage's bytes as a uint8 tensor, the position and the graph in
// the metadata) every `every` epochs, when the run completes, and when it is
// interrupted (SIGINT/SIGTERM stop it at the next batch boundary). Written
// atomically: a crash mid-write leaves the previous checkpoint. `resume=PATH`
// takes a run up from such a file. It also keeps the per-epoch metrics
// history, so a resumed run's metrics files and plots are whole.
#pragma once

#include <memory>
#include <string>

#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "stages/report/metrics_log.h"

namespace flowrun::stages {

class Checkpoint : public ComponentStage, public StateKeeper {
 public:
  static Schema schema();
  explicit Checkpoint(const StageInit& init);

  std::optional<RunState> resume_state() override;
  void epoch_ended(const RunPosition& next, const StateCollector& collect) override;
  void run_stopped(const RunPosition& next, bool interrupted, const StateCollector& collect) override;
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;
  void report(Report& report) const override;

  const std::string& path() const { return path_; }

 private:
  void write(const RunState& state) const;

  std::string name_;
  std::string path_;
  std::string resume_;
  int64_t every_;
  int world_size_;  // a job's ranks; a checkpoint resumes with as many
  bool writes_;     // rank 0 of a job writes (every rank gathers the state: that takes collectives)
  mutable int64_t written_ = 0;
  std::shared_ptr<MetricsLog> metrics_;
};

// Reads a checkpoint file; throws std::runtime_error("PATH: what is wrong").
// `world_size`, when given, is what the file's writer ran with.
RunState read_checkpoint(const std::string& path, int* world_size = nullptr);
// Writes one, atomically.
void write_checkpoint(const std::string& path, const RunState& state, int world_size = 1);

}  // namespace flowrun::stages

// Per-epoch figures of a run (train loss, validation accuracy...), gathered
// from the stages that make them and written into the run directory after
// every epoch: metrics.csv, metrics.jsonl and plots of loss and accuracy
// (metrics.png, drawn with Cairo). Every file is rewritten whole, atomically.
// Each figure also goes to the run's TensorBoard file as the scalar
// epoch/FIGURE (stages/report/tensorboard_writer.h), flushed at every epoch.
// Shared by the stages of a run through Services ("metrics").
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/report/tensorboard_writer.h"

namespace flowrun::stages {

class MetricsLog {
 public:
  explicit MetricsLog(std::string run_dir) : run_dir_(std::move(run_dir)) {}
  // The run's log, made by the first stage that asks.
  static std::shared_ptr<MetricsLog> of(const StageInit& init);

  // Records figures of `epoch` and rewrites the files (when there is a run directory).
  void record(const EpochInfo& epoch, const std::map<std::string, double>& figures);
  // Every row so far as JSON, and back (a resumed run keeps its history).
  std::string to_json() const;
  void restore(const std::string& json);
  // The run stopped (a stage's on_stop): the TensorBoard session ends.
  void stopped(bool interrupted);

 private:
  void write() const;
  struct Row {
    int epoch = 0;
    std::string phase;
    std::map<std::string, double> figures;
  };
  std::string run_dir_;
  mutable std::mutex mutex_;
  std::vector<Row> rows_;
  std::shared_ptr<TensorBoardWriter> tensorboard_;  // null: none (no run directory, or not rank 0)
};

}  // namespace flowrun::stages

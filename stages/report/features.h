// `features`: the model's backbone features of every sample that reaches it
// (the end of a flow), for retrieval, clustering, a linear probe or a look
// at a dataset. Writes, when the run completes, one safetensors file —
// `features` [N, D] float32, `indices` [N] int64 (dataset index), `labels`
// [N] int64 (-1 when unknown) — and a CSV beside it (row, index, label,
// class, path), both atomically. Rows are spooled to temporaries beside the
// targets as batches arrive, so memory holds one batch whatever N. In a run
// of several epochs the files hold the last epoch's rows.
#pragma once

#include <cstdio>
#include <fstream>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/job.h"

namespace flowrun::stages {

class Features : public SerialStage {
 public:
  static Schema schema();
  explicit Features(const StageInit& init);
  ~Features() override;
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  void on_stop(bool interrupted) override;
  void report(Report& report) const override;

 private:
  void open_spools();
  void remove_spools();
  void write_outputs();

  const StageDirectory& stages_;
  std::string model_name_, path_, csv_path_, layer_, spool_;
  std::ofstream rows_, keys_, csv_;  // features, (index, label) pairs, CSV lines
  int64_t rows_written_ = 0, dim_ = 0;
  int64_t busy_ns_ = 0;
  ComputeThreads compute_;
  Job* job_;
};

}  // namespace flowrun::stages

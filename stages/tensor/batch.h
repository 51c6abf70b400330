// `batch`: collates normalized samples, in stream order, into Batch tensors
// of `size` (the last one smaller unless drop_last). Host memory is pinned
// when CUDA is available, so uploads can be asynchronous. Reports `images`,
// `batches` and `images_per_s` (from the first item to the end of the last
// epoch).
#pragma once

#include <vector>

#include "pipeline/stage.h"
#include "stages/tensor/batch_data.h"

namespace flowrun::stages {

class BatchStage : public SerialStage {
 public:
  static Schema schema();
  explicit BatchStage(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void end_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  void flush(const Emit& emit) override;
  void report(Report& report) const override;

 private:
  void emit_batch(const Emit& emit);

  int64_t size_;
  bool drop_last_;
  bool pin_;
  std::vector<Sample> pending_;
  int64_t number_ = 0;
  int64_t images_ = 0, batches_ = 0;
  int64_t first_ns_ = 0, last_ns_ = 0;
};

}  // namespace flowrun::stages

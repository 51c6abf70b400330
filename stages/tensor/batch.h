// `batch`: collates normalized samples, in stream order, into Batch tensors
// (writing the normalized values of samples whose conversion normalize left
// to it straight into the tensor, samples in parallel)
// of `size` (the last one smaller unless drop_last). Host memory is pinned
// when CUDA is available, so uploads can be asynchronous. Reports `images`,
// `batches` and `images_per_s` (from the first item to the end of the last
// epoch).
//
// In a flow that joins sources (`flow source + target -> ...`, see
// pipeline/graph.h) `size` counts each source's samples: a batch holds
// `size` of each, grouped by source in the flow's order (Batch::domain_counts),
// as a domain-adaptation step takes a source batch and a target batch.
#pragma once

#include <string>
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
  // The epoch's batch count (a resumed epoch numbers on from it).
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  void emit_batch(const Emit& emit);
  // A [n, c, h, w] float tensor: a free one from the pool when there is one.
  at::Tensor images_tensor(int64_t n, int64_t c, int64_t h, int64_t w);

  // Whether every source of the flow has `size` samples waiting (`complete`)
  // or at least one (a last, smaller batch).
  bool ready(bool complete) const;

  const StageDirectory& stages_;
  std::string name_;
  size_t sources_ = 1;          // of this stage's flow: 2 for `flow source + target -> ...`
  std::vector<int64_t> counts_;  // pending samples per source
  std::vector<uint32_t> origins_;  // the source of each pending sample
  int64_t size_;
  bool drop_last_;
  bool pin_;
  std::vector<Sample> pending_;
  // Batch tensors given out before; one is free again when nothing else
  // holds it. Reusing them saves the page faults of fresh 20 MB buffers.
  // Pinned memory is not pooled here: CUDA's caching host allocator already
  // pools it and knows when an asynchronous copy still reads it.
  std::vector<at::Tensor> pool_;
  size_t pool_size_;
  int64_t number_ = 0;
  int64_t images_ = 0, batches_ = 0;
  int64_t first_ns_ = 0, last_ns_ = 0;
};

}  // namespace flowrun::stages

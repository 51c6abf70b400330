// `to_device`: moves each batch to the compute device. With CUDA, copies run
// on a side stream without blocking (from pinned memory); on a CPU-only
// machine or build it passes batches through unchanged.
#pragma once

#include "pipeline/stage.h"

namespace flowrun::stages {

class ToDevice : public SerialStage {
 public:
  static Schema schema();
  explicit ToDevice(const StageInit& init);
  void process(Item& item, const Emit& emit) override;

 private:
  bool to_cuda_;
  int device_index_;
  bool non_blocking_;
};

}  // namespace flowrun::stages

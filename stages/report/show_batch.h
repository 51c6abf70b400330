// `show_batch`: writes one batch as a labelled image grid PNG (the recipe's
// show_batch), undoing the normalization for display. Batches pass through.
// With a run directory the grid also goes to its TensorBoard file (images/NAME).
#pragma once

#include <memory>

#include "pipeline/stage.h"
#include "stages/report/tensorboard_writer.h"

namespace flowrun::stages {

class ShowBatch : public SerialStage {
 public:
  static Schema schema();
  explicit ShowBatch(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override { epoch_ = epoch.epoch; }
  void process(Item& item, const Emit& emit) override;
  void on_stop(bool interrupted) override {
    if (tensorboard_) tensorboard_->session_end(!interrupted);
  }
  void report(Report& report) const override;

 private:
  std::string name_, path_;
  int64_t columns_, max_images_, epoch_wanted_, batch_wanted_, tile_px_;
  int epoch_ = 0;
  bool written_ = false;
  bool writes_;  // rank 0 of a job writes; the others pass batches on
  std::shared_ptr<TensorBoardWriter> tensorboard_;  // the grid as image images/NAME; null: none
};

}  // namespace flowrun::stages

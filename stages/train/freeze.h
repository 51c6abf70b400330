// `freeze`: which parts of the model train, by the model's blocks (a
// ResNet's: stem, layer1..layer4, fc). mode=none (all), backbone (only the
// head), until (the blocks up to and including `until`); `unfreeze_every=N`
// then unfreezes one more block from the top every N epochs of the phase
// (gradual unfreezing). Frozen parameters get no gradient and no update;
// BatchNorm layers in frozen parts stay in eval mode (their running
// statistics unchanged) unless train_bn=true; bn_eval=true puts every
// BatchNorm layer in eval mode.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/model/network.h"

namespace flowrun::stages {

class Freeze : public ComponentStage {
 public:
  static Schema schema();
  explicit Freeze(const StageInit& init);
  // Sets requires_grad for epoch `epoch_in_phase`; returns the frozen blocks.
  std::vector<std::string> apply(NetworkImpl& model, int epoch_in_phase) const;
  // After model.train(): frozen blocks' BatchNorm layers back to eval mode.
  void set_modes(NetworkImpl& model, int epoch_in_phase) const;

 private:
  std::vector<std::string> frozen_blocks(const NetworkImpl& model, int epoch_in_phase) const;
  std::string mode_, until_;
  int64_t unfreeze_every_;
  bool train_bn_;
  bool bn_eval_;  // every BatchNorm layer in eval mode
};

}  // namespace flowrun::stages

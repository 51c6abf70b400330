// The loss a train stage minimises, as a component another stage can
// provide. Without one, train uses cross-entropy (with its own
// label_smoothing). A plugin's loss (focal loss, a class-weighted one...)
// derives from LossStage, declares `.provides("loss")` in its schema, and a
// graph names it: `train = train ... loss=focal`.
#pragma once

#include <torch/torch.h>

#include "pipeline/stage.h"

namespace flowrun::stages {

class LossStage : public ComponentStage {
 public:
  // The mean loss of a batch, differentiable: `logits` [N, classes] as the
  // model returns them (bf16 under autocast), `labels` [N] int64 class
  // indices, both on the model's device.
  virtual torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) = 0;
};

}  // namespace flowrun::stages

// Feature-level domain adaptation as a component the train stage names
// (`train = train ... adaptation=dann`): in a flow that joins a labelled
// source and an unlabelled target (`flow source + target -> ... -> train`),
// each step forwards both domains' images through the model, takes the
// cross-entropy on the source's logits alone, and adds this stage's loss on
// the backbone's pooled features of both. A method with parameters of its own
// (DANN's domain classifier) hands them to the train stage, which puts them in
// its optimizer beside the head's, at the head's learning rate.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun::stages {

class AdaptationStage : public ComponentStage {
 public:
  // The adaptation loss of one step (a differentiable scalar, weight
  // included), to add to the source's classification loss. `source`
  // [Ns, D] and `target` [Nt, D]: the pooled backbone features of the
  // batch's two domains, on the model's device, float32, called with
  // autocast off (the train stage ends it first, whatever the precision).
  // `progress` in [0, 1]: how far the phase's training is (step / steps).
  virtual torch::Tensor loss(const torch::Tensor& source, const torch::Tensor& target, double progress) = 0;
  // Called before the train stage builds its optimizer: the features'
  // width D and the model's device. Returns the module whose parameters
  // train with the model (null for a loss without parameters); in a job of
  // several processes its gradients are averaged as the model's are.
  virtual std::shared_ptr<torch::nn::Module> prepare(int64_t feature_size, const torch::Device& device) {
    return nullptr;
  }
  // The epoch's figures so far (NAME_loss...), summed over the steps since
  // begin_epoch; read once an epoch (they synchronise with the device).
  virtual std::map<std::string, double> epoch_figures() const = 0;
};

}  // namespace flowrun::stages

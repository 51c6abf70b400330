// The loss a train stage minimises, as a component another stage can
// provide. Without one, train uses cross-entropy (with its own
// label_smoothing). A plugin's loss (focal loss, a class-weighted one...)
// derives from LossStage, declares `.provides("loss")` in its schema, and a
// graph names it: `train = train ... loss=focal`.
//
// Most losses need the logits and labels alone and override
// loss(logits, labels). A loss that needs more of the batch (knowledge
// distillation: the images, to run a teacher on them; the dataset indices,
// to cache what it computed per sample; the student's pooled features)
// overrides batch_loss(LossContext) instead, and wants_features() when it
// reads LossContext::features. Part of the stage API (<flowrun/model.h>):
// FLOWRUN_STAGE_API_VERSION 3 since LossContext.
#pragma once

#include <torch/torch.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun::stages {

class ModelStage;

// What the train stage knows of one step, for the loss. Only the labelled
// samples are in it (in a flow joining a target, the source's alone).
struct LossContext {
  torch::Tensor logits;   // [N, classes], as the model returns them (bf16 under autocast)
  torch::Tensor labels;   // [N] int64 class indices (the model's outputs)
  torch::Tensor images;   // [N, C, H, W] as the model takes them: its device, its memory layout
  const std::vector<int64_t>* indices = nullptr;  // the N samples' dataset indices
  // [N, D] the student's pooled backbone features (what its head sees),
  // differentiable; defined only when the loss's wants_features() is true.
  torch::Tensor features;
  ModelStage* model = nullptr;  // the model being trained (the student)
  double progress = 0;          // how far the phase's training is, in [0, 1]
};

// Told at the start of every phase the train stage trains with this loss.
struct LossPhase {
  std::string train;   // the train stage's name
  std::string phase;   // the phase's name
  int64_t epochs = 1;  // the phase's epochs
  ModelStage* model = nullptr;  // the model it trains
  // Nothing before the train stage draws random numbers: a sample's images
  // are the same in every epoch of the phase, so what a loss computes from
  // them alone can be kept by dataset index. `why` says why (not).
  bool inputs_repeat = false;
  std::string why;
};

class LossStage : public ComponentStage {
 public:
  // The mean loss of a batch, differentiable: `logits` [N, classes] as the
  // model returns them (bf16 under autocast), `labels` [N] int64 class
  // indices, both on the model's device.
  virtual torch::Tensor loss(const torch::Tensor& /*logits*/, const torch::Tensor& /*labels*/) {
    throw std::runtime_error("this loss stage overrides neither loss(logits, labels) nor batch_loss(context)");
  }
  // The mean loss of a batch from everything the train stage knows of it
  // (what it calls); by default loss(logits, labels).
  virtual torch::Tensor batch_loss(const LossContext& batch) { return loss(batch.logits, batch.labels); }
  // Whether batch_loss reads LossContext::features: the train stage then
  // runs the model as head(features(images)) (the same logits).
  virtual bool wants_features() const { return false; }
  // A phase starts (before its first step): see LossPhase.
  virtual void begin_phase(const LossPhase& /*phase*/) {}
  // The epoch's figures so far (kd_loss...), for the epoch line, the
  // metrics and the summary; read once an epoch (they may synchronise with
  // the device).
  virtual std::map<std::string, double> epoch_figures() const { return {}; }
};

}  // namespace flowrun::stages

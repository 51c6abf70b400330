// `model`: a ResNet (18/34/50/101) with torchvision's names, its head sized
// to `classes`, and weights from a torchvision .pth or a safetensors file.
// Loading is strict: a missing, unexpected or mis-shaped key is an error
// naming the key — except the head (fc.*) when its size differs from
// `classes`, which is re-initialised and reported. A component: training,
// evaluation and prediction stages find it by name.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/model/resnet.h"
#include "stages/model/weights.h"

namespace flowrun::stages {

struct LoadReport {
  size_t loaded = 0;
  std::vector<std::string> reinitialised;  // head keys replaced because the class count differs
};

// Copies `weights` into `model` (strict; see above). `allow_new_head` lets
// fc.* differ in shape (then the head keeps its fresh initialisation).
LoadReport load_state_dict(torch::nn::Module& model, const StateDict& weights, bool allow_new_head,
                           const std::string& source);

// The module's parameters and buffers by torchvision key, in module order.
StateDict state_dict(const torch::nn::Module& model);

class ModelStage : public ComponentStage {
 public:
  static Schema schema();
  explicit ModelStage(const StageInit& init);
  void report(Report& report) const override;

  ResNet& net() { return net_; }
  int64_t classes() const { return classes_; }

 private:
  ResNet net_{nullptr};
  int64_t classes_;
  LoadReport load_;
  std::string weights_;
};

// The model stage named `name` in the current phase; throws when missing.
ModelStage& find_model(const StageDirectory& stages, const std::string& name);

}  // namespace flowrun::stages

// `model`: a ResNet (18/34/50/101) with torchvision's names, its head sized
// to `classes`, and weights from a torchvision .pth or a safetensors file.
// Loading is strict: a missing, unexpected or mis-shaped key is an error
// naming the key — except the head (fc.*) when its size differs from
// `classes`, which is re-initialised and reported. A component: training,
// evaluation and prediction stages find it by name. On a GPU it lives on the
// device in channels_last layout with cuDNN autotuning, and runs its forward
// passes in bf16 autocast (`precision=auto`).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/model/precision.h"
#include "stages/model/resnet.h"
#include "stages/model/weights.h"

namespace flowrun::stages {

struct Batch;
struct DatasetInfo;

struct LoadReport {
  size_t loaded = 0;
  std::vector<std::string> reinitialised;  // head keys replaced because the class count differs
  std::vector<std::string> notes;          // what was done to fit: a prefix stripped, counters filled
};

// Copies `weights` into `model` (strict; see above). `allow_new_head` lets
// fc.* differ in shape (then the head keeps its fresh initialisation).
LoadReport load_state_dict(NetworkImpl& model, const StateDict& weights, bool allow_new_head,
                           const std::string& source);

// The module's parameters and buffers by torchvision key, in module order.
StateDict state_dict(const torch::nn::Module& model);

class ModelStage : public ComponentStage {
 public:
  // The built-in `resnet` stage.
  static Schema schema();
  explicit ModelStage(const StageInit& init);
  // The parameters every model stage has (classes, weights, pretrain,
  // device, index, precision, channels_last): a plugin's model stage starts
  // its schema with these and adds its own.
  static Schema common_schema(std::string type, std::string doc);
  // Makes the network for `classes` outputs (called once, after seeding
  // LibTorch's generator from the run seed and the stage's name).
  using Builder = std::function<Network(int64_t classes)>;
  void report(Report& report) const override;
  // The weights and BatchNorm statistics, as safetensors bytes.
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

  Network& net() { return net_; }
  int64_t classes() const { return classes_; }
  const torch::Device& device() const { return device_; }
  // Whether forward passes run in bf16 autocast, and on which device (true
  // when bf16: see precision.h). What AutocastScope takes.
  Autocast bf16() const { return bf16_; }
  // A batch's images as the model wants them: on its device (a copy only
  // when to_device did not already put them there), in its memory layout.
  torch::Tensor input(const torch::Tensor& images) const;
  torch::Tensor labels(const torch::Tensor& labels) const;
  // Classes are names, not positions: a batch's labels (positions in its
  // source's class list) as the model's outputs, matched by name, on the
  // model's device. A source may lack some of the model's classes; one with
  // a class the model does not know is an error listing both lists, and so
  // is, for a model without names, a source with another number of classes.
  // `training`: a training source names the model's classes when it has
  // none yet (or another set of them: a new task).
  torch::Tensor labels(const Batch& batch, bool training = false);
  // The class of each output, from the weights' metadata or the source that
  // trained the model; empty when unknown (then outputs are positions).
  std::vector<std::string> class_names() const;
  // Output `c` by name: the model's class, else the batch source's (same
  // positions, checked by labels()), else its number.
  std::string output_name(int64_t c, const Batch& batch) const;
  // The weights' metadata a file or checkpoint keeps: "classes", a JSON list.
  Metadata class_metadata() const;
  // A batch's logits, or its features at `layer` (NetworkImpl::features), as
  // evaluation, prediction and export need them: eval mode, no gradients,
  // the stage's precision, float32 out.
  torch::Tensor infer_logits(const torch::Tensor& images);
  torch::Tensor infer_features(const torch::Tensor& images, const std::string& layer);

 protected:
  // A model stage of another architecture: ModelStage(init, its builder);
  // loading weights, devices, precision and jobs work as for ResNet.
  ModelStage(const StageInit& init, const Builder& build);

 private:
  torch::Tensor infer(const std::function<torch::Tensor(NetworkImpl&, const torch::Tensor&)>& run,
                      const torch::Tensor& images);
  // The source's position -> the model's output, per source class list.
  const std::vector<int64_t>& mapping(const DatasetInfo& dataset, bool training);
  Network net_{nullptr};
  int64_t classes_;
  mutable std::mutex names_mutex_;
  std::vector<std::string> class_names_;  // guarded by names_mutex_
  std::map<std::vector<std::string>, std::vector<int64_t>> mappings_;  // guarded by names_mutex_
  LoadReport load_;
  std::string weights_;
  std::string name_;
  torch::Device device_{torch::kCPU};
  Autocast bf16_;
  bool channels_last_ = false;
};

// A c10::Error's message without LibTorch's C++ stack trace (its first
// line); "" for other exceptions. Installed as the engine's error-text hook.
std::string libtorch_error_text(const std::exception& e);

// The model stage named `name` in the current phase; throws when missing.
ModelStage& find_model(const StageDirectory& stages, const std::string& name);

}  // namespace flowrun::stages

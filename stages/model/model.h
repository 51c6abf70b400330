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
#include <set>
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
  // A multi-task model's extra heads (`tasks=[group] task_classes=[3]`): a
  // Linear layer each on the backbone's pooled features, beside the
  // network's own head (the main task, `classes`), keys heads.TASK.weight
  // and heads.TASK.bias. Saved, loaded, frozen and given learning rates as
  // the head is (NetworkImpl::block).
  struct TaskHead {
    std::string name;
    int64_t classes = 0;
    torch::nn::Linear linear{nullptr};
  };
  const std::vector<TaskHead>& task_heads() const { return heads_; }
  // The logits [N, classes] of extra head `head` from features [N, D].
  torch::Tensor task_logits(size_t head, const torch::Tensor& features) { return heads_.at(head).linear(features); }
  // The batch's labels for extra head `head` ([N] int64 on the model's
  // device, -1 where a sample has none), matched by name as labels() does
  // for the classes. Throws when the batch has no labels for the task,
  // naming the tasks it has.
  torch::Tensor task_labels(const Batch& batch, size_t head, bool training = false);
  // Whether the batch's source labels task `task`.
  static bool has_task(const Batch& batch, const std::string& task);
  // The classes of extra head `head`, like class_names().
  std::vector<std::string> task_class_names(size_t head) const;
  std::string task_output_name(size_t head, int64_t c, const Batch& batch) const;
  // The width D of the features the head takes (its Linear's in_features).
  int64_t feature_size() const;
  // Every head's logits for a batch, the main head's first: eval mode, no
  // gradients, the stage's precision, float32 out; one backbone pass.
  std::vector<torch::Tensor> infer_all_logits(const torch::Tensor& images);
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
  // Class names and the mappings to them of one head (the classes, or a task).
  struct OutputNames {
    std::vector<std::string> class_names;
    std::map<std::vector<std::string>, std::vector<int64_t>> mappings;
  };
  // The source's position -> the head's output, per source class list.
  const std::vector<int64_t>& mapping(OutputNames& names, int64_t classes, const std::string& head,
                                      const std::vector<std::string>& source, const std::string& dataset, bool training);
  torch::Tensor map_labels(const torch::Tensor& labels, const std::vector<int64_t>& map) const;
  // The weights' metadata "tasks" ({"TASK": [names]}) into the heads' names.
  void read_task_names(const Metadata& metadata, const std::string& source);
  Network net_{nullptr};
  int64_t classes_;
  mutable std::mutex names_mutex_;
  OutputNames outputs_;                 // the classes'; guarded by names_mutex_
  std::vector<TaskHead> heads_;
  std::vector<OutputNames> head_outputs_;  // per extra head; guarded by names_mutex_
  std::set<std::string> warned_small_tasks_;  // heads larger than their training task, said once; guarded by names_mutex_
  LoadReport load_;
  std::vector<std::string> new_task_heads_;  // extra heads the weights file had none of (of that size)
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

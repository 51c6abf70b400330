// What a model stage holds: a torch module that classifies, seen through
// the few things the training stages need of any architecture. ResNet is
// the built-in one; a plugin brings another by deriving a model stage from
// ModelStage with a builder of its own (see model.h and plugins/small_cnn/).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace flowrun::stages {

struct NetworkImpl : torch::nn::Module {
  // Logits [N, classes].
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // The backbone's output [N, D]: "avgpool" (the default) is what the head
  // sees; another of layers() is that layer's output, globally pooled.
  virtual torch::Tensor features(torch::Tensor x, const std::string& layer = "avgpool") = 0;
  // Logits from features(x): forward(x) == head(features(x)).
  virtual torch::Tensor head(torch::Tensor features) = 0;
  // Replaces the head with a freshly initialised one of `classes` outputs.
  virtual void replace_head(int64_t classes) = 0;
  // The blocks freezing and discriminative learning rates name, from the
  // input up; the head is the last.
  virtual std::vector<std::string> blocks() const = 0;
  // The block a parameter or buffer key ("layer1.0.conv1.weight") belongs to.
  virtual std::string block_of(const std::string& key) const = 0;
  // The feature layers features() accepts besides "avgpool".
  virtual std::vector<std::string> layers() const { return {}; }

  // block_of(key), with a multi-task model's extra heads (keys "heads.TASK.*",
  // which the model stage adds beside the network's own) in the head's block:
  // what freezing and discriminative rates go by.
  std::string block(const std::string& key) const {
    return key.rfind("heads.", 0) == 0 ? blocks().back() : block_of(key);
  }
  bool is_head(const std::string& key) const { return block(key) == blocks().back(); }
};

// A holder, as TORCH_MODULE makes them: net->forward(x), *net, net.ptr().
class Network : public torch::nn::ModuleHolder<NetworkImpl> {
 public:
  Network(std::nullptr_t) : ModuleHolder(nullptr) {}
  template <class T, std::enable_if_t<std::is_base_of_v<NetworkImpl, T>, int> = 0>
  Network(std::shared_ptr<T> module) : ModuleHolder(std::shared_ptr<NetworkImpl>(std::move(module))) {}
};

}  // namespace flowrun::stages

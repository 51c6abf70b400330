// ResNet-18/34/50/101 with torchvision's module names and tensor keys
// (`conv1.weight`, `layer1.0.downsample.1.running_var`, ... : 320 keys for
// ResNet-50), so torchvision's published weights load key for key.
#pragma once

#include <torch/torch.h>

#include <string>

#include "stages/model/network.h"

namespace flowrun::stages {

struct BasicBlockImpl : torch::nn::Module {
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, bool downsample);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
  static constexpr int64_t expansion = 1;
};
TORCH_MODULE(BasicBlock);

struct BottleneckImpl : torch::nn::Module {
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, bool downsample);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
  static constexpr int64_t expansion = 4;
};
TORCH_MODULE(Bottleneck);

struct ResNetImpl : NetworkImpl {
  // depth: 18, 34, 50 or 101; classes: the size of the head (fc).
  ResNetImpl(int depth, int64_t classes);
  torch::Tensor forward(torch::Tensor x) override;
  // The backbone's output for `x` [N, D]: up to `layer` ("stem", "layer1"
  // ... "layer4"), globally average-pooled; "avgpool" (the default) is what
  // fc sees, as torchvision's nn.Sequential(*list(model.children())[:-1]).
  torch::Tensor features(torch::Tensor x, const std::string& layer = "avgpool") override;
  torch::Tensor head(torch::Tensor features) override { return fc(features); }
  void replace_head(int64_t classes) override;
  // stem (conv1, bn1), layer1 .. layer4, fc.
  std::vector<std::string> blocks() const override;
  std::string block_of(const std::string& key) const override;
  std::vector<std::string> layers() const override { return {"stem", "layer1", "layer2", "layer3", "layer4"}; }
  int depth() const { return depth_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  int depth_;
  int64_t features_ = 0;
};
TORCH_MODULE(ResNet);

}  // namespace flowrun::stages

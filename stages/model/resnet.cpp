#include "stages/model/resnet.h"

#include <stdexcept>

namespace flowrun::stages {

namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
}

nn::Sequential downsampler(int64_t in, int64_t out, int64_t stride) {
  // Parameter-bearing modules only, so the keys are downsample.0.* and downsample.1.*.
  return nn::Sequential(conv(in, out, 1, stride, 0), nn::BatchNorm2d(out));
}

// torchvision's initialisation: Kaiming (fan_out) convolutions, BatchNorm 1/0.
void init_weights(nn::Module& module) {
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* c = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* b = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(b->weight);
      nn::init::zeros_(b->bias);
    }
  }
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t planes, int64_t stride, bool with_downsample) {
  conv1 = register_module("conv1", conv(in, planes, 3, stride, 1));
  bn1 = register_module("bn1", nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1));
  bn2 = register_module("bn2", nn::BatchNorm2d(planes));
  if (with_downsample) downsample = register_module("downsample", downsampler(in, planes, stride));
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  torch::Tensor identity = downsample ? downsample->forward(x) : x;
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  out = bn2(conv2(out));
  return torch::relu(out + identity);
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride, bool with_downsample) {
  conv1 = register_module("conv1", conv(in, planes, 1, 1, 0));
  bn1 = register_module("bn1", nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1));  // stride on the 3x3, as torchvision (v1.5)
  bn2 = register_module("bn2", nn::BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, planes * expansion, 1, 1, 0));
  bn3 = register_module("bn3", nn::BatchNorm2d(planes * expansion));
  if (with_downsample) downsample = register_module("downsample", downsampler(in, planes * expansion, stride));
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  torch::Tensor identity = downsample ? downsample->forward(x) : x;
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  out = torch::relu(bn2(conv2(out)));
  out = bn3(conv3(out));
  return torch::relu(out + identity);
}

namespace {
template <class Block>
nn::Sequential make_layer(int64_t& in, int64_t planes, int blocks, int64_t stride) {
  nn::Sequential layer;
  bool downsample = stride != 1 || in != planes * Block::Impl::expansion;
  layer->push_back(Block(in, planes, stride, downsample));
  in = planes * Block::Impl::expansion;
  for (int i = 1; i < blocks; ++i) layer->push_back(Block(in, planes, 1, false));
  return layer;
}
}  // namespace

ResNetImpl::ResNetImpl(int depth, int64_t classes) : depth_(depth) {
  int blocks[4];
  bool bottleneck = depth >= 50;
  switch (depth) {
    case 18: blocks[0] = 2, blocks[1] = 2, blocks[2] = 2, blocks[3] = 2; break;
    case 34: blocks[0] = 3, blocks[1] = 4, blocks[2] = 6, blocks[3] = 3; break;
    case 50: blocks[0] = 3, blocks[1] = 4, blocks[2] = 6, blocks[3] = 3; break;
    case 101: blocks[0] = 3, blocks[1] = 4, blocks[2] = 23, blocks[3] = 3; break;
    default: throw std::runtime_error("ResNet depth must be 18, 34, 50 or 101 (got " + std::to_string(depth) + ")");
  }
  conv1 = register_module("conv1", conv(3, 64, 7, 2, 3));
  bn1 = register_module("bn1", nn::BatchNorm2d(64));
  int64_t in = 64;
  auto layer = [&](int64_t planes, int count, int64_t stride) {
    return bottleneck ? make_layer<Bottleneck>(in, planes, count, stride) : make_layer<BasicBlock>(in, planes, count, stride);
  };
  layer1 = register_module("layer1", layer(64, blocks[0], 1));
  layer2 = register_module("layer2", layer(128, blocks[1], 2));
  layer3 = register_module("layer3", layer(256, blocks[2], 2));
  layer4 = register_module("layer4", layer(512, blocks[3], 2));
  features_ = in;
  fc = register_module("fc", nn::Linear(features_, classes));
  init_weights(*this);
}

void ResNetImpl::replace_head(int64_t classes) {
  fc = replace_module("fc", nn::Linear(features_, classes));
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) { return fc(features(x)); }

std::vector<std::string> ResNetImpl::blocks() const { return {"stem", "layer1", "layer2", "layer3", "layer4", "fc"}; }

std::string ResNetImpl::block_of(const std::string& key) const {
  if (key.rfind("conv1", 0) == 0 || key.rfind("bn1", 0) == 0) return "stem";
  return key.substr(0, key.find('.'));
}

torch::Tensor ResNetImpl::features(torch::Tensor x, const std::string& layer) {
  x = torch::relu(bn1(conv1(x)));
  x = torch::max_pool2d(x, 3, 2, 1);
  if (layer != "stem") {
    x = layer1->forward(x);
    if (layer != "layer1") {
      x = layer2->forward(x);
      if (layer != "layer2") {
        x = layer3->forward(x);
        if (layer != "layer3") x = layer4->forward(x);
      }
    }
  }
  return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
}

}  // namespace flowrun::stages

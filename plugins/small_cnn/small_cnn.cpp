// `small_cnn`: a model stage of another architecture, as a plugin — a
// MobileNet-style network (a 3x3 stem, then `stages` blocks of a depthwise
// 3x3 convolution with stride 2 and a pointwise 1x1 one doubling the
// channels, each followed by BatchNorm and ReLU; global average pooling; a
// linear head), for small images and fast experiments. Everything model
// stages do works for it: weights from safetensors, the head re-initialised
// for other classes, freeze (its blocks: stem, stage1.., fc), discriminative
// learning rates, precomputed features, the features stage, jobs.
//     plugin "libflowrun_small_cnn.so"
//     model = small_cnn classes=10 stages=3 width=32
#include <flowrun/model.h>

#include <string>
#include <vector>

namespace {

namespace nn = torch::nn;
using flowrun::stages::Network;

nn::Sequential conv_bn_relu(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups) {
  return nn::Sequential(
      nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).groups(groups).bias(false)),
      nn::BatchNorm2d(out), nn::ReLU());
}

struct SmallCnnImpl : flowrun::stages::NetworkImpl {
  SmallCnnImpl(int64_t stages, int64_t width, int64_t classes) {
    stem = register_module("stem", conv_bn_relu(3, width, 3, 1, 1));
    int64_t channels = width;
    for (int64_t s = 1; s <= stages; ++s) {
      nn::Sequential block = conv_bn_relu(channels, channels, 3, 2, channels);  // depthwise, then pointwise
      nn::Sequential pointwise = conv_bn_relu(channels, channels * 2, 1, 1, 1);
      for (const auto& layer : *pointwise) block->push_back(layer);
      channels *= 2;
      stage_names.push_back("stage" + std::to_string(s));
      body.push_back(register_module(stage_names.back(), block));
    }
    features_ = channels;
    fc = register_module("fc", nn::Linear(channels, classes));
  }

  torch::Tensor forward(torch::Tensor x) override { return head(features(x)); }
  torch::Tensor features(torch::Tensor x, const std::string& layer = "avgpool") override {
    x = stem->forward(x);
    for (size_t s = 0; s < body.size() && layer != "stem"; ++s) {
      x = body[s]->forward(x);
      if (layer == stage_names[s]) break;
    }
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }
  torch::Tensor head(torch::Tensor features) override { return fc(features); }
  void replace_head(int64_t classes) override { fc = replace_module("fc", nn::Linear(features_, classes)); }
  std::vector<std::string> blocks() const override {
    std::vector<std::string> names = {"stem"};
    names.insert(names.end(), stage_names.begin(), stage_names.end());
    names.push_back("fc");
    return names;
  }
  std::string block_of(const std::string& key) const override { return key.substr(0, key.find('.')); }
  std::vector<std::string> layers() const override {
    std::vector<std::string> names = blocks();
    names.pop_back();
    return names;
  }

  nn::Sequential stem{nullptr};
  std::vector<nn::Sequential> body;
  std::vector<std::string> stage_names;
  nn::Linear fc{nullptr};
  int64_t features_ = 0;
};

class SmallCnn : public flowrun::stages::ModelStage {
 public:
  static flowrun::Schema schema() {
    return common_schema("small_cnn", "a MobileNet-style CNN: stem, depthwise-separable stages, linear head (plugin)")
        .param(flowrun::Int("stages", "depthwise-separable stages, each halving the size").def(int64_t{3}).range(1, 8))
        .param(flowrun::Int("width", "channels of the stem (doubled by every stage)").def(int64_t{32}).range(4, 1024));
  }
  explicit SmallCnn(const flowrun::StageInit& init)
      : ModelStage(init, [stages = init.params.get_int("stages"), width = init.params.get_int("width")](int64_t classes) {
          return Network(std::make_shared<SmallCnnImpl>(stages, width, classes));
        }) {}
};

}  // namespace

FLOWRUN_PLUGIN("small_cnn") { registry.add<SmallCnn>(); }

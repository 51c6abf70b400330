#include "stages/adapt/adabn.h"

#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"

namespace flowrun::stages {

namespace {
// Every BatchNorm layer of `net`, in module order.
template <class F>
int for_each_batchnorm(torch::nn::Module& net, F&& f) {
  int count = 0;
  for (const auto& module : net.modules(/*include_self=*/false)) {
    if (auto* bn = module->as<torch::nn::BatchNorm1d>()) f(*bn, module), ++count;
    else if (auto* bn2 = module->as<torch::nn::BatchNorm2d>()) f(*bn2, module), ++count;
    else if (auto* bn3 = module->as<torch::nn::BatchNorm3d>()) f(*bn3, module), ++count;
  }
  return count;
}
}  // namespace

Schema AdaBN::schema() {
  return Schema("adabn", "AdaBN (Li et al. 2016): re-estimates every BatchNorm's statistics on the target images of "
                         "its flow (cumulative average over the pass, no gradients); optionally on a copy of another model")
      .param(StageRef("model", "the model whose BatchNorm statistics are re-estimated", "model"))
      .param(String("from", "copy this model stage's weights into `model` first (\"\" = re-estimate `model` itself)")
                 .def(std::string("")));
}

AdaBN::AdaBN(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      from_name_(init.params.get_string("from")) {
  if (from_name_ == model_name_) throw std::runtime_error("from='" + from_name_ + "' is `model` itself; leave it \"\"");
}

void AdaBN::begin_epoch(const EpochInfo&) {
  model_ = &find_model(stages_, model_name_);
  if (!from_name_.empty()) find_model(stages_, from_name_);  // a typo fails now, not at the first batch
  started_ = false;
  images_ = 0;
}

void AdaBN::start() {
  torch::nn::Module& net = *model_->net();
  if (!started_) {
    if (!from_name_.empty()) {
      std::string bytes;
      find_model(stages_, from_name_).save_state(bytes);
      model_->load_state(bytes);
    }
    const int layers = for_each_batchnorm(net, [](auto& bn, const auto&) {
      if (!bn.options.track_running_stats())
        throw std::runtime_error("a BatchNorm layer keeps no running statistics (track_running_stats=false)");
      bn.reset_running_stats();
    });
    if (layers == 0) throw std::runtime_error("model '" + model_name_ + "' has no BatchNorm layer to adapt");
    started_ = true;
  }
  momenta_.clear();
  for_each_batchnorm(net, [&](auto& bn, const auto&) {
    momenta_.push_back(bn.options.momentum().value_or(0.1));
    bn.options.momentum(c10::nullopt);  // 1 / batches so far: an equal-weight average of the pass's batches
  });
  averaging_ = true;
}

void AdaBN::restore() {
  if (!averaging_) return;
  size_t i = 0;
  for_each_batchnorm(*model_->net(), [&](auto& bn, const auto&) { bn.options.momentum(momenta_.at(i++)); });
  averaging_ = false;
}

void AdaBN::process(Item& item, const Emit& emit) {
  const Batch& batch = item.get<Batch>();
  batch.require_one_source("adabn");
  if (!averaging_) start();
  Network& net = model_->net();
  // Other layers in eval mode (dropout off); BatchNorm in train mode: it
  // normalises with the batch's statistics and averages them in.
  net->eval();
  for_each_batchnorm(*net, [](auto&, const auto& module) { module->train(); });
  {
    torch::NoGradGuard no_grad;
    net->forward(model_->input(batch.images));
  }
  net->eval();
  images_ += batch.size();
  emit(item);
}

void AdaBN::flush(const Emit&) {
  restore();
  if (images_) last_images_ = images_;
}

bool AdaBN::save_state(std::string& out) const {
  out = std::string(started_ ? "1 " : "0 ") + std::to_string(images_);
  return true;
}

void AdaBN::load_state(const std::string& in) {
  long long images = 0;
  int started = 0;
  if (std::sscanf(in.c_str(), "%d %lld", &started, &images) != 2)
    throw std::runtime_error("saved state '" + in + "' of adabn '" + name_ + "' is not 'STARTED IMAGES'");
  restore();
  started_ = started != 0;
  images_ = images;
}

void AdaBN::report(Report& report) const { report.set("adabn_images", static_cast<double>(last_images_)); }

FLOWRUN_REGISTER_STAGE(AdaBN);

}  // namespace flowrun::stages

#include "stages/train/train.h"

#include <cstdio>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/freeze.h"
#include "stages/train/schedule.h"

namespace flowrun::stages {

Schema Train::schema() {
  return Schema("train", "trains the model on each batch: cross-entropy on logits, optimizer and schedule per batch")
      .param(String("model", "the model stage").def(std::string("model")))
      .param(String("optimizer", "the optimizer stage").def(std::string("optim")))
      .param(String("scheduler", "the schedule stage; \"\" = constant").def(std::string("sched")))
      .param(String("freezer", "the freeze stage; \"\" = all trainable").def(std::string("freezer")))
      .param(Float("label_smoothing", "cross-entropy label smoothing").def(0.0).range(0, 1));
}

Train::Train(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      optimizer_name_(init.params.get_string("optimizer")),
      schedule_name_(init.params.get_string("scheduler")),
      freezer_name_(init.params.get_string("freezer")),
      label_smoothing_(init.params.get_float("label_smoothing")),
      metrics_(MetricsLog::of(init)) {}

void Train::begin_epoch(const EpochInfo& epoch) {
  epoch_ = epoch;
  prepared_ = false;
  model_ = &find_model(stages_, model_name_);
  optimizer_stage_ = &find_optimizer(stages_, optimizer_name_);
  schedule_ = find_schedule(stages_, schedule_name_);
  freezer_ = freezer_name_.empty() ? nullptr : &stages_.require<Freeze>(freezer_name_, "freeze");
  loss_sum_ = torch::zeros({}, torch::kDouble);
  correct_ = torch::zeros({}, torch::kLong);
  seen_ = 0;
}

void Train::prepare(int64_t batches_in_epoch) {
  ResNet& net = model_->net();
  net->train();
  std::vector<std::string> frozen;
  if (freezer_) {
    frozen = freezer_->apply(*net, epoch_.epoch_in_phase);
    freezer_->set_modes(*net, epoch_.epoch_in_phase);
  } else {
    for (auto& p : net->parameters()) p.set_requires_grad(true);
  }
  if (phase_ != epoch_.phase_index) {
    phase_ = epoch_.phase_index;
    step_ = 0;
    total_steps_ = 0;
    optimization_ = Optimization();
  }
  if (!optimization_.optimizer || frozen != frozen_) optimization_ = optimizer_stage_->build(*net);
  frozen_ = frozen;
  if (!total_steps_) {
    if (schedule_ && batches_in_epoch <= 0)
      throw std::runtime_error("the schedule needs the number of batches per epoch, which this source does not give");
    total_steps_ = std::max<int64_t>(1, batches_in_epoch * epoch_.epochs_in_phase);
  }
  prepared_ = true;
  char title[128];
  std::snprintf(title, sizeof title, "epoch %d (%s %d/%d) %s", epoch_.epoch + 1, epoch_.phase.c_str(),
                epoch_.epoch_in_phase + 1, epoch_.epochs_in_phase, name_.c_str());
  progress_.begin(title, batches_in_epoch);
}

void Train::process(Item& item, const Emit& emit) {
  Batch& batch = item.get<Batch>();
  if (!prepared_) prepare(batch.batches_in_epoch);
  ResNet& net = model_->net();
  torch::optim::Optimizer& optimizer = *optimization_.optimizer;
  // The schedule, stepped per batch.
  double factor = schedule_ ? schedule_->lr_factor(step_, total_steps_) : 1.0;
  auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(optimization_.peak_lr[g] * factor);
  if (schedule_)
    if (auto momentum = schedule_->momentum(step_, total_steps_)) optimizer_stage_->set_momentum(optimizer, *momentum);
  last_lr_ = optimization_.peak_lr.front() * factor;

  torch::Tensor logits = net->forward(batch.images);
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      logits, batch.labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing_));
  optimizer.zero_grad();
  loss.backward();
  optimizer_stage_->clip(optimization_);
  optimizer.step();
  ++step_;
  ++steps_done_;
  // Metrics stay tensors: no host synchronisation inside a step.
  const int64_t n = batch.size();
  loss_sum_ += loss.detach().to(torch::kDouble).cpu() * n;
  correct_ += (logits.argmax(1) == batch.labels).sum().cpu();
  seen_ += n;
  progress_.update(n, [&] { return loss_sum_.item<double>() / seen_; });
  emit(item);
}

void Train::end_epoch(const EpochInfo& epoch) {
  progress_.end();
  if (!seen_) return;
  last_loss_ = loss_sum_.item<double>() / seen_;
  last_top1_ = static_cast<double>(correct_.item<int64_t>()) / seen_;
  metrics_->record(epoch, {{name_ + "_loss", last_loss_}, {name_ + "_top1", last_top1_}, {name_ + "_lr", last_lr_}});
  std::fprintf(stderr, "epoch %d (%s %d/%d) %s: loss %.4f top1 %.4f lr %.3g\n", epoch.epoch + 1, epoch.phase.c_str(),
               epoch.epoch_in_phase + 1, epoch.epochs_in_phase, name_.c_str(), last_loss_, last_top1_, last_lr_);
}

void Train::report(Report& report) const {
  report.set("train_loss", last_loss_);
  report.set("train_top1", last_top1_);
  report.set("train_steps", static_cast<double>(steps_done_));
}

FLOWRUN_REGISTER_STAGE(Train);

}  // namespace flowrun::stages

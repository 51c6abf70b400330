#include "stages/train/task_weighting.h"

#include <stdexcept>

namespace flowrun::stages {

TaskWeighting::TaskWeighting(size_t tasks, std::vector<double> weights, bool uncertainty, const std::string& stage)
    : weights_(std::move(weights)), stage_(stage) {
  if (uncertainty && !weights_.empty())
    throw std::runtime_error("task_weights=[...] are fixed weights; task_weighting=uncertainty learns them (give one "
                             "or the other)");
  if (!weights_.empty() && weights_.size() != tasks)
    throw std::runtime_error("task_weights=[...] has " + std::to_string(weights_.size()) + " weights but needs " +
                             std::to_string(tasks) + ": the classes' first, then one per extra head (the model's "
                             "tasks=[...], " + std::to_string(tasks - 1) + ")");
  if (weights_.empty()) weights_.assign(tasks, 1.0);
  if (uncertainty) {
    module_ = std::make_shared<torch::nn::Module>();
    log_var_ = module_->register_parameter("log_var", torch::zeros({static_cast<int64_t>(tasks)}));
  }
}

torch::Tensor TaskWeighting::combine(const std::vector<torch::Tensor>& losses) const {
  torch::Tensor total;
  for (size_t t = 0; t < losses.size(); ++t) {
    if (!losses[t].defined()) continue;  // no labelled sample of this task in the batch
    torch::Tensor term;
    if (module_) {
      const torch::Tensor s = log_var_[static_cast<int64_t>(t)];
      term = torch::exp(-s) * losses[t].to(torch::kFloat) + s / 2;
    } else {
      term = losses[t] * weights_[t];
    }
    total = total.defined() ? total + term.to(total.scalar_type()) : term;
  }
  // No task had a label: the log-variances still take part, with a zero
  // gradient (a job's ranks all-reduce every parameter's gradient each step).
  if (!total.defined() && module_) total = log_var_.sum() * 0.0;
  return total;
}

std::vector<double> TaskWeighting::log_variances() const {
  if (!module_) return std::vector<double>(weights_.size(), 0.0);
  torch::Tensor s = log_var_.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
}

torch::Tensor TaskWeighting::state() const { return module_ ? log_var_.detach().cpu().clone() : torch::Tensor(); }

void TaskWeighting::load(const torch::Tensor& saved) {
  if (!module_) return;
  if (!saved.defined() || saved.sizes() != log_var_.sizes())
    throw std::runtime_error("saved state of train '" + stage_ + "': its task log-variances do not fit the model's " +
                             std::to_string(log_var_.numel()) + " tasks");
  torch::NoGradGuard no_grad;
  log_var_.copy_(saved);
}

void TaskWeighting::to(const torch::Device& device) {
  if (module_) module_->to(device);
}

}  // namespace flowrun::stages

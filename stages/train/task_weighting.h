// How a multi-task model's losses become the one a train stage minimises:
// fixed weights, L = sum_t w_t L_t, or learned homoscedastic uncertainty
// (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
// Losses for Scene Geometry and Semantics", CVPR 2018, its classification
// form, eq. 10): L = sum_t exp(-s_t) L_t + s_t / 2 with s_t = log sigma_t^2
// trained with the model (from 0: every weight 1 at the start). Task 0 is
// the model's classes, tasks 1.. its extra heads, in the model's order.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace flowrun::stages {

class TaskWeighting {
 public:
  // `weights`: fixed weights for the tasks (empty: all 1); `uncertainty`:
  // learned instead (then `weights` must be empty). Throws on a count that
  // is not `tasks`.
  TaskWeighting(size_t tasks, std::vector<double> weights, bool uncertainty, const std::string& stage);
  // The combined loss of the per-task mean losses [tasks] (each a scalar);
  // an undefined tensor is a task with no labelled sample in the batch.
  // Undefined when no task has one and the weights are fixed.
  torch::Tensor combine(const std::vector<torch::Tensor>& losses) const;
  // The learned log-variances' module (their parameters join the optimizer
  // and a job's gradient averaging); null with fixed weights.
  std::shared_ptr<torch::nn::Module> module() const { return module_; }
  // s_t of each task (0 with fixed weights).
  std::vector<double> log_variances() const;
  bool learned() const { return module_ != nullptr; }
  // The log-variances, for a checkpoint, and back.
  torch::Tensor state() const;
  void load(const torch::Tensor& saved);
  void to(const torch::Device& device);

 private:
  std::vector<double> weights_;
  std::shared_ptr<torch::nn::Module> module_;
  torch::Tensor log_var_;  // [tasks], a parameter of module_
  std::string stage_;
};

}  // namespace flowrun::stages

// The learning-rate range test (Smith 2015; fastai's lr_find), run by the
// train stage when its `lr_find` is set (`flowrun GRAPH --lr-find`): the
// learning rate grows exponentially from `start` to `end` over `steps`
// batches, one optimizer step each; the loss is smoothed as fastai does
// (exponential average, beta 0.98, bias-corrected) and the sweep stops early
// once it exceeds 4x its minimum (divergence) or is not finite. Then the
// model's weights and buffers are put back as they were, the curve goes to
// RUN_DIR/lr_find.csv and lr_find.png (log-scale learning rate, the
// suggestions marked), and the suggested rates are fastai's: `valley` (the
// middle of the longest descending stretch) and `steep` (the steepest fall
// of the loss against log lr), both on the curve without its first tenth
// and last five points.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun::stages {

struct LrSuggestion {
  double valley = 0, steep = 0;
};

// fastai's two rules, on a recorded curve (exposed for tests).
LrSuggestion suggest_learning_rates(const std::vector<double>& lrs, const std::vector<double>& losses);

class LrFinder {
 public:
  LrFinder(int64_t steps, double start, double end, std::string out_dir);
  int64_t steps() const { return steps_; }
  // Before the first step: keeps the model's weights and buffers.
  void begin(torch::nn::Module& model);
  // The learning rate of step `step`.
  double lr(int64_t step) const;
  // Records a step's loss; false once the sweep is over (enough steps,
  // divergence, or a loss that is not finite).
  bool record(double lr, double loss);
  // Puts the weights back, writes the files, logs the suggestions.
  LrSuggestion finish(torch::nn::Module& model);
  bool finished() const { return finished_; }

 private:
  void write_csv() const;
  void write_plot(const LrSuggestion& suggestion) const;

  int64_t steps_;
  double start_, end_;
  std::string out_dir_;
  std::vector<torch::Tensor> saved_;  // the model's parameters and buffers before the sweep
  std::vector<double> lrs_, raw_, smoothed_;
  double average_ = 0, best_ = 0;
  bool finished_ = false;
};

}  // namespace flowrun::stages

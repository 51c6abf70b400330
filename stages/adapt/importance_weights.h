// `importance_weights`: instance-based transfer. At the end of a flow that
// joins a labelled source and a target dataset (`flow source + target ->
// ... -> iw`; each Batch's domain_counts says which samples are whose), it
// takes the backbone features of every sample of its pass (eval mode, no
// gradients), fits a domain classifier on them when the pass ends — an
// L2-regularised logistic regression, target = 1, source = 0 — and writes
// each source sample's importance weight
//
//   w(x) = p_target(x) / p_source(x) = p(target|x) / p(source|x) * n_source / n_target
//        = exp(logit(x)) * n_source / n_target,   clipped to [clip[0], clip[1]],
//
// as the CSV `index,weight` (one row per source dataset index) that the
// `weighted` sampler op reads: a later phase then trains on the source
// resampled toward the target's distribution. The factor n_source/n_target
// undoes the classifier's prior (the share of each domain in the pass), so
// that a classifier that cannot tell the domains apart gives weights of 1.
// Density-ratio estimation by probabilistic classification: Bickel,
// Brückner & Scheffer 2007, "Discriminative learning for differing training
// and test distributions" (ICML); Sugiyama, Suzuki & Kanamori 2012,
// "Density Ratio Estimation in Machine Learning", ch. 4.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"

namespace flowrun::stages {

class ModelStage;

// A fitted domain classifier: logit(x) = x . weight + bias, x a feature row
// as given to fit_domain_classifier (its standardisation is folded in).
struct DomainClassifier {
  torch::Tensor weight;  // [D] float64
  double bias = 0;
  int64_t iterations = 0;  // L-BFGS iterations taken (<= steps; fewer once converged)
};

// Fits logit = x . w + b to is_target by minimising
//   mean_i [log(1 + exp(s_i)) - t_i s_i] + l2/2 |w|^2,  s_i = z_i . w + b,
// z the features standardised per column (mean 0, deviation 1 over all rows;
// a constant column is left out), b not penalised: full-batch L-BFGS (10
// pairs, backtracking Armijo line search) from zeros in float64, at most
// `steps` iterations. Plain loops in a fixed order, no BLAS and no threads:
// the result is the same bit for bit whatever LibTorch's thread count.
// features: [N, D] float32 or float64 on the CPU; is_target: [N] bool (or
// 0/1 integers). Throws std::invalid_argument on other shapes, on l2 <= 0,
// and when either domain has no rows.
DomainClassifier fit_domain_classifier(const torch::Tensor& features, const torch::Tensor& is_target, double l2,
                                       int64_t steps);

// The classifier's logits [N] float64 of features [N, D] (float32 or float64, CPU).
torch::Tensor domain_logits(const torch::Tensor& features, const DomainClassifier& classifier);

// Importance weights [N] float64 from a domain classifier's target logits
// [N]: exp(logit) * prior_ratio (prior_ratio = n_source / n_target), clipped
// to [lo, hi] (0 < lo < hi; an overflowing exp comes out as hi).
torch::Tensor importance_weights_from_logits(const torch::Tensor& target_logits, double prior_ratio, double lo,
                                             double hi);

class ImportanceWeights : public SerialStage {
 public:
  static Schema schema();
  explicit ImportanceWeights(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  // The pass's end: fits the classifier and writes the weights (rank 0).
  void flush(const Emit& emit) override;
  void report(Report& report) const override;

 private:
  // Keeps `rows` [n, D] float32; throws past limit_mb.
  void keep(const torch::Tensor& rows, int64_t expected_rows);

  const StageDirectory& stages_;
  std::string name_, model_name_, path_;
  double clip_lo_, clip_hi_, l2_;
  int64_t limit_bytes_, steps_;
  bool writes_;
  ModelStage* model_ = nullptr;  // found at begin_epoch
  // The pass so far: features [capacity, D] (the first `rows_` in use), by row its domain and dataset index.
  torch::Tensor features_;
  int64_t rows_ = 0;
  std::vector<uint8_t> is_target_;
  std::vector<int64_t> indices_;
  // The last fit's figures.
  std::map<std::string, double> figures_;
  ComputeThreads compute_;
};

}  // namespace flowrun::stages

// The cache of precomputed backbone features (see precompute_plan.h).
#pragma once

#include <torch/torch.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "stages/train/precompute_plan.h"

namespace flowrun::stages {

// Backbone features by dataset index, on the model's device, within a byte limit.
class FeatureCache {
 public:
  explicit FeatureCache(int64_t limit_bytes) : limit_bytes_(limit_bytes) {}
  // The rows of `indices`, or an undefined tensor when one is missing.
  torch::Tensor lookup(const std::vector<int64_t>& indices) const;
  // Keeps the rows of `features` [N, D] under `indices` (those not kept
  // yet); false, keeping nothing, when that would pass the limit.
  bool store(const std::vector<int64_t>& indices, const torch::Tensor& features);
  void clear();
  int64_t rows() const { return static_cast<int64_t>(slot_of_.size()); }
  int64_t bytes() const { return storage_.defined() ? storage_.numel() * storage_.element_size() : 0; }
  int64_t limit_bytes() const { return limit_bytes_; }

 private:
  int64_t limit_bytes_;
  torch::Tensor storage_;  // [capacity, D]; rows 0..rows()-1 in use
  std::unordered_map<int64_t, int64_t> slot_of_;
};

}  // namespace flowrun::stages

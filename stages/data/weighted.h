// `weighted`: the recipe's instance-based transfer as a sampler op —
// PyTorch's WeightedRandomSampler with the weights in a CSV file. Each
// epoch draws `num_samples` dataset indices (0: as many as are in use), with
// replacement by default, sample i with probability w_i / sum(w), from the
// samples the ops before it left (the others weigh 0).
//
// The CSV's header names what its first column keys: `index,weight` (a
// dataset index per row: per-sample weights, e.g. the importance weights
// that `importance_weights` writes) or `class,weight` (a class name per
// row: per-class weights). Samples or classes the file leaves out weigh
// `default_weight`. Every error in the file names FILE:LINE.
//
// The file is read when an epoch first samples with the op, not when the op
// is built: an earlier phase of the same graph may write it (an
// `importance_weights` pass), and a file rewritten between epochs or phases
// is read anew. Draws come from (seed, epoch): the same graph, seed and file
// draw the same samples whatever the threads.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Weighted : public SamplerOp {
 public:
  static Schema schema();
  explicit Weighted(const StageInit& init);
  // Throws naming the stage, `weights` and the path when the file is
  // missing, and FILE:LINE for an error in it.
  void apply(SampleSet& set, int epoch) const override;
  // Per-class weights read classes (known once the file was read).
  bool reads_classes() const override;

  struct WeightFile {
    bool by_class = false;
    std::map<std::string, double> by_key;  // class name or decimal index -> weight
    std::map<std::string, int> line_of;    // the line each key is on, for errors
  };

 private:
  // The file as of `epoch`: read at the epoch's first apply, kept for the others.
  WeightFile weights_for(int epoch) const;

  std::string name_, path_;
  int64_t num_samples_;
  bool replacement_;
  double default_weight_;
  mutable std::mutex mutex_;  // apply is const, and any source's thread may call it
  mutable WeightFile file_;   // guarded by mutex_
  mutable int read_epoch_ = -1;
};

}  // namespace flowrun::stages

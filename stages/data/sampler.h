// Samplers decide which samples of a source an epoch visits, and in what
// order. Each sampler op is a component; ops pipe left to right
// (`sampler = subset fraction=0.04 | split val_fraction=0.2 part=train | shuffle`)
// and a source names its sampler stage (`source = imagefolder ... sampler=sampler`).
// Every choice is a function of (seed, epoch): the same graph and seed give
// the same order whatever the threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/common/random.h"

namespace flowrun::stages {

// A second labelling of the same samples, for a multi-task model's extra
// head (a coarse group beside the fine class): from an image list's extra
// column or a class_groups op.
struct TaskLabels {
  std::string name;                      // the task, as the model's tasks=[...] names its head
  std::vector<int64_t> labels;           // of every dataset index; -1 = this sample has no label for the task
  std::vector<std::string> class_names;  // the task's classes
};

struct SampleSet {
  std::vector<int64_t> indices;          // dataset indices in epoch order (may repeat)
  std::vector<int64_t> labels;           // label of every dataset index; -1 = not in use
  std::vector<std::string> class_names;  // after any relabelling
  std::vector<TaskLabels> tasks;         // the extra tasks' labels (multi-task); usually none
  bool sharded = false;                  // cut to one rank's share of a job (see shard_for_rank)
  int64_t padded = 0;                    // the last `padded` indices only even out the ranks' shares
};

// One rank's share of the epoch's order, as PyTorch's DistributedSampler
// (drop_last=False) takes it: the order is padded to a multiple of `world`
// by repeating it from its start, then every world-th sample from `rank`
// is this rank's. Every rank gets as many samples (so every rank takes as
// many steps); the repeats are marked as padding (set.padded).
void shard_for_rank(SampleSet& set, int64_t rank, int64_t world);

class SamplerOp : public ComponentStage {
 public:
  explicit SamplerOp(const StageInit& init, const std::string& op_type);
  virtual void apply(SampleSet& set, int epoch) const = 0;
  // Whether the op chooses, weighs or maps samples by their class
  // (per_class, balanced, classes, class_groups, a stratified split,
  // weighted by class): after an op that took most samples' classes away
  // (keep_labels) it would choose wrongly. Asked before and after apply().
  virtual bool reads_classes() const { return false; }
  virtual bool thins_classes() const { return false; }
  const std::string& op_type() const { return op_type_; }

 protected:
  // The op's generator for (epoch, index): its `seed` and type, never the
  // sample's own stream (a sampler orders samples; it does not change them).
  Rng rng(uint64_t epoch, uint64_t index = 0) const { return RandomStream(seed_, stream_).draw(epoch, index); }
  uint64_t seed_;    // the op's `seed`, or the run's when auto
  uint64_t stream_;  // the op type: ops with one seed still draw independent streams
  std::string op_type_;
};

// The `seed` parameter every sampler op has.
ParamSpec sampler_seed_param();

// The graph check (Schema::graph_check) of an op that chooses or maps
// samples by class: a problem when a keep_labels op that thins the classes
// comes before it in its sampler stage, so that --check says it. `reads`
// tells whether the op's parameters make it read classes (null: always).
// The same order is refused again when an epoch samples (sample_epoch).
Schema::GraphCheck refuse_after_keep_labels(std::function<bool(const Params&)> reads = nullptr);

// The samples of one epoch: all of them in order when `sampler` is "",
// else what the named sampler stage's ops leave. Throws when `sampler`
// names no sampler stage, or a `shard` op is not its last op.
SampleSet sample_epoch(const StageDirectory& stages, const std::string& sampler, std::vector<int64_t> labels,
                       std::vector<std::string> class_names, int epoch);
// The same, from a dataset's labels, class names and extra tasks (`base`'s
// indices are ignored: every index, in order, before the ops).
SampleSet sample_epoch(const StageDirectory& stages, const std::string& sampler, SampleSet base, int epoch);

// Keeps `keep` (a subset of `indices`, any order) in the order of `indices`.
std::vector<int64_t> keep_in_order(const std::vector<int64_t>& indices, std::vector<int64_t> keep);

}  // namespace flowrun::stages

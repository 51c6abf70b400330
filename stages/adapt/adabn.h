// `adabn`: Adaptive Batch Normalization (Li, Wang, Shi, Liu & Hou,
// "Revisiting Batch Normalization For Practical Domain Adaptation", ICLR
// 2017 workshop; arXiv 1603.04779, 2016). At the end of a flow of target
// images, it re-estimates every BatchNorm layer's running mean and variance
// on the target, without gradients and without touching a weight: the
// statistics are reset, then each batch's are averaged in with equal weight
// (PyTorch's BatchNorm with momentum=None: a cumulative moving average over
// the whole pass), while every other layer runs in eval mode.
//
// `model` is the model re-estimated. With `from`, its weights (and class
// names) are first copied from that model stage, so that one run evaluates a
// source-only model and the same model adapted by AdaBN side by side.
// Every epoch's pass starts afresh. Labels are not read. Reports
// adabn_images (the target images of the last pass).
#pragma once

#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun::stages {

class ModelStage;

class AdaBN : public SerialStage {
 public:
  static Schema schema();
  explicit AdaBN(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  void flush(const Emit& emit) override;
  void report(Report& report) const override;
  // Whether this epoch's pass has begun (the statistics reset) and its images so far.
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  // Before the pass's first batch: copy `from`, reset the statistics, cumulative averaging on.
  void start();
  // Puts the BatchNorm layers' momentum back.
  void restore();

  const StageDirectory& stages_;
  std::string name_, model_name_, from_name_;
  ModelStage* model_ = nullptr;
  bool started_ = false;   // this epoch's statistics were reset (kept across a stop)
  bool averaging_ = false; // momentum is off in this process now
  std::vector<double> momenta_;  // each BatchNorm layer's, while averaging
  int64_t images_ = 0, last_images_ = 0;
};

}  // namespace flowrun::stages

// A figure a run's stages report (val_top1, val_loss, train_loss...), watched
// epoch by epoch the way Lightning's ModelCheckpoint(monitor=, mode=) and
// EarlyStopping do: `best_weights` and `early_stopping` share it.
//
// The figure of epoch e is read when every stage has ended epoch e: at the
// next epoch's begin_epoch, or when the run stops (the weights are then
// still those of the end of epoch e), so that the stages' order in the
// graph does not matter.
#pragma once

#include <cmath>
#include <cstdio>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "pipeline/graph.h"
#include "pipeline/schema.h"
#include "pipeline/stage.h"

namespace flowrun::stages {

class Monitor {
 public:
  // `mode`: max, min, or auto (min for a figure named *loss*, else max).
  Monitor(std::string figure, const std::string& mode, double min_delta)
      : figure_(std::move(figure)),
        maximize_(mode == "max" || (mode == "auto" && figure_.find("loss") == std::string::npos)),
        min_delta_(min_delta) {}

  static void add_params(Schema& schema) {
    schema.param(String("monitor", "the figure watched, as the summary names it (val_top1, val_loss, train_loss...)")
                     .def(std::string("val_loss")))
        .param(String("mode", "max: higher is better; min: lower; auto: min for a *loss* figure, else max")
                   .def(std::string("auto"))
                   .one_of({"auto", "max", "min"}))
        .param(Float("min_delta", "an improvement must exceed this (the figure's units)").def(0.0).at_least(0));
  }

  // The figure as its stage reports it now; throws naming the figures there are.
  double read(const StageDirectory& stages) const {
    std::set<std::string> names, figures;
    if (const ResolvedGraph* graph = stages.resolved_graph())
      for (const auto& phase : graph->phases)
        for (const auto& stage : phase.stages) names.insert(stage.name);
    for (const auto& name : names)
      for (Stage* op : stages.find(name)) {
        Report report;
        op->report(report);
        for (const auto& [key, value] : report.figures()) {
          if (key == figure_) return value;
          figures.insert(key);
        }
      }
    std::string known;
    for (const auto& f : figures) known += (known.empty() ? "" : ", ") + f;
    throw std::runtime_error("monitor='" + figure_ + "': no stage of this phase reports it (figures: " + known + ")");
  }

  // Whether `value` improves on the best so far by more than min_delta; if so it becomes the best.
  bool improves(double value, int epoch) {
    if (!std::isfinite(value)) return false;
    const bool better = !best_ || (maximize_ ? value > *best_ + min_delta_ : value < *best_ - min_delta_);
    if (better) {
      best_ = value;
      best_epoch_ = epoch;
    }
    return better;
  }

  const std::string& figure() const { return figure_; }
  bool maximize() const { return maximize_; }
  double min_delta() const { return min_delta_; }
  std::optional<double> best() const { return best_; }
  int best_epoch() const { return best_epoch_; }  // 1-based; 0 = none yet

  // The best so far, for a checkpoint: "epoch value" ("0 nan" = none).
  std::string save() const {
    char text[64];
    std::snprintf(text, sizeof text, "%d %.17g", best_epoch_, best_ ? *best_ : NAN);
    return text;
  }
  void load(const std::string& text) {
    int epoch = 0;
    double value = NAN;
    if (std::sscanf(text.c_str(), "%d %lg", &epoch, &value) != 2) throw std::runtime_error("unreadable monitor state");
    best_epoch_ = epoch;
    best_ = epoch > 0 ? std::optional<double>(value) : std::nullopt;
  }

 private:
  std::string figure_;
  bool maximize_;
  double min_delta_;
  std::optional<double> best_;
  int best_epoch_ = 0;
};

}  // namespace flowrun::stages

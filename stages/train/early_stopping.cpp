#include "stages/train/early_stopping.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "pipeline/interrupt.h"
#include "pipeline/registry.h"

namespace flowrun::stages {

Schema EarlyStopping::schema() {
  Schema schema("early_stopping", "ends training when a monitored figure stops improving (patience epochs), as "
                                  "Lightning's EarlyStopping");
  schema.provides("run_end");  // it may end the run after any epoch: stages that act in the last one (predict) ask
  Monitor::add_params(schema);
  schema.param(Int("patience", "epochs without improvement before the run ends").def(int64_t{3}).range(1, 1000000));
  return schema;
}

EarlyStopping::EarlyStopping(const StageInit& init)
    : stages_(init.stages),
      monitor_(init.params.get_string("monitor"), init.params.get_string("mode"), init.params.get_float("min_delta")),
      patience_(init.params.get_int("patience")) {}

void EarlyStopping::end_epoch(const EpochInfo& epoch) { pending_epoch_ = epoch.epoch + 1; }

void EarlyStopping::begin_epoch(const EpochInfo&) {
  // Epoch e has ended for every stage: its figure is final. Every rank of a
  // job reads the same (all-reduced) figure and stops at the same epoch.
  if (!pending_epoch_) return;
  const int epoch = pending_epoch_;
  pending_epoch_ = 0;
  const double value = monitor_.read(stages_);
  if (monitor_.improves(value, epoch)) {
    waited_ = 0;
    return;
  }
  if (++waited_ < patience_) return;
  stopped_after_ = epoch;
  char reason[256];
  std::snprintf(reason, sizeof reason,
                "early stopping after epoch %d: %s did not improve by more than %g for %lld epoch(s) (best %.6g at "
                "epoch %d)",
                epoch, monitor_.figure().c_str(), monitor_.min_delta(), static_cast<long long>(waited_),
                monitor_.best() ? *monitor_.best() : NAN, monitor_.best_epoch());
  spdlog::warn("{}", reason);
  set_finish_reason(reason);
  request_finish();  // the run is complete: this epoch's flows do not start
}

bool EarlyStopping::save_state(std::string& out) const {
  out = monitor_.save() + " " + std::to_string(waited_);
  return true;
}

void EarlyStopping::load_state(const std::string& in) {
  monitor_.load(in);
  const auto space = in.rfind(' ');
  waited_ = std::stoll(in.substr(space + 1));
}

void EarlyStopping::report(Report& report) const {
  if (stopped_after_) report.set("early_stopping_epoch", stopped_after_);
  if (monitor_.best()) report.set("early_stopping_best_epoch", monitor_.best_epoch());
}

FLOWRUN_REGISTER_STAGE(EarlyStopping);

}  // namespace flowrun::stages

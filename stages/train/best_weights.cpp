#include "stages/train/best_weights.h"

#include <spdlog/spdlog.h>

#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/model/weights.h"

namespace flowrun::stages {

Schema BestWeights::schema() {
  Schema schema("best_weights", "writes the model of the best epoch by a monitored figure (val_top1, val_loss...), "
                                "as Lightning's ModelCheckpoint(monitor=, mode=)");
  schema.param(StageRef("model", "the model stage", "model")).param(Path("path", "the safetensors file to write"));
  Monitor::add_params(schema);
  return schema;
}

BestWeights::BestWeights(const StageInit& init)
    : stages_(init.stages),
      model_name_(init.params.get_string("model")),
      path_(init.params.get_string("path")),
      monitor_(init.params.get_string("monitor"), init.params.get_string("mode"), init.params.get_float("min_delta")),
      writes_(init.run.job.writes_files()) {}

void BestWeights::end_epoch(const EpochInfo& epoch) { pending_epoch_ = epoch.epoch + 1; }

void BestWeights::begin_epoch(const EpochInfo&) { look(); }

void BestWeights::on_stop(bool) { look(); }  // the weights are still the last complete epoch's when one is pending

void BestWeights::look() {
  if (!pending_epoch_) return;
  const int epoch = pending_epoch_;
  pending_epoch_ = 0;
  const double value = monitor_.read(stages_);
  if (!monitor_.improves(value, epoch)) return;
  if (writes_) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", value);
    // The model's class names as save_weights writes them (a later graph maps
    // its classes by name), then which epoch this is and why.
    ModelStage& model = find_model(stages_, model_name_);
    Metadata metadata = model.class_metadata();
    metadata["best_epoch"] = std::to_string(epoch);
    metadata["monitor"] = monitor_.figure();
    metadata["best_value"] = text;
    write_safetensors(path_, state_dict(*model.net()), metadata);
  }
  ++written_;
  spdlog::info("best_weights: epoch {} {} {:.4f}: {}", epoch, monitor_.figure(), value, path_);
}

bool BestWeights::save_state(std::string& out) const {
  out = monitor_.save();
  return true;
}

void BestWeights::load_state(const std::string& in) { monitor_.load(in); }

void BestWeights::report(Report& report) const {
  if (monitor_.best()) {
    report.set("best_epoch", monitor_.best_epoch());
    report.set("best_" + monitor_.figure(), *monitor_.best());
  }
}

FLOWRUN_REGISTER_STAGE(BestWeights);

}  // namespace flowrun::stages

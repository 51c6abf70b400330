#include "stages/model/save_weights.h"

#include <spdlog/spdlog.h>

#include "pipeline/registry.h"
#include "stages/model/model.h"

namespace flowrun::stages {

Schema SaveWeights::schema() {
  return Schema("save_weights", "writes the model's weights as safetensors when the run completes")
      .param(StageRef("model", "the model stage", "model"))
      .param(Path("path", "the .safetensors file to write"));
}

SaveWeights::SaveWeights(const StageInit& init)
    : stages_(init.stages),
      model_(init.params.get_string("model")),
      path_(init.params.get_string("path")),
      writes_(init.run.job.writes_files()) {}

void SaveWeights::on_stop(bool interrupted) {
  if (interrupted || !writes_) return;  // in a job rank 0 writes (every rank holds the same weights)
  ModelStage& model = find_model(stages_, model_);
  write_safetensors(path_, state_dict(*model.net()), model.class_metadata());  // the class names in its metadata
  saved_ = true;
  spdlog::info("saved weights to {}", path_);
}

FLOWRUN_REGISTER_STAGE(SaveWeights);

}  // namespace flowrun::stages

#include "stages/train/checkpoint.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/model/checkpoint_format.h"
#include "stages/model/weights.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

namespace {
using namespace checkpoint_format;

uint64_t parse_count(const std::string& path, const Metadata& metadata, const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) throw std::runtime_error(path + ": checkpoint metadata lacks '" + key + "'");
  auto count = parse_saved_count(it->second);
  if (!count) throw std::runtime_error(path + ": checkpoint metadata '" + key + "' is not a count: '" + it->second + "'");
  return *count;
}
}  // namespace

RunState read_checkpoint(const std::string& path, int* world_size) {
  Metadata metadata;
  StateDict tensors = read_safetensors(path, &metadata);
  if (metadata["format"] != kFormat) throw std::runtime_error(path + ": not a flowrun checkpoint");
  if (metadata["version"] != kVersion)
    throw std::runtime_error(path + ": checkpoint version '" + metadata["version"] + "' (this flowrun reads " + kVersion + ")");
  RunState state;
  const uint64_t epoch = parse_count(path, metadata, "epoch"), flow = parse_count(path, metadata, "flow");
  if (epoch > (1u << 30) || flow > (1u << 30)) throw std::runtime_error(path + ": checkpoint position is out of range");
  state.position.epoch = static_cast<int>(epoch);
  state.position.flow = static_cast<int>(flow);
  state.position.items = parse_count(path, metadata, "items");
  state.graph = metadata["graph"];
  if (world_size) {  // older checkpoints say nothing: a process alone wrote them
    *world_size = metadata.count("world_size") ? static_cast<int>(parse_count(path, metadata, "world_size")) : 1;
    if (*world_size < 1 || *world_size > (1 << 20)) throw std::runtime_error(path + ": checkpoint world size is out of range");
  }
  for (const auto& [name, tensor] : tensors) {
    if (name.rfind(kStagePrefix, 0) != 0) throw std::runtime_error(path + ": unexpected tensor '" + name + "'");
    try {
      state.stages[name.substr(std::char_traits<char>::length(kStagePrefix))] = tensor_bytes(tensor);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": '" + name + "': " + e.what());
    }
  }
  return state;
}

void write_checkpoint(const std::string& path, const RunState& state, int world_size) {
  Metadata metadata = {{"format", kFormat},
                       {"version", kVersion},
                       {"epoch", std::to_string(state.position.epoch)},
                       {"flow", std::to_string(state.position.flow)},
                       {"items", std::to_string(state.position.items)},
                       {"graph", state.graph},
                       {"world_size", std::to_string(world_size)}};
  StateDict tensors;
  // Views of the state bytes, not copies: a checkpoint can be most of memory.
  for (const auto& [name, bytes] : state.stages)
    tensors.emplace_back(kStagePrefix + name,
                         torch::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())},
                                          torch::kUInt8));
  write_safetensors(path, tensors, metadata);
}

Schema Checkpoint::schema() {
  return Schema("checkpoint", "keeps the run's state (weights, optimizer, position) to resume from after a stop")
      .param(Path("path", "the checkpoint file; \"\" = RUN_DIR/checkpoint.ckpt").def(std::string("")))
      .param(Int("every", "write one every N epochs (and always when the run stops); 0 = only when it stops")
                 .def(int64_t{1})
                 .at_least(0))
      .param(Path("resume", "a checkpoint to take the run up from; \"\" = start afresh").def(std::string("")));
}

Checkpoint::Checkpoint(const StageInit& init)
    : name_(init.name),
      path_(init.params.get_string("path")),
      resume_(init.params.get_string("resume")),
      every_(init.params.get_int("every")),
      world_size_(init.run.job.world_size),
      writes_(init.run.job.writes_files()),
      metrics_(MetricsLog::of(init)) {
  if (path_.empty()) {
    if (init.run.run_dir.empty())
      throw std::runtime_error("no checkpoint file: set path= or give the run a directory (--run-dir)");
    path_ = init.run.run_dir + "/checkpoint.ckpt";
  }
}

std::optional<RunState> Checkpoint::resume_state() {
  if (resume_.empty()) return std::nullopt;
  int written_by = 1;
  RunState state = read_checkpoint(resume_, &written_by);
  // The position counts each rank's own items, and ranks cut the data by
  // their number: a checkpoint resumes with the world size that wrote it.
  if (written_by != world_size_)
    throw std::runtime_error(resume_ + ": written by a job of " + std::to_string(written_by) + " process(es); resume it "
                             "with as many (this run has " + std::to_string(world_size_) + ")");
  return state;
}

void Checkpoint::write(const RunState& state) const {
  if (!writes_) return;  // the state was gathered (collectives), rank 0 keeps it
  write_checkpoint(path_, state, world_size_);
  ++written_;
}

void Checkpoint::epoch_ended(const RunPosition& next, const StateCollector& collect) {
  if (every_ > 0 && next.epoch % every_ == 0) {
    write(collect());
    if (writes_) spdlog::info("checkpoint: {} (to resume at {})", path_, next.describe());
  }
}

void Checkpoint::run_stopped(const RunPosition& next, bool interrupted, const StateCollector& collect) {
  write(collect());
  if (interrupted && writes_)
    spdlog::warn("checkpoint: {} holds the run up to {}; go on with --set {}.resume={}", path_, next.describe(), name_,
                 path_);
}

bool Checkpoint::save_state(std::string& out) const {
  out = metrics_->to_json();
  return true;
}

void Checkpoint::load_state(const std::string& in) { metrics_->restore(in); }

void Checkpoint::report(Report& report) const { report.set("checkpoints_written", static_cast<double>(written_)); }

FLOWRUN_REGISTER_STAGE(Checkpoint);

}  // namespace flowrun::stages

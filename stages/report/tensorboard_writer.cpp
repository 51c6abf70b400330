#include "stages/report/tensorboard_writer.h"

#include <google/protobuf/struct.pb.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
// Debian 12 packages no CRC-32C library: Boost.CRC (header-only, libboost-dev)
// computes it, with the Castagnoli polynomial as TFRecord's framing wants.
#include <boost/crc.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "pipeline/atomic_file.h"
#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "tensorboard/compat/proto/event.pb.h"
#include "tensorboard/compat/proto/summary.pb.h"
#include "tensorboard/plugins/hparams/plugin_data.pb.h"
#include "tensorboard/plugins/text/plugin_data.pb.h"

namespace flowrun::stages {

namespace {

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// CRC-32C (Castagnoli), reflected in and out, as TFRecord's framing: Boost.CRC.
using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

uint32_t masked_crc32c(const void* data, size_t size) {
  Crc32c crc;
  crc.process_bytes(data, size);
  const uint32_t value = crc.checksum();
  return ((value >> 15) | (value << 17)) + 0xa282ead8u;
}

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || !name[0]) return "localhost";
  return name;
}

// An event at `step` (now) holding one summary value, tagged `tag`, for the caller to fill.
tensorboard::Summary::Value* tagged_value(tensorboard::Event& event, const std::string& tag, int64_t step) {
  event.set_wall_time(wall_time());
  event.set_step(step);
  tensorboard::Summary::Value* value = event.mutable_summary()->add_value();
  value->set_tag(tag);
  return value;
}

constexpr const char* kHparamsPlugin = "hparams";

// A Summary.Value of the hparams plugin: metadata only, as add_hparams writes it.
void hparams_value(tensorboard::Summary& summary, const std::string& tag,
                   const tensorboard::hparams::HParamsPluginData& data) {
  tensorboard::Summary::Value* value = summary.add_value();
  value->set_tag(tag);
  auto* plugin = value->mutable_metadata()->mutable_plugin_data();
  plugin->set_plugin_name(kHparamsPlugin);
  plugin->set_content(data.SerializeAsString());
}

}  // namespace

std::shared_ptr<TensorBoardWriter> TensorBoardWriter::of(const StageInit& init) {
  if (init.run.run_dir.empty() || !init.run.job.writes_files()) return nullptr;  // rank 0 writes
  static std::mutex mutex;  // stages are built on one thread, but be safe
  std::lock_guard<std::mutex> lock(mutex);
  auto writer = init.services.find<TensorBoardWriter>("tensorboard");
  if (!writer) {
    writer = std::make_shared<TensorBoardWriter>(init.run.run_dir);
    if (const ResolvedGraph* graph = init.stages.resolved_graph()) {
      writer->text("graph/text_summary", 0, graph_markdown(graph->format()));
      writer->session_start(graph_hparams(*graph));
    }
    writer->flush();
    init.services.provide("tensorboard", writer);
  }
  return writer;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  static std::atomic<int> files{0};  // TensorFlow's global counter of event files
  const double now = wall_time();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(static_cast<long long>(now)) + "." +
                                         host_name() + "." + std::to_string(getpid()) + "." +
                                         std::to_string(files++))).string();
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw std::runtime_error(path_ + ": error: cannot write the TensorBoard event file: " + std::strerror(errno));
  record_file_written(path_);
  tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version("brain.Event:2");
  event.mutable_source_metadata()->set_writer("flowrun");
  write_event(event.SerializeAsString());
}

TensorBoardWriter::~TensorBoardWriter() {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    if (started_ && !ended_) end_locked(false);  // nothing said it ended: the run failed
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_event(const std::string& data) {
  // TFRecord: uint64 length (little-endian), its masked CRC-32C, the data, the data's masked CRC-32C.
  std::string record;
  record.reserve(data.size() + 16);
  put_le(record, data.size(), 8);
  put_le(record, masked_crc32c(record.data(), 8), 4);
  record += data;
  put_le(record, masked_crc32c(data.data(), data.size()), 4);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size())
    throw std::runtime_error(path_ + ": error: cannot write the TensorBoard event file: " + std::strerror(errno));
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value) {
  tensorboard::Event event;
  tagged_value(event, tag, step)->set_simple_value(static_cast<float>(value));
  write_locked(event);
}

void TensorBoardWriter::metric(const std::string& tag, int64_t step, double value) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.insert(tag);
  }
  scalar(tag, step, value);
}

void TensorBoardWriter::image(const std::string& tag, int64_t step, const std::string& png, int width, int height) {
  tensorboard::Event event;
  tensorboard::Summary::Image* image = tagged_value(event, tag, step)->mutable_image();
  image->set_width(width);
  image->set_height(height);
  image->set_colorspace(3);  // RGB
  image->set_encoded_image_string(png);
  write_locked(event);
}

void TensorBoardWriter::text(const std::string& tag, int64_t step, const std::string& markdown) {
  // As torch.utils.tensorboard's add_text: the text plugin's metadata and a
  // DT_STRING tensor of one element.
  tensorboard::Event event;
  tensorboard::Summary::Value* v = tagged_value(event, tag, step);
  auto* plugin = v->mutable_metadata()->mutable_plugin_data();
  plugin->set_plugin_name("text");
  tensorboard::TextPluginData text_data;
  text_data.set_version(0);
  plugin->set_content(text_data.SerializeAsString());
  tensorboard::TensorProto* tensor = v->mutable_tensor();
  tensor->set_dtype(tensorboard::DT_STRING);
  tensor->mutable_tensor_shape()->add_dim()->set_size(1);
  tensor->add_string_val(markdown);
  write_locked(event);
}

void TensorBoardWriter::write_locked(const tensorboard::Event& event) {
  const std::string data = event.SerializeAsString();  // outside the lock
  std::lock_guard<std::mutex> lock(mutex_);
  write_event(data);
}

void TensorBoardWriter::session_start(const std::map<std::string, HParam>& hparams) {
  std::lock_guard<std::mutex> lock(mutex_);
  hparams_ = hparams;
  start_time_ = wall_time();
  tensorboard::hparams::HParamsPluginData data;
  data.set_version(0);
  auto* start = data.mutable_session_start_info();
  start->set_start_time_secs(start_time_);
  for (const auto& [name, value] : hparams) {
    google::protobuf::Value& v = (*start->mutable_hparams())[name];
    if (auto* number = std::get_if<double>(&value)) v.set_number_value(*number);
    else if (auto* text = std::get_if<std::string>(&value)) v.set_string_value(*text);
    else v.set_bool_value(std::get<bool>(value));
  }
  tensorboard::Event event;
  event.set_wall_time(start_time_);
  hparams_value(*event.mutable_summary(), "_hparams_/session_start_info", data);
  write_event(event.SerializeAsString());
  started_ = true;
}

void TensorBoardWriter::session_end(bool success) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (started_ && !ended_) end_locked(success);
  std::fflush(file_);
}

void TensorBoardWriter::end_locked(bool success) {
  ended_ = true;
  const double now = wall_time();
  // The experiment: every hparam of the session and the per-epoch figures as its metrics.
  tensorboard::hparams::HParamsPluginData experiment;
  experiment.set_version(0);
  auto* exp = experiment.mutable_experiment();
  exp->set_time_created_secs(start_time_);
  for (const auto& [name, value] : hparams_) {
    auto* info = exp->add_hparam_infos();
    info->set_name(name);
    info->set_type(std::holds_alternative<double>(value)        ? tensorboard::hparams::DATA_TYPE_FLOAT64
                   : std::holds_alternative<std::string>(value) ? tensorboard::hparams::DATA_TYPE_STRING
                                                                : tensorboard::hparams::DATA_TYPE_BOOL);
  }
  for (const auto& tag : metrics_) exp->add_metric_infos()->mutable_name()->set_tag(tag);
  tensorboard::Event first;
  first.set_wall_time(now);
  hparams_value(*first.mutable_summary(), "_hparams_/experiment", experiment);
  write_event(first.SerializeAsString());

  tensorboard::hparams::HParamsPluginData end;
  end.set_version(0);
  end.mutable_session_end_info()->set_status(success ? tensorboard::hparams::STATUS_SUCCESS
                                                     : tensorboard::hparams::STATUS_FAILURE);
  end.mutable_session_end_info()->set_end_time_secs(now);
  tensorboard::Event second;
  second.set_wall_time(now);
  hparams_value(*second.mutable_summary(), "_hparams_/session_end_info", end);
  write_event(second.SerializeAsString());
}

void TensorBoardWriter::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (std::fflush(file_) != 0)
    throw std::runtime_error(path_ + ": error: cannot write the TensorBoard event file: " + std::strerror(errno));
}

std::map<std::string, TensorBoardWriter::HParam> graph_hparams(const ResolvedGraph& graph) {
  std::map<std::string, TensorBoardWriter::HParam> hparams;
  hparams["run.seed"] = static_cast<double>(graph.run.seed);
  if (graph.implicit_phase) hparams["run.epochs"] = static_cast<double>(graph.phases.front().epochs);
  auto as_hparam = [](const Value& value) -> TensorBoardWriter::HParam {
    if (auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&value)) return *d;
    if (auto* b = std::get_if<bool>(&value)) return *b;
    if (auto* s = std::get_if<std::string>(&value)) return *s;
    return format_value(value);  // auto, lists: their text
  };
  // Every stage parameter away from its default, by the name --set gives it.
  auto settings = [&](const ResolvedPhase& phase) {
    std::map<std::string, Value> found;
    for (const auto& stage : phase.stages)
      for (size_t o = 0; o < stage.ops.size(); ++o) {
        const ResolvedOp& op = stage.ops[o];
        std::string prefix = stage.name + ".";
        if (stage.ops.size() > 1) {
          size_t same_type = 0;
          for (const auto& other : stage.ops) same_type += other.type == op.type;
          prefix += (same_type == 1 ? op.type : std::to_string(o)) + ".";
        }
        const Schema* schema = op.stage_type ? &op.stage_type->schema : nullptr;
        for (const auto& [name, value] : op.params.values()) {
          const ParamSpec* spec = schema ? schema->find(name) : nullptr;
          if (spec && !spec->role.empty()) continue;  // which stage plays a role: wiring, not a setting
          if (spec && spec->default_value && *spec->default_value == value) continue;
          found[prefix + name] = value;
        }
      }
    return found;
  };
  const auto first = settings(graph.phases.front());
  for (const auto& [name, value] : first) hparams[name] = as_hparam(value);
  for (const auto& phase : graph.phases) {
    if (!graph.implicit_phase) hparams[phase.name + ".epochs"] = static_cast<double>(phase.epochs);
    if (&phase == &graph.phases.front()) continue;
    for (const auto& [name, value] : settings(phase)) {
      auto it = first.find(name);
      if (it == first.end() || !(it->second == value)) hparams[phase.name + "." + name] = as_hparam(value);
    }
  }
  return hparams;
}

std::string graph_markdown(const std::string& graph_text) {
  std::string text = "```\n" + graph_text;
  if (!text.empty() && text.back() != '\n') text += "\n";
  return text + "```\n";
}

}  // namespace flowrun::stages

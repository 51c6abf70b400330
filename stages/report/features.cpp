#include "stages/report/features.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "pipeline/atomic_file.h"
#include "pipeline/registry.h"
#include "pipeline/trace.h"
#include "stages/model/model.h"
#include "stages/report/csv.h"
#include "stages/tensor/batch_data.h"
#include "stages/tensor/batch_image.h"

namespace flowrun::stages {

namespace {
std::string csv_beside(const std::string& path) {
  std::filesystem::path p(path);
  return p.replace_extension(".csv").string();
}

// Copies `size` bytes of `in` to `out` through a fixed buffer.
void copy_bytes(std::istream& in, std::ostream& out, uint64_t size, const std::string& what) {
  std::vector<char> buffer(1 << 20);
  while (size > 0) {
    const auto chunk = static_cast<std::streamsize>(std::min<uint64_t>(size, buffer.size()));
    if (!in.read(buffer.data(), chunk)) throw std::runtime_error("cannot read back " + what);
    out.write(buffer.data(), chunk);
    size -= static_cast<uint64_t>(chunk);
  }
}
}  // namespace

Schema Features::schema() {
  return Schema("features", "writes every sample's backbone features (before fc) to a safetensors file and a CSV")
      .param(StageRef("model", "the model stage", "model"))
      .param(Path("path", "the .safetensors file: features [N, D] float32, indices [N], labels [N]"))
      .param(Path("csv", "the CSV of rows (row, index, label, class, path); \"\" = PATH with .csv")
                 .def(std::string("")))
      .param(String("layer", "avgpool: the pooled input of the head; another of the model's layers (a ResNet's: "
                             "stem, layer1..layer4): that layer's output, globally average-pooled")
                 .def(std::string("avgpool")))
      .check([](const Params& p) {
        const std::string& path = p.get_string("path");
        const std::string csv = p.get_string("csv").empty() ? csv_beside(path) : p.get_string("csv");
        return csv == path ? "csv and path are the same file: " + path + " (give the features another name, or csv=)"
                           : std::string();
      });
}

Features::Features(const StageInit& init)
    : stages_(init.stages),
      model_name_(init.params.get_string("model")),
      path_(init.params.get_string("path")),
      csv_path_(init.params.get_string("csv")),
      layer_(init.params.get_string("layer")),
      compute_(init),
      job_(Job::of(init.run.job)) {
  if (csv_path_.empty()) csv_path_ = csv_beside(path_);
  if (csv_path_ == path_) throw std::runtime_error("csv and path are the same file: " + path_);
  std::filesystem::path target(path_);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  // In a job each rank spools its share; rank 0 merges them.
  spool_ = path_ + ".spool." + std::to_string(getpid());
  open_spools();
}

Features::~Features() { remove_spools(); }

void Features::open_spools() {
  rows_.open(spool_ + ".f32", std::ios::binary | std::ios::trunc);
  keys_.open(spool_ + ".i64", std::ios::binary | std::ios::trunc);
  csv_.open(spool_ + ".csv", std::ios::trunc);
  if (!rows_ || !keys_ || !csv_) throw std::runtime_error(path_ + ": cannot write beside it (" + spool_ + ".*)");
}

void Features::remove_spools() {
  rows_.close();
  keys_.close();
  csv_.close();
  for (const char* ext : {".f32", ".i64", ".csv"}) std::remove((spool_ + ext).c_str());
}

void Features::begin_epoch(const EpochInfo&) {
  // Every epoch writes the whole set again: the files hold the last one's rows.
  if (rows_written_ > 0) {
    remove_spools();
    open_spools();
    rows_written_ = 0;
    busy_ns_ = 0;
  }
  ModelStage& model = find_model(stages_, model_name_);
  if (layer_ != "avgpool") {
    const std::vector<std::string> layers = model.net()->layers();
    if (std::find(layers.begin(), layers.end(), layer_) == layers.end()) {
      std::string names = "avgpool";
      for (const auto& name : layers) names += ", " + name;
      throw std::runtime_error("layer='" + layer_ + "' is not a layer of model '" + model_name_ + "' (" + names + ")");
    }
  }
  compute_.begin_epoch(model.device().is_cpu());
}

namespace {
bool known_classes(const ModelStage& model, const DatasetInfo& dataset) {
  const std::vector<std::string> names = model.class_names();
  if (names.empty() || dataset.class_names.empty()) return false;
  for (const auto& name : dataset.class_names)
    if (std::find(names.begin(), names.end(), name) == names.end()) return false;
  return true;
}
}  // namespace

void Features::process(Item& item, const Emit& emit) {
  const int64_t begin = now_ns();
  const Batch& batch = item.get<Batch>();
  batch.require_one_source("features");
  ComputeThreads::Scope compute(compute_);
  torch::Tensor features =
      find_model(stages_, model_name_).infer_features(batch.images, layer_).cpu().contiguous();
  if (dim_ == 0) dim_ = features.size(1);
  // Labels as the model's outputs, by name, when the model knows all the
  // source's classes; else the source's own (features need no head: a model
  // may well describe a new task's images).
  ModelStage& model = find_model(stages_, model_name_);
  const bool by_model = batch.dataset && known_classes(model, *batch.dataset);
  torch::Tensor labels = by_model ? model.labels(batch).cpu() : batch.labels.cpu();
  auto class_name = [&](const Batch& b, int64_t c) {
    return by_model ? model.output_name(c, b) : stages::class_name(b, c);
  };
  const float* data = features.data_ptr<float>();
  for (int64_t i = 0; i < batch.size(); ++i) {
    if (!batch.padding.empty() && batch.padding[i]) continue;  // a repeat evening out a job's shards
    rows_.write(reinterpret_cast<const char*>(data + i * dim_), static_cast<std::streamsize>(dim_ * sizeof(float)));
    const int64_t key[2] = {batch.indices[i], labels[i].item<int64_t>()};
    keys_.write(reinterpret_cast<const char*>(key), sizeof key);
    const std::string path = i < static_cast<int64_t>(batch.paths.size()) ? batch.paths[i] : "";
    csv_ << batch.indices[i] << "," << key[1] << "," << (key[1] >= 0 ? csv_field(class_name(batch, key[1])) : "")
         << "," << csv_field(path) << "\n";
    ++rows_written_;
  }
  if (!rows_ || !keys_ || !csv_) throw std::runtime_error(path_ + ": write failed (disk full?)");
  busy_ns_ += now_ns() - begin;
  emit(item);
}

void Features::on_stop(bool interrupted) {
  rows_.close();
  keys_.close();
  csv_.close();
  // In a job every rank's rows go to rank 0, whose merge takes them in turn
  // (the order of a process alone).
  if (!interrupted) write_outputs();
  if (job_) job_->barrier("the merged features");
  remove_spools();
}

void Features::write_outputs() {
  std::vector<std::string> spools = {spool_};
  if (job_) {
    spools = job_->allgather(spool_, "the feature files");
    if (job_->rank() != 0) return;
  }
  struct Share {
    std::ifstream rows, keys, csv;
    int64_t count;
  };
  std::vector<std::unique_ptr<Share>> shares;
  for (const std::string& spool : spools) {
    auto share = std::make_unique<Share>();
    share->rows.open(spool + ".f32", std::ios::binary);
    share->keys.open(spool + ".i64", std::ios::binary);
    share->csv.open(spool + ".csv");
    std::error_code ec;
    share->count = static_cast<int64_t>(std::filesystem::file_size(spool + ".i64", ec) / 16);
    if (!share->rows || !share->keys || !share->csv || ec)
      throw std::runtime_error(path_ + ": cannot read back the spooled features " + spool +
                               ".* (a job's ranks must share the folder features go to)");
    shares.push_back(std::move(share));
  }
  // The ranks' rows in turn, as the ranks took the samples in turn (a share
  // that ran out, having skipped padding, drops out of the turn).
  auto for_each_row = [&](const std::function<void(Share&)>& take) {
    std::vector<int64_t> left;
    for (const auto& share : shares) left.push_back(share->count);
    for (bool more = true; more;) {
      more = false;
      for (size_t r = 0; r < shares.size(); ++r)
        if (left[r] > 0) {
          take(*shares[r]);
          more = --left[r] > 0 || more;
        }
    }
  };
  int64_t total = 0;
  for (size_t r = 0; r < shares.size(); ++r) {
    total += shares[r]->count;
    std::error_code ec;
    if (dim_ == 0 && shares[r]->count > 0)
      dim_ = static_cast<int64_t>(std::filesystem::file_size(spools[r] + ".f32", ec) / 4) / shares[r]->count;
  }
  rows_written_ = total;
  const uint64_t n = static_cast<uint64_t>(rows_written_), d = static_cast<uint64_t>(dim_);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "flowrun features"}, {"layer", layer_}, {"model", model_name_}};
  header["features"] = {{"dtype", "F32"}, {"shape", {n, d}}, {"data_offsets", {0, n * d * 4}}};
  header["indices"] = {{"dtype", "I64"}, {"shape", {n}}, {"data_offsets", {n * d * 4, n * d * 4 + n * 8}}};
  header["labels"] = {{"dtype", "I64"}, {"shape", {n}}, {"data_offsets", {n * d * 4 + n * 8, n * d * 4 + n * 16}}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomically(path_, [&](std::ostream& out) {
    const uint64_t size = text.size();
    for (int k = 0; k < 8; ++k) out.put(static_cast<char>((size >> (8 * k)) & 255));
    out << text;
    for_each_row([&](Share& s) { copy_bytes(s.rows, out, d * 4, "the spooled features"); });
    // Indices, then labels: the key spools are read twice rather than held in memory.
    for_each_row([&](Share& s) {
      int64_t key[2];
      if (!s.keys.read(reinterpret_cast<char*>(key), sizeof key)) throw std::runtime_error("cannot read back indices");
      out.write(reinterpret_cast<const char*>(&key[0]), 8);
    });
    for (auto& share : shares) {
      share->keys.clear();
      share->keys.seekg(0);
    }
    for_each_row([&](Share& s) {
      int64_t key[2];
      if (!s.keys.read(reinterpret_cast<char*>(key), sizeof key)) throw std::runtime_error("cannot read back labels");
      out.write(reinterpret_cast<const char*>(&key[1]), 8);
    });
  });
  int64_t row = 0;
  write_file_atomically(csv_path_, [&](std::ostream& out) {
    out << "row,index,label,class,path\n";
    std::string line;
    for_each_row([&](Share& s) {
      if (!std::getline(s.csv, line)) throw std::runtime_error("cannot read back the spooled CSV");
      out << row++ << "," << line << "\n";
    });
  });
  spdlog::info("features: {} rows of {} to {} (+ {})", rows_written_, dim_, path_, csv_path_);
}

void Features::report(Report& report) const {
  report.set("features_rows", static_cast<double>(rows_written_));
  report.set("features_dim", static_cast<double>(dim_));
  if (busy_ns_ > 0) report.set("features_images_per_s", static_cast<double>(rows_written_) / (busy_ns_ / 1e9));
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Features);

}  // namespace flowrun::stages

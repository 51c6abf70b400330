#include "stages/report/predict.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "pipeline/atomic_file.h"
#include "stages/report/csv.h"
#include "stages/tensor/batch_image.h"

namespace flowrun::stages {

Schema Predict::schema() {
  return Schema("predict", "the model's predictions: a CSV with top-5 probabilities and a PNG grid true/predicted")
      .param(StageRef("model", "the model stage", "model"))
      .param(Path("csv", "the CSV to write"))
      .param(Path("grid", "the PNG grid to write; \"\" = none").def(std::string("")))
      .param(Int("grid_images", "images in the grid (the recipe shows 9)").def(int64_t{9}).range(1, 1024))
      .param(Int("columns", "grid images per row").def(int64_t{9}).range(1, 64));
}

Predict::Predict(const StageInit& init)
    : stages_(init.stages),
      model_name_(init.params.get_string("model")),
      csv_path_(init.params.get_string("csv")),
      grid_path_(init.params.get_string("grid")),
      grid_count_(init.params.get_int("grid_images")),
      columns_(init.params.get_int("columns")),
      compute_(init),
      job_(Job::of(init.run.job)) {
  std::filesystem::path target(csv_path_);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  temporary_ = csv_path_ + ".tmp." + std::to_string(getpid());
  csv_.open(temporary_, std::ios::trunc);
  if (!csv_) throw std::runtime_error(csv_path_ + ": cannot write");
  // In a job each rank writes its share to its own temporary; rank 0 merges them.
  if (!job_ || job_->rank() == 0)
    csv_ << "path,true_class,predicted_class,top1_class,top1_prob,top2_class,top2_prob,top3_class,top3_prob,"
          "top4_class,top4_prob,top5_class,top5_prob\n";
}

void Predict::begin_epoch(const EpochInfo&) { compute_.begin_epoch(find_model(stages_, model_name_).device().is_cpu()); }

void Predict::process(Item& item, const Emit& emit) {
  const Batch& batch = item.get<Batch>();
  ComputeThreads::Scope compute(compute_);
  torch::Tensor logits = find_model(stages_, model_name_).infer_logits(batch.images);
  torch::Tensor probabilities = torch::softmax(logits, 1).cpu();
  const int64_t k = std::min<int64_t>(5, probabilities.size(1));
  auto [top_p, top_i] = probabilities.topk(k, 1);
  ModelStage& model = find_model(stages_, model_name_);
  // True classes as the model's outputs, by name; every class by the model's names.
  torch::Tensor labels = model.labels(batch).cpu();
  auto class_name = [&](const Batch& b, int64_t c) { return model.output_name(c, b); };
  for (int64_t i = 0; i < batch.size(); ++i) {
    if (!batch.padding.empty() && batch.padding[i]) continue;  // a repeat evening out a job's shards
    const int64_t label = labels[i].item<int64_t>();
    const int64_t guess = top_i[i][0].item<int64_t>();
    std::string path = !batch.paths[i].empty() ? batch.paths[i] : "sample #" + std::to_string(batch.indices[i]);
    csv_ << csv_field(path) << "," << (label >= 0 ? csv_field(class_name(batch, label)) : "") << ","
         << csv_field(class_name(batch, guess));
    for (int64_t j = 0; j < 5; ++j) {
      if (j < k)
        csv_ << "," << csv_field(class_name(batch, top_i[i][j].item<int64_t>())) << "," << std::fixed
             << std::setprecision(6) << top_p[i][j].item<float>();
      else
        csv_ << ",,";
    }
    csv_ << "\n";
    ++predicted_;
    if (label >= 0) {
      ++labelled_;
      correct_ += label == guess;
    }
    if (static_cast<int64_t>(tiles_.size()) < grid_count_ && !grid_path_.empty()) {
      GridTile tile;
      tile.image = batch_image(batch, i);
      tile.title = (label >= 0 ? class_name(batch, label) : std::string("?")) + " / " + class_name(batch, guess);
      tile.highlight = label >= 0 && label != guess;
      tiles_.push_back(std::move(tile));
    }
  }
  if (!csv_) throw std::runtime_error(csv_path_ + ": write failed");
  emit(item);
}

void Predict::on_stop(bool interrupted) {
  csv_.close();
  if (job_) {
    merge_shares(interrupted);
    if (interrupted || job_->rank() != 0) return;
  } else {
    if (interrupted) {
      std::remove(temporary_.c_str());  // a partial CSV never replaces a complete one
      return;
    }
    if (std::rename(temporary_.c_str(), csv_path_.c_str()) != 0) throw std::runtime_error(csv_path_ + ": cannot write");
  }
  if (!tiles_.empty()) {
    int tile_px = std::max(96, std::max(tiles_.front().image.width, tiles_.front().image.height));
    write_image_grid(grid_path_, tiles_, static_cast<int>(std::min<int64_t>(columns_, tiles_.size())), tile_px);
  }
}

void Predict::merge_shares(bool interrupted) {
  // Counts over the job; every rank's temporary, in rank order, to rank 0.
  torch::Tensor counts = torch::tensor({predicted_, correct_, labelled_}, torch::kLong);
  job_->allreduce_sum({counts}, "the prediction counts");
  predicted_ = counts[0].item<int64_t>();
  correct_ = counts[1].item<int64_t>();
  labelled_ = counts[2].item<int64_t>();
  const std::vector<std::string> shares = job_->allgather(temporary_, "the prediction files");
  if (job_->rank() == 0 && !interrupted) {
    // Rank r's i-th row is sample r + i * world of the order the ranks
    // share: taking the shares' rows in turn gives a process alone's order.
    std::vector<std::unique_ptr<std::ifstream>> in;
    for (size_t r = 0; r < shares.size(); ++r) {
      in.push_back(std::make_unique<std::ifstream>(shares[r]));
      if (!*in.back())
        throw std::runtime_error(csv_path_ + ": cannot read rank " + std::to_string(r) + "'s predictions " + shares[r] +
                                 " (a job's ranks must share the folder predictions go to)");
    }
    write_file_atomically(csv_path_, [&](std::ostream& out) {
      std::string line;
      for (bool more = true; more;) {
        more = false;
        for (auto& share : in)
          if (std::getline(*share, line)) {
            out << line << "\n";
            more = true;
          }
      }
    });
  }
  job_->barrier("the merged predictions");  // rank 0 has read every share
  std::remove(temporary_.c_str());
}

void Predict::report(Report& report) const {
  report.set("predicted", static_cast<double>(predicted_));
  if (labelled_) report.set("predict_top1", static_cast<double>(correct_) / labelled_);
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Predict);

}  // namespace flowrun::stages

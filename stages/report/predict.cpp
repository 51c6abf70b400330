#include "stages/report/predict.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <stdexcept>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "pipeline/atomic_file.h"
#include "stages/report/csv.h"
#include "stages/tensor/batch_image.h"

namespace flowrun::stages {

namespace {

// A grid tile as bytes, for rank 0 to gather every rank's tiles.
void put_tile(std::string& out, const GridTile& tile) {
  auto put = [&](int64_t value) { out.append(reinterpret_cast<const char*>(&value), sizeof value); };
  put(tile.image.width);
  put(tile.image.height);
  put(tile.image.channels);
  put(tile.highlight);
  put(static_cast<int64_t>(tile.title.size()));
  out += tile.title;
  out.append(reinterpret_cast<const char*>(tile.image.pixels.data()), tile.image.pixels.size());
}

std::vector<GridTile> get_tiles(const std::string& in) {
  std::vector<GridTile> tiles;
  size_t at = 0;
  auto get = [&]() {
    int64_t value = 0;
    if (at + sizeof value > in.size()) throw std::runtime_error("a rank's prediction grid tiles are cut short");
    std::memcpy(&value, in.data() + at, sizeof value);
    at += sizeof value;
    return value;
  };
  auto take = [&](size_t size) {
    if (at + size > in.size()) throw std::runtime_error("a rank's prediction grid tiles are cut short");
    const char* begin = in.data() + at;
    at += size;
    return begin;
  };
  while (at < in.size()) {
    const int w = static_cast<int>(get()), h = static_cast<int>(get()), c = static_cast<int>(get());
    GridTile tile;
    tile.highlight = get() != 0;
    const auto title_size = static_cast<size_t>(get());
    tile.title.assign(take(title_size), title_size);
    tile.image = Image(w, h, c);
    std::memcpy(tile.image.pixels.data(), take(tile.image.pixels.size()), tile.image.pixels.size());
    tiles.push_back(std::move(tile));
  }
  return tiles;
}

// Takes the shares' items in turn (rank 0's first, rank 1's first, ...), a
// share that ran out dropping out of the turn: the order of a process alone,
// whose sample s is rank s % world's (s / world)-th.
template <class Take>
void in_turn(const std::vector<int64_t>& counts, const Take& take) {
  std::vector<int64_t> left = counts;
  for (bool more = true; more;) {
    more = false;
    for (size_t r = 0; r < left.size(); ++r)
      if (left[r] > 0) {
        take(r);
        more = --left[r] > 0 || more;
      }
  }
}

}  // namespace

// Whether a stage of the graph may end the run after any epoch (its schema
// provides "run_end": early_stopping). Which epoch is the last is then
// known only once it has ended.
static bool may_end_early(const StageDirectory& stages) {
  const ResolvedGraph* graph = stages.resolved_graph();
  if (!graph) return false;
  for (const auto& phase : graph->phases)
    for (const auto& stage : phase.stages)
      for (const auto& op : stage.ops)
        if (op.stage_type)
          for (const auto& role : op.stage_type->schema.roles())
            if (role == "run_end") return true;
  return false;
}

std::string prediction_title(const std::string& truth, const std::string& guess, double probability) {
  char text[16];
  std::snprintf(text, sizeof text, " %.2f", probability);
  return truth + " / " + guess + text;
}

Schema Predict::schema() {
  return Schema("predict", "the model's predictions: a CSV with top-5 probabilities and a PNG grid true/predicted")
      .param(StageRef("model", "the model stage", "model"))
      .param(Path("csv", "the CSV to write"))
      .param(Path("grid", "the PNG grid to write; \"\" = none").def(std::string("")))
      .param(Int("grid_images", "images in the grid (the recipe shows 9)").def(int64_t{9}).range(1, 1024))
      .param(Int("columns", "grid images per row").def(int64_t{9}).range(1, 64))
      .param(Int("every", "0: predict once, in the run's last epoch (the one it ends at, early stopping included); "
                          "N: also in every Nth epoch (the CSV then gets an epoch column and every pass's rows; the "
                          "grid shows the last pass)")
                 .def(int64_t{0})
                 .at_least(0));
}

Predict::Predict(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      csv_path_(init.params.get_string("csv")),
      grid_path_(init.params.get_string("grid")),
      grid_count_(init.params.get_int("grid_images")),
      columns_(init.params.get_int("columns")),
      every_(init.params.get_int("every")),
      compute_(init),
      job_(Job::of(init.run.job)),
      tensorboard_(TensorBoardWriter::of(init)),
      end_may_come_early_(may_end_early(init.stages)) {
  // Not the atomic writer's NAME.tmp.PID: rank 0 reads its spool while that
  // writer fills the merged file. Opened at the first pass, so that a run
  // failing at start-up leaves nothing beside the outputs.
  spool_path_ = csv_path_ + ".spool." + std::to_string(getpid());
}

Predict::~Predict() {
  if (spool_.is_open()) spool_.close();
  if (!pass_rows_.empty()) std::remove(spool_path_.c_str());
}

bool Predict::predicts_in(const EpochInfo& epoch) const {
  const ResolvedGraph* graph = stages_.resolved_graph();
  if (!graph) return true;
  int64_t total = 0;
  for (const auto& phase : graph->phases) total += phase.epochs;
  return epoch.epoch + 1 >= total || (every_ > 0 && (epoch.epoch + 1) % every_ == 0);
}

void Predict::begin_epoch(const EpochInfo& epoch) {
  // The pass starts at the epoch's first batch: a stage that ends the run
  // here (early stopping) does so after every stage's begin_epoch, and the
  // previous pass must then stay the last.
  predicting_ = predicts_in(epoch);
  epoch_tentative_ = !predicting_ && end_may_come_early_;
  predicting_ = predicting_ || epoch_tentative_;
  pass_started_ = false;
  if (!predicting_) return;
  epoch_beginning_ = epoch.epoch + 1;
  compute_.begin_epoch(find_model(stages_, model_name_).device().is_cpu());
}

void Predict::start_pass() {
  pass_started_ = true;
  current_epoch_ = epoch_beginning_;  // the pass's epoch: one that ends the run before its first batch has none
  // A pass made only in case its epoch was the last: a later epoch came, so it was not.
  if (pass_tentative_ && !pass_rows_.empty()) {
    spool_.close();
    std::error_code ec;
    std::filesystem::resize_file(spool_path_, tentative_start_, ec);
    if (ec) throw std::runtime_error(spool_path_ + ": cannot drop the previous epoch's predictions: " + ec.message());
    spool_.open(spool_path_, std::ios::app);
    if (!spool_) throw std::runtime_error(csv_path_ + ": cannot write beside it (" + spool_path_ + ")");
    pass_rows_.pop_back();
  }
  pass_tentative_ = epoch_tentative_;
  if (!spool_.is_open()) {
    std::filesystem::path target(csv_path_);
    std::error_code ec;
    if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
    spool_.open(spool_path_, std::ios::trunc);
    if (!spool_) throw std::runtime_error(csv_path_ + ": cannot write beside it (" + spool_path_ + ")");
  }
  spool_.flush();
  tentative_start_ = static_cast<uint64_t>(spool_.tellp());
  pass_rows_.push_back(0);
  tiles_.clear();
  predicted_ = correct_ = labelled_ = 0;
}

void Predict::process(Item& item, const Emit& emit) {
  if (!predicting_) {
    emit(item);
    return;
  }
  if (!pass_started_) start_pass();
  const Batch& batch = item.get<Batch>();
  batch.require_one_source("predict");
  ComputeThreads::Scope compute(compute_);
  ModelStage& model = find_model(stages_, model_name_);
  const auto& heads = model.task_heads();
  // A multi-task model: every head's from one backbone pass.
  std::vector<torch::Tensor> all = heads.empty() ? std::vector<torch::Tensor>{model.infer_logits(batch.images)}
                                                 : model.infer_all_logits(batch.images);
  torch::Tensor probabilities = torch::softmax(all[0], 1).cpu();
  const int64_t k = std::min<int64_t>(5, probabilities.size(1));
  auto [top_p, top_i] = probabilities.topk(k, 1);
  // Per extra head: its true class (-1: none), its guess and the guess's probability.
  std::vector<torch::Tensor> task_true, task_guess, task_prob;
  for (size_t h = 0; h < heads.size(); ++h) {
    auto [p, i] = torch::softmax(all[h + 1], 1).cpu().max(1);
    task_prob.push_back(p);
    task_guess.push_back(i);
    task_true.push_back(ModelStage::has_task(batch, heads[h].name) ? model.task_labels(batch, h).cpu()
                                                                   : torch::full({batch.size()}, -1, torch::kLong));
  }
  // True classes as the model's outputs, by name; every class by the model's names.
  torch::Tensor labels = model.labels(batch).cpu();
  auto class_name = [&](const Batch& b, int64_t c) { return model.output_name(c, b); };
  for (int64_t i = 0; i < batch.size(); ++i) {
    if (!batch.padding.empty() && batch.padding[i]) continue;  // a repeat evening out a job's shards
    const int64_t label = labels[i].item<int64_t>();
    const int64_t guess = top_i[i][0].item<int64_t>();
    std::string path = !batch.paths[i].empty() ? batch.paths[i] : "sample #" + std::to_string(batch.indices[i]);
    spool_ << csv_field(path) << "," << (label >= 0 ? csv_field(class_name(batch, label)) : "") << ","
           << csv_field(class_name(batch, guess));
    for (int64_t j = 0; j < 5; ++j) {
      if (j < k)
        spool_ << "," << csv_field(class_name(batch, top_i[i][j].item<int64_t>())) << "," << std::fixed
               << std::setprecision(6) << top_p[i][j].item<float>();
      else
        spool_ << ",,";
    }
    for (size_t h = 0; h < heads.size(); ++h) {
      const int64_t truth = task_true[h][i].item<int64_t>();
      spool_ << "," << (truth >= 0 ? csv_field(model.task_output_name(h, truth, batch)) : "") << ","
             << csv_field(model.task_output_name(h, task_guess[h][i].item<int64_t>(), batch)) << "," << std::fixed
             << std::setprecision(6) << task_prob[h][i].item<float>();
    }
    if (every_ > 0) spool_ << "," << current_epoch_;
    spool_ << "\n";
    ++pass_rows_.back();
    ++predicted_;
    if (label >= 0) {
      ++labelled_;
      correct_ += label == guess;
    }
    if (static_cast<int64_t>(tiles_.size()) < grid_count_ && !grid_path_.empty()) {
      GridTile tile;
      tile.image = batch_image(batch, i);
      tile.title = prediction_title(label >= 0 ? class_name(batch, label) : std::string("?"), class_name(batch, guess),
                                    top_p[i][0].item<float>());
      tile.highlight = label >= 0 && label != guess;
      tiles_.push_back(std::move(tile));
    }
  }
  if (!spool_) throw std::runtime_error(csv_path_ + ": cannot write beside it (" + spool_path_ + "): disk full?");
  emit(item);
}

void Predict::on_stop(bool interrupted) {
  if (spool_.is_open()) spool_.close();
  write_outputs(interrupted);
  if (!pass_rows_.empty()) std::remove(spool_path_.c_str());
  pass_rows_.clear();
  if (tensorboard_) tensorboard_->session_end(!interrupted);
}

void Predict::write_outputs(bool interrupted) {
  // Every rank's spool name, rows per pass and grid tiles; the counts over the job.
  std::vector<std::string> spools = {spool_path_};
  std::vector<std::vector<int64_t>> rows = {pass_rows_};
  std::vector<GridTile> tiles = tiles_;
  if (job_) {
    torch::Tensor counts = torch::tensor({predicted_, correct_, labelled_}, torch::kLong);
    job_->allreduce_sum({counts}, "the prediction counts");
    predicted_ = counts[0].item<int64_t>();
    correct_ = counts[1].item<int64_t>();
    labelled_ = counts[2].item<int64_t>();
    std::string mine(reinterpret_cast<const char*>(pass_rows_.data()), pass_rows_.size() * sizeof(int64_t));
    spools = job_->allgather(spool_path_, "the prediction files");
    const std::vector<std::string> row_counts = job_->allgather(mine, "the prediction row counts");
    std::string my_tiles;
    for (const auto& tile : tiles_) put_tile(my_tiles, tile);
    const std::vector<std::string> all_tiles = job_->allgather(my_tiles, "the prediction grid");
    rows.clear();
    std::vector<std::vector<GridTile>> shares;
    std::vector<int64_t> tile_counts;
    for (size_t r = 0; r < row_counts.size(); ++r) {
      rows.emplace_back(row_counts[r].size() / sizeof(int64_t));
      std::memcpy(rows.back().data(), row_counts[r].data(), rows.back().size() * sizeof(int64_t));
      shares.push_back(get_tiles(all_tiles[r]));
      tile_counts.push_back(static_cast<int64_t>(shares.back().size()));
    }
    std::vector<size_t> next(shares.size(), 0);
    tiles.clear();
    in_turn(tile_counts, [&](size_t r) { tiles.push_back(std::move(shares[r][next[r]++])); });
    if (static_cast<int64_t>(tiles.size()) > grid_count_) tiles.resize(static_cast<size_t>(grid_count_));
  }
  const bool writes = !job_ || job_->rank() == 0;
  if (writes && !interrupted) {
    if (pass_rows_.empty()) {
      spdlog::warn("predict: the run ended before the epoch it predicts in; {} not written", csv_path_);
    } else {
      std::vector<std::unique_ptr<std::ifstream>> in;
      for (size_t r = 0; r < spools.size(); ++r) {
        in.push_back(std::make_unique<std::ifstream>(spools[r]));
        if (!*in.back())
          throw std::runtime_error(csv_path_ + ": cannot read rank " + std::to_string(r) + "'s predictions " +
                                   spools[r] + " (a job's ranks must share the folder predictions go to)");
      }
      write_file_atomically(csv_path_, [&](std::ostream& out) {
        out << "path,true_class,predicted_class,top1_class,top1_prob,top2_class,top2_prob,top3_class,top3_prob,"
               "top4_class,top4_prob,top5_class,top5_prob";
        for (const auto& head : find_model(stages_, model_name_).task_heads())  // a multi-task model's other heads
          out << "," << head.name << "_true," << head.name << "_predicted," << head.name << "_prob";
        out << (every_ > 0 ? ",epoch" : "") << "\n";
        std::string line;
        for (size_t pass = 0; pass < pass_rows_.size(); ++pass) {
          std::vector<int64_t> counts;
          for (const auto& share : rows) counts.push_back(pass < share.size() ? share[pass] : 0);
          in_turn(counts, [&](size_t r) {
            if (!std::getline(*in[r], line))
              throw std::runtime_error("cannot read back rank " + std::to_string(r) + "'s predictions " + spools[r]);
            out << line << "\n";
          });
        }
      });
      if (!tiles.empty()) {
        int tile_px = std::max(96, std::max(tiles.front().image.width, tiles.front().image.height));
        const Png png =
            write_image_grid(grid_path_, tiles, static_cast<int>(std::min<int64_t>(columns_, tiles.size())), tile_px);
        if (tensorboard_) tensorboard_->image("images/" + name_, current_epoch_, png.bytes, png.width, png.height);
      }
    }
  }
  if (job_) job_->barrier("the merged predictions");  // rank 0 has read every share
}

void Predict::report(Report& report) const {
  report.set("predicted", static_cast<double>(predicted_));
  if (labelled_) report.set("predict_top1", static_cast<double>(correct_) / labelled_);
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Predict);

}  // namespace flowrun::stages

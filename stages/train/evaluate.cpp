#include "stages/train/evaluate.h"

#include <cstdio>

#include "pipeline/atomic_file.h"
#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/report/csv.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

Schema Evaluate::schema() {
  return Schema("evaluate", "evaluates the model over the whole flow: loss, top-1, top-5, per class, confusion matrix")
      .param(StageRef("model", "the model stage", "model"))
      .param(String("prefix", "names of the reported figures: PREFIX_loss, PREFIX_top1, ...").def(std::string("val")));
}

Evaluate::Evaluate(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      prefix_(init.params.get_string("prefix")),
      run_dir_(init.run.job.writes_files() ? init.run.run_dir : ""),
      compute_(init),
      job_(Job::of(init.run.job)),
      metrics_(MetricsLog::of(init)) {}

void Evaluate::begin_epoch(const EpochInfo&) {
  model_ = &find_model(stages_, model_name_);
  class_names_.clear();  // the model's, at this epoch's first batch (training may have named them)
  compute_.begin_epoch(model_->device().is_cpu());
  const int64_t classes = model_->classes();
  // Sums on the model's device, read once at the end of the epoch.
  const torch::Device device = model_->device();
  loss_sum_ = torch::zeros({}, torch::TensorOptions(torch::kDouble).device(device));
  top1_ = torch::zeros({}, torch::TensorOptions(torch::kLong).device(device));
  top5_ = torch::zeros({}, torch::TensorOptions(torch::kLong).device(device));
  confusion_ = torch::zeros({classes * classes}, torch::TensorOptions(torch::kLong).device(device));
  seen_ = 0;
}

void Evaluate::process(Item& item, const Emit& emit) {
  Batch& batch = item.get<Batch>();
  batch.require_one_source("evaluate");
  ComputeThreads::Scope compute(compute_);
  torch::Tensor logits = model_->infer_logits(batch.images);
  torch::Tensor labels = model_->labels(batch);  // the source's classes as the model's outputs, by name
  if (!batch.padding.empty()) {
    // Repeats that only even out a job's shards count once, on the rank that has the original.
    std::vector<int64_t> real;
    for (size_t i = 0; i < batch.padding.size(); ++i)
      if (!batch.padding[i]) real.push_back(static_cast<int64_t>(i));
    torch::Tensor keep = torch::tensor(real, torch::kLong).to(logits.device());
    logits = logits.index_select(0, keep);
    labels = labels.index_select(0, keep);
  }
  const int64_t classes = logits.size(1);
  loss_sum_ += torch::nn::functional::cross_entropy(
                   logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .to(torch::kDouble);
  const int64_t k = std::min<int64_t>(5, classes);
  torch::Tensor topk = std::get<1>(logits.topk(k, 1));
  torch::Tensor hits = topk.eq(labels.unsqueeze(1));
  top1_ += hits.select(1, 0).sum();
  top5_ += hits.any(1).sum();
  torch::Tensor predicted = topk.select(1, 0);
  confusion_ += torch::bincount(labels * classes + predicted, {}, classes * classes);
  seen_ += logits.size(0);
  if (class_names_.empty()) {
    // The confusion matrix names the model's classes (a source may lack some).
    class_names_.resize(static_cast<size_t>(classes));
    for (int64_t c = 0; c < classes; ++c) class_names_[c] = model_->output_name(c, batch);
  }
  emit(item);
}

Evaluate::Sums Evaluate::global_sums() const {
  Sums sums{loss_sum_.clone(), top1_.clone(), top5_.clone(), confusion_.clone(),
            torch::full({}, seen_, torch::TensorOptions(torch::kLong).device(top1_.device()))};
  if (job_) job_->allreduce_sum({sums.loss, sums.top1, sums.top5, sums.confusion, sums.seen},
                                "the evaluation sums of '" + name_ + "'");
  return sums;
}

void Evaluate::end_epoch(const EpochInfo& epoch) {
  // Over every rank of a job: each evaluated its shard, the sums are all-reduced.
  const Sums sums = global_sums();
  const int64_t seen = sums.seen.item<int64_t>();
  if (!seen) return;
  EvaluationResult r;
  r.samples = seen;
  r.loss = sums.loss.item<double>() / seen;
  r.top1 = static_cast<double>(sums.top1.item<int64_t>()) / seen;
  r.top5 = static_cast<double>(sums.top5.item<int64_t>()) / seen;
  r.classes = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(sums.confusion.numel()))));
  torch::Tensor confusion = sums.confusion.cpu().contiguous();
  r.confusion.assign(confusion.data_ptr<int64_t>(), confusion.data_ptr<int64_t>() + confusion.numel());
  for (int64_t c = 0; c < r.classes; ++c) {
    int64_t total = 0;
    for (int64_t p = 0; p < r.classes; ++p) total += r.confusion[c * r.classes + p];
    r.per_class.push_back(total ? static_cast<double>(r.confusion[c * r.classes + c]) / total : 0.0);
  }
  last_ = r;
  metrics_->record(epoch, {{prefix_ + "_loss", r.loss}, {prefix_ + "_top1", r.top1}, {prefix_ + "_top5", r.top5}});
  if (!run_dir_.empty()) write_confusion();
  if (job_ && job_->rank() != 0) return;  // the epoch line once per job
  std::fprintf(stdout, "epoch %d (%s %d/%d) %s: %s_loss %.4f %s_top1 %.4f %s_top5 %.4f (%lld samples)\n",
               epoch.epoch + 1, epoch.phase.c_str(), epoch.epoch_in_phase + 1, epoch.epochs_in_phase, name_.c_str(),
               prefix_.c_str(), r.loss, prefix_.c_str(), r.top1, prefix_.c_str(), r.top5, static_cast<long long>(r.samples));
  std::fflush(stdout);  // a result: on stdout, as the train stage's epoch line
}

void Evaluate::write_confusion() const {
  auto name = [&](int64_t c) {
    return c < static_cast<int64_t>(class_names_.size()) ? class_names_[c] : std::to_string(c);
  };
  write_file_atomically(run_dir_ + "/" + prefix_ + "_confusion.csv", [&](std::ostream& out) {
    out << "true\\predicted";
    for (int64_t c = 0; c < last_.classes; ++c) out << "," << csv_field(name(c));
    out << ",accuracy\n";
    for (int64_t t = 0; t < last_.classes; ++t) {
      out << csv_field(name(t));
      for (int64_t p = 0; p < last_.classes; ++p) out << "," << last_.confusion[t * last_.classes + p];
      out << "," << last_.per_class[t] << "\n";
    }
  });
}

bool Evaluate::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  // A job's rank 0 keeps every rank's sums so far (the others restart theirs from 0).
  const Sums sums = loss_sum_.defined() ? global_sums() : Sums{};
  const int64_t seen = sums.seen.defined() ? sums.seen.item<int64_t>() : 0;
  archive.write("seen", c10::IValue(seen));
  if (seen) {
    archive.write("loss_sum", sums.loss.cpu());
    archive.write("top1", sums.top1.cpu());
    archive.write("top5", sums.top5.cpu());
    archive.write("confusion", sums.confusion.cpu());
  }
  archive.write("last_samples", c10::IValue(last_.samples));
  archive.write("last_loss", c10::IValue(last_.loss));
  archive.write("last_top1", c10::IValue(last_.top1));
  archive.write("last_top5", c10::IValue(last_.top5));
  archive.write("last_classes", c10::IValue(last_.classes));
  archive.write("last_per_class", torch::tensor(last_.per_class, torch::kDouble));
  archive.write("last_confusion", torch::tensor(last_.confusion, torch::kLong));
  write_lines(archive, "class_names", class_names_);
  out = archive_bytes(archive);
  return true;
}

void Evaluate::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "evaluate '" + name_ + "'");
  seen_ = read_int(archive, "seen");
  if (seen_) {
    archive.read("loss_sum", loss_sum_);
    archive.read("top1", top1_);
    archive.read("top5", top5_);
    archive.read("confusion", confusion_);
    const torch::Device device = model_ ? model_->device() : torch::Device(torch::kCPU);
    for (torch::Tensor* t : {&loss_sum_, &top1_, &top5_, &confusion_}) *t = t->to(device);
    if (job_ && job_->rank() != 0) {  // rank 0 holds the job's sums so far
      for (torch::Tensor* t : {&loss_sum_, &top1_, &top5_, &confusion_}) t->zero_();
      seen_ = 0;
    }
  }
  last_.samples = read_int(archive, "last_samples");
  last_.loss = read_double(archive, "last_loss");
  last_.top1 = read_double(archive, "last_top1");
  last_.top5 = read_double(archive, "last_top5");
  last_.classes = read_int(archive, "last_classes");
  torch::Tensor per_class, confusion;
  archive.read("last_per_class", per_class);
  archive.read("last_confusion", confusion);
  per_class = per_class.to(torch::kDouble).contiguous();
  confusion = confusion.to(torch::kLong).contiguous();
  if (confusion.numel() != last_.classes * last_.classes || per_class.numel() != (last_.samples ? last_.classes : 0))
    throw std::runtime_error("saved state of evaluate '" + name_ + "' is inconsistent");
  last_.per_class.assign(per_class.data_ptr<double>(), per_class.data_ptr<double>() + per_class.numel());
  last_.confusion.assign(confusion.data_ptr<int64_t>(), confusion.data_ptr<int64_t>() + confusion.numel());
  class_names_ = read_lines(archive, "class_names");
}

void Evaluate::report(Report& report) const {
  report.set(prefix_ + "_loss", last_.loss);
  report.set(prefix_ + "_top1", last_.top1);
  report.set(prefix_ + "_top5", last_.top5);
  report.set(prefix_ + "_samples", static_cast<double>(last_.samples));
  if (model_) report.set("bf16", model_->bf16() ? 1 : 0);  // the stage table's `prec` column
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Evaluate);

}  // namespace flowrun::stages

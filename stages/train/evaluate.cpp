#include "stages/train/evaluate.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <map>

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
  compute_.begin_epoch(model_->device().is_cpu());
  evaluated_ = 0;
  // Sums on the model's device, read once at the end of the epoch.
  const torch::Device device = model_->device();
  const auto& tasks = model_->task_heads();
  heads_.resize(1 + tasks.size());
  for (size_t h = 0; h < heads_.size(); ++h) {
    Head& head = heads_[h];
    head.task = h ? tasks[h - 1].name : "";
    head.prefix = h ? prefix_ + "_" + head.task : prefix_;
    head.classes = h ? tasks[h - 1].classes : model_->classes();
    head.class_names.clear();  // the model's, at this epoch's first batch (training may have named them)
    head.loss_sum = torch::zeros({}, torch::TensorOptions(torch::kDouble).device(device));
    head.top1 = torch::zeros({}, torch::TensorOptions(torch::kLong).device(device));
    head.top5 = torch::zeros({}, torch::TensorOptions(torch::kLong).device(device));
    head.confusion = torch::zeros({head.classes * head.classes}, torch::TensorOptions(torch::kLong).device(device));
    head.seen = 0;
    head.scored = h == 0;
  }
}

void Evaluate::add(Head& head, torch::Tensor logits, torch::Tensor labels, const std::vector<uint8_t>& padding,
                   const torch::Tensor& host_labels) {
  // Left out: repeats that only even out a job's shards (they count once, on
  // the rank that has the original), and samples without the head's label.
  std::vector<int64_t> real;
  bool all = true;
  const int64_t* host = host_labels.defined() ? host_labels.data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const bool keep = (padding.empty() || !padding[static_cast<size_t>(i)]) && (!host || host[i] >= 0);
    if (keep) real.push_back(i);
    all &= keep;
  }
  if (!all) {
    torch::Tensor keep = torch::tensor(real, torch::kLong).to(logits.device());
    logits = logits.index_select(0, keep);
    labels = labels.index_select(0, keep);
  }
  if (logits.size(0) == 0) return;
  const int64_t classes = logits.size(1);
  head.loss_sum += torch::nn::functional::cross_entropy(
                       logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                       .to(torch::kDouble);
  const int64_t k = std::min<int64_t>(5, classes);
  torch::Tensor topk = std::get<1>(logits.topk(k, 1));
  torch::Tensor hits = topk.eq(labels.unsqueeze(1));
  head.top1 += hits.select(1, 0).sum();
  head.top5 += hits.any(1).sum();
  torch::Tensor predicted = topk.select(1, 0);
  head.confusion += torch::bincount(labels * classes + predicted, {}, classes * classes);
  head.seen += logits.size(0);
}

void Evaluate::process(Item& item, const Emit& emit) {
  Batch& batch = item.get<Batch>();
  batch.require_one_source("evaluate");
  ComputeThreads::Scope compute(compute_);
  evaluated_ += batch.images.size(0);
  const bool multitask = heads_.size() > 1;
  std::vector<torch::Tensor> logits = multitask ? model_->infer_all_logits(batch.images)
                                                : std::vector<torch::Tensor>{model_->infer_logits(batch.images)};
  torch::Tensor labels = model_->labels(batch);  // the source's classes as the model's outputs, by name
  // A sample may lack the classes' label (a multi-task list's, a semi-supervised
  // split's): left out of their figures.
  const torch::Tensor host_classes =
      batch.labels.defined() ? batch.labels.to(torch::kCPU, torch::kLong).contiguous() : torch::Tensor();
  add(heads_[0], logits[0], labels, batch.padding, host_classes);
  for (size_t h = 1; h < heads_.size(); ++h) {
    Head& head = heads_[h];
    if (!ModelStage::has_task(batch, head.task)) {
      if (!warned_unlabelled_ && (!job_ || job_->rank() == 0))
        spdlog::warn("{}: {} gives no labels for head '{}' of model '{}': its figures are left out", name_,
                     batch.dataset ? batch.dataset->name : std::string("the flow"), head.task, model_name_);
      warned_unlabelled_ = true;
      continue;
    }
    head.scored = true;
    const torch::Tensor host = batch.task_labels.select(1, batch.task_column(head.task)).contiguous();
    add(head, logits[h], model_->task_labels(batch, h - 1), batch.padding, host);
  }
  for (size_t h = 0; h < heads_.size(); ++h) {
    Head& head = heads_[h];
    if (!head.class_names.empty() || !head.scored) continue;
    // The confusion matrix names the model's classes (a source may lack some).
    head.class_names.resize(static_cast<size_t>(head.classes));
    for (int64_t c = 0; c < head.classes; ++c)
      head.class_names[c] = h ? model_->task_output_name(h - 1, c, batch) : model_->output_name(c, batch);
  }
  emit(item);
}

Evaluate::Sums Evaluate::global_sums(const Head& head) const {
  Sums sums{head.loss_sum.clone(), head.top1.clone(), head.top5.clone(), head.confusion.clone(),
            torch::full({}, head.seen, torch::TensorOptions(torch::kLong).device(head.top1.device()))};
  if (job_) job_->allreduce_sum({sums.loss, sums.top1, sums.top5, sums.confusion, sums.seen},
                                "the evaluation sums of '" + name_ + "'");
  return sums;
}

void Evaluate::end_epoch(const EpochInfo& epoch) {
  std::map<std::string, double> figures;
  std::string line, samples;  // the epoch line's figures; samples scored per head
  for (Head& head : heads_) {
    // Over every rank of a job: each evaluated its shard, the sums are all-reduced.
    const Sums sums = global_sums(head);
    const int64_t seen = sums.seen.item<int64_t>();
    if (!seen) continue;
    EvaluationResult r;
    r.samples = seen;
    r.loss = sums.loss.item<double>() / seen;
    r.top1 = static_cast<double>(sums.top1.item<int64_t>()) / seen;
    r.top5 = static_cast<double>(sums.top5.item<int64_t>()) / seen;
    r.classes = head.classes;
    torch::Tensor confusion = sums.confusion.cpu().contiguous();
    r.confusion.assign(confusion.data_ptr<int64_t>(), confusion.data_ptr<int64_t>() + confusion.numel());
    for (int64_t c = 0; c < r.classes; ++c) {
      int64_t total = 0;
      for (int64_t p = 0; p < r.classes; ++p) total += r.confusion[c * r.classes + p];
      r.per_class.push_back(total ? static_cast<double>(r.confusion[c * r.classes + c]) / total : 0.0);
    }
    head.last = r;
    figures[head.prefix + "_loss"] = r.loss;
    figures[head.prefix + "_top1"] = r.top1;
    figures[head.prefix + "_top5"] = r.top5;
    char text[256];
    std::snprintf(text, sizeof text, "%s%s_loss %.4f %s_top1 %.4f %s_top5 %.4f", line.empty() ? "" : " ",
                  head.prefix.c_str(), r.loss, head.prefix.c_str(), r.top1, head.prefix.c_str(), r.top5);
    line += text;
    samples += (samples.empty() ? "" : ", ") + std::to_string(seen) + (&head == &heads_.front() ? "" : " " + head.task);
  }
  if (figures.empty()) {
    // Samples came, none labelled for any head: say so rather than report nothing.
    if (evaluated_ > 0 && !warned_no_labels_ && (!job_ || job_->rank() == 0))
      spdlog::warn("{}: epoch {}: none of its {} samples has a label for model '{}': nothing to score", name_,
                   epoch.epoch + 1, evaluated_, model_name_);
    warned_no_labels_ |= evaluated_ > 0;
    return;
  }
  metrics_->record(epoch, figures);
  if (!run_dir_.empty()) write_confusion();
  if (job_ && job_->rank() != 0) return;  // the epoch line once per job
  std::fprintf(stdout, "epoch %d (%s %d/%d) %s: %s (%s samples)\n", epoch.epoch + 1, epoch.phase.c_str(),
               epoch.epoch_in_phase + 1, epoch.epochs_in_phase, name_.c_str(), line.c_str(), samples.c_str());
  std::fflush(stdout);  // a result: on stdout, as the train stage's epoch line
}

void Evaluate::write_confusion() const {
  for (const Head& head : heads_)
    if (head.last.samples) write_confusion(head);
}

void Evaluate::write_confusion(const Head& head) const {
  const EvaluationResult& last = head.last;
  auto name = [&](int64_t c) {
    return c < static_cast<int64_t>(head.class_names.size()) ? head.class_names[c] : std::to_string(c);
  };
  write_file_atomically(run_dir_ + "/" + head.prefix + "_confusion.csv", [&](std::ostream& out) {
    out << "true\\predicted";
    for (int64_t c = 0; c < last.classes; ++c) out << "," << csv_field(name(c));
    out << ",accuracy\n";
    for (int64_t t = 0; t < last.classes; ++t) {
      out << csv_field(name(t));
      for (int64_t p = 0; p < last.classes; ++p) out << "," << last.confusion[t * last.classes + p];
      out << "," << last.per_class[t] << "\n";
    }
  });
}

bool Evaluate::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  archive.write("heads", c10::IValue(static_cast<int64_t>(heads_.size())));
  for (size_t h = 0; h < heads_.size(); ++h) {
    const Head& head = heads_[h];
    const std::string k = h ? "task" + std::to_string(h) + "_" : "";  // the classes' keep the keys of before
    // A job's rank 0 keeps every rank's sums so far (the others restart theirs from 0).
    const Sums sums = head.loss_sum.defined() ? global_sums(head) : Sums{};
    const int64_t seen = sums.seen.defined() ? sums.seen.item<int64_t>() : 0;
    archive.write(k + "seen", c10::IValue(seen));
    if (seen) {
      archive.write(k + "loss_sum", sums.loss.cpu());
      archive.write(k + "top1", sums.top1.cpu());
      archive.write(k + "top5", sums.top5.cpu());
      archive.write(k + "confusion", sums.confusion.cpu());
    }
    const EvaluationResult& last = head.last;
    archive.write(k + "last_samples", c10::IValue(last.samples));
    archive.write(k + "last_loss", c10::IValue(last.loss));
    archive.write(k + "last_top1", c10::IValue(last.top1));
    archive.write(k + "last_top5", c10::IValue(last.top5));
    archive.write(k + "last_classes", c10::IValue(last.classes));
    archive.write(k + "last_per_class", torch::tensor(last.per_class, torch::kDouble));
    archive.write(k + "last_confusion", torch::tensor(last.confusion, torch::kLong));
    write_lines(archive, k + "class_names", head.class_names);
    write_lines(archive, k + "task", {head.task});
  }
  out = archive_bytes(archive);
  return true;
}

void Evaluate::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "evaluate '" + name_ + "'");
  c10::IValue count;
  const size_t heads = archive.try_read("heads", count) ? static_cast<size_t>(count.toInt()) : 1;
  if (heads != heads_.size() && model_)
    throw std::runtime_error("saved state of evaluate '" + name_ + "' has " + std::to_string(heads) +
                             " heads, the model " + std::to_string(heads_.size()));
  heads_.resize(heads);
  for (size_t h = 0; h < heads; ++h) {
    Head& head = heads_[h];
    const std::string k = h ? "task" + std::to_string(h) + "_" : "";
    head.seen = read_int(archive, k + "seen");
    if (head.seen) {
      archive.read(k + "loss_sum", head.loss_sum);
      archive.read(k + "top1", head.top1);
      archive.read(k + "top5", head.top5);
      archive.read(k + "confusion", head.confusion);
      const torch::Device device = model_ ? model_->device() : torch::Device(torch::kCPU);
      for (torch::Tensor* t : {&head.loss_sum, &head.top1, &head.top5, &head.confusion}) *t = t->to(device);
      if (job_ && job_->rank() != 0) {  // rank 0 holds the job's sums so far
        for (torch::Tensor* t : {&head.loss_sum, &head.top1, &head.top5, &head.confusion}) t->zero_();
        head.seen = 0;
      }
    }
    EvaluationResult& last = head.last;
    last.samples = read_int(archive, k + "last_samples");
    last.loss = read_double(archive, k + "last_loss");
    last.top1 = read_double(archive, k + "last_top1");
    last.top5 = read_double(archive, k + "last_top5");
    last.classes = read_int(archive, k + "last_classes");
    torch::Tensor per_class, confusion;
    archive.read(k + "last_per_class", per_class);
    archive.read(k + "last_confusion", confusion);
    per_class = per_class.to(torch::kDouble).contiguous();
    confusion = confusion.to(torch::kLong).contiguous();
    if (confusion.numel() != last.classes * last.classes || per_class.numel() != (last.samples ? last.classes : 0))
      throw std::runtime_error("saved state of evaluate '" + name_ + "' is inconsistent");
    last.per_class.assign(per_class.data_ptr<double>(), per_class.data_ptr<double>() + per_class.numel());
    last.confusion.assign(confusion.data_ptr<int64_t>(), confusion.data_ptr<int64_t>() + confusion.numel());
    head.class_names = read_lines(archive, k + "class_names");
    if (h) {
      // A finished run resumed runs no epoch: its figures keep their names.
      const std::vector<std::string> task = read_lines(archive, k + "task");
      head.task = task.empty() ? "" : task.front();
      head.prefix = prefix_ + "_" + head.task;
      head.classes = last.classes;
    }
  }
}

void Evaluate::report(Report& report) const {
  for (size_t h = 0; h < heads_.size(); ++h) {
    const Head& head = heads_[h];
    // A head no sample was labelled for has no figures (not zeros that
    // best_weights or early_stopping would read as a result).
    if (!head.last.samples) continue;
    const std::string prefix = h ? head.prefix : prefix_;
    report.set(prefix + "_loss", head.last.loss);
    report.set(prefix + "_top1", head.last.top1);
    report.set(prefix + "_top5", head.last.top5);
    report.set(prefix + "_samples", static_cast<double>(head.last.samples));
  }
  if (model_) report.set("bf16", model_->bf16() ? 1 : 0);  // the stage table's `prec` column
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Evaluate);

}  // namespace flowrun::stages

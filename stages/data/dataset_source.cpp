#include "stages/data/dataset_source.h"

namespace flowrun::stages {

ParamSpec DatasetSource::sampler_param() {
  // A stage reference, checked with the graph (a name that is no stage, or
  // a stage with an op that is no sampler op, is an error at its place),
  // but "" by default: a source without a sampler takes every sample.
  ParamSpec spec = String("sampler", "name of the sampler stage that picks and orders each epoch's samples; \"\" = all, in order")
                       .def(std::string(""));
  spec.role = "sampler";
  spec.role_optional = true;
  return spec;
}

DatasetSource::DatasetSource(const StageInit& init, std::string dataset_name)
    : stages_(init.stages),
      sampler_(init.params.get_string("sampler")),
      dataset_name_(std::move(dataset_name)),
      job_(init.run.job) {}

void DatasetSource::set_dataset(std::vector<int64_t> labels, std::vector<std::string> class_names,
                                std::vector<TaskLabels> tasks) {
  labels_ = std::move(labels);
  class_names_ = std::move(class_names);
  tasks_ = std::move(tasks);
}

void DatasetSource::begin_epoch(const EpochInfo& epoch) {
  SampleSet dataset;
  dataset.labels = labels_;
  dataset.class_names = class_names_;
  dataset.tasks = tasks_;
  epoch_ = sample_epoch(stages_, sampler_, std::move(dataset), epoch.epoch);
  // In a job every rank takes its share, unless the sampler already cut one.
  if (job_.distributed() && !epoch_.sharded) shard_for_rank(epoch_, job_.rank, job_.world_size);
  auto info = std::make_shared<DatasetInfo>();
  info->name = dataset_name_;
  info->class_names = epoch_.class_names;
  for (const TaskLabels& task : epoch_.tasks) info->tasks.push_back({task.name, task.class_names});
  info_ = std::move(info);
  position_ = 0;
}

bool DatasetSource::next(Item& item) {
  if (position_ >= epoch_.indices.size()) return false;
  Sample sample;
  sample.padding = position_ >= epoch_.indices.size() - static_cast<size_t>(epoch_.padded);
  sample.index = epoch_.indices[position_++];
  sample.label = epoch_.labels[sample.index];
  for (const TaskLabels& task : epoch_.tasks) sample.task_labels.push_back(task.labels[sample.index]);
  sample.dataset = info_;
  sample.epoch_size = static_cast<int64_t>(epoch_.indices.size());
  fill(sample, sample.index);
  item.set(std::move(sample));
  ++visited_;
  return true;
}

uint64_t DatasetSource::skip(uint64_t count) {
  uint64_t skipped = std::min<uint64_t>(count, epoch_.indices.size() - position_);
  position_ += skipped;
  return skipped;
}

void DatasetSource::report(Report& report) const {
  report.set("dataset_size", static_cast<double>(labels_.size()));
  report.set("classes", static_cast<double>(class_names_.size()));
  report.set("samples_visited", static_cast<double>(visited_));
}

}  // namespace flowrun::stages

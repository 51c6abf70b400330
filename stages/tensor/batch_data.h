// A batch of samples as tensors: what the batch stage emits and the model,
// to_device and show_batch stages take.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "stages/data/sample.h"

namespace flowrun::stages {

struct Batch {
  at::Tensor images;                 // [N, C, H, W] float32 (pinned when CUDA is available)
  at::Tensor labels;                 // [N] int64
  // [N, T] int64: the labels of the dataset's T extra tasks (dataset->tasks,
  // multi-task), -1 where a sample has none; undefined when T = 0.
  at::Tensor task_labels;
  // The column of task_labels that holds task `task`'s labels; -1 when the
  // batch's source does not label that task.
  int64_t task_column(const std::string& task) const {
    if (!dataset || !task_labels.defined()) return -1;
    for (size_t c = 0; c < dataset->tasks.size(); ++c)
      if (dataset->tasks[c].name == task) return static_cast<int64_t>(c);
    return -1;
  }
  std::vector<int64_t> indices;      // dataset index of every sample
  std::vector<std::string> paths;    // file of every sample ("" for in-memory sources)
  std::vector<uint8_t> padding;      // per sample, 1 = a repeat evening out a job's shards; empty = none
  // The samples that are not padding (all of them, mostly).
  int64_t real_size() const {
    int64_t n = size();
    for (uint8_t p : padding) n -= p;
    return n;
  }
  // A flow that joins sources (`flow source + target -> ...`, domain
  // adaptation): the batch holds domain_counts[0] samples of the first
  // source, then domain_counts[1] of the second, and so on. Empty: all
  // samples come from one source. A second source's labels may be -1
  // (unlabelled); training never reads them.
  std::vector<int64_t> domain_counts;
  int64_t domain_size(size_t domain) const {
    if (domain_counts.empty()) return domain == 0 ? size() : 0;
    return domain < domain_counts.size() ? domain_counts[domain] : 0;
  }
  std::shared_ptr<const DatasetInfo> dataset;
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};  // the normalization applied
  int64_t number = 0;                // position of the batch in its epoch
  int64_t batches_in_epoch = 0;      // expected batches this epoch (0 = unknown), for schedules
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  // For stages that take one dataset (evaluate, predict, features, adabn):
  // a joined flow's batch would mix the domains' samples and labels.
  void require_one_source(const std::string& stage) const {
    if (domain_counts.size() > 1)
      throw std::runtime_error("the batch joins " + std::to_string(domain_counts.size()) + " sources ('flow A + B -> "
                               "...'), and " + stage + " takes one dataset: give it a flow of its own");
  }
};

}  // namespace flowrun::stages

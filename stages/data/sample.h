// One sample on its way through the data path. Sources fill index, label and
// path (or pixels); decode fills `image`; augmentations change `image`;
// normalize fills `tensor`. Batch collates samples into a Batch.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stages/image/image.h"

namespace flowrun::stages {

// What normalize decided for a sample: value = table[channel][byte]. When the
// conversion is left to the batch stage, the batch writes these values
// straight into its tensor (one pass instead of two).
struct Normalization {
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};
  std::array<std::array<float, 256>, 3> table{};
  // Writes image (HWC, 1 or 3 channels) as normalized CHW floats to out.
  void apply(const Image& image, float* out) const;
};

// An extra task's classes (multi-task: a head of its own), see TaskLabels.
struct TaskClasses {
  std::string name;
  std::vector<std::string> class_names;
};

// What a source knows of its dataset, shared by all its samples.
struct DatasetInfo {
  std::string name;                      // the root folder or file set, for messages
  std::vector<std::string> class_names;  // after any relabelling by a sampler
  std::vector<TaskClasses> tasks;        // extra labellings, in Sample::task_labels' order; usually none
};

struct Sample {
  int64_t index = -1;  // position in the source's dataset: the key of per-sample randomness
  int64_t label = -1;
  std::vector<int64_t> task_labels;  // one per dataset->tasks (-1 = none for that task); empty without tasks
  int64_t epoch_size = 0;  // samples the source visits this epoch (0 = unknown)
  // A repeat that only evens out the shards of a job's ranks (as
  // DistributedSampler pads): trained on, but not counted by evaluation.
  bool padding = false;
  std::string path;    // the file, for file sources ("" otherwise)
  std::shared_ptr<const DatasetInfo> dataset;
  Image image;         // 8-bit RGB once decoded
  FloatImage tensor;   // normalized CHW float, once normalized (unless left to the batch)
  std::shared_ptr<const Normalization> normalization;  // set by normalize

  // "path" or "sample #index", for messages.
  std::string describe() const { return path.empty() ? "sample #" + std::to_string(index) : path; }
};

}  // namespace flowrun::stages

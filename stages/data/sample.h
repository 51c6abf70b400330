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

// What a source knows of its dataset, shared by all its samples.
struct DatasetInfo {
  std::string name;                      // the root folder or file set, for messages
  std::vector<std::string> class_names;  // after any relabelling by a sampler
};

struct Sample {
  int64_t index = -1;  // position in the source's dataset: the key of per-sample randomness
  int64_t label = -1;
  std::string path;    // the file, for file sources ("" otherwise)
  std::shared_ptr<const DatasetInfo> dataset;
  Image image;         // 8-bit RGB once decoded
  FloatImage tensor;   // normalized CHW float, once normalized
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};  // what normalize used (to undo it for display)

  // "path" or "sample #index", for messages.
  std::string describe() const { return path.empty() ? "sample #" + std::to_string(index) : path; }
};

}  // namespace flowrun::stages

// One image of a batch back as 8-bit pixels (normalization undone), for
// pictures: show_batch's preview and predict's grid.
#pragma once

#include "stages/image/image.h"
#include "stages/tensor/batch_data.h"

namespace flowrun::stages {

Image batch_image(const Batch& batch, int64_t index);

// The class name of `label` (its number when the dataset has no names).
std::string class_name(const Batch& batch, int64_t label);

}  // namespace flowrun::stages

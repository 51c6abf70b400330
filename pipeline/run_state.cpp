#include "pipeline/run_state.h"

namespace flowrun {

std::string RunPosition::describe() const {
  std::string text = "epoch " + std::to_string(epoch + 1);
  if (!at_epoch_start()) text += ", flow " + std::to_string(flow + 1) + ", item " + std::to_string(items);
  return text;
}

}  // namespace flowrun

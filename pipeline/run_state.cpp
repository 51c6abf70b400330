#include "pipeline/run_state.h"

#include <charconv>

namespace flowrun {

std::string RunPosition::describe() const {
  std::string text = "epoch " + std::to_string(epoch + 1);
  if (!at_epoch_start()) text += ", flow " + std::to_string(flow + 1) + ", item " + std::to_string(items);
  return text;
}

std::optional<uint64_t> parse_saved_count(std::string_view text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [at, error] = std::from_chars(text.data(), end, value);  // digits only: no sign, no space
  if (text.empty() || error != std::errc() || at != end || value > (uint64_t{1} << 62)) return std::nullopt;
  return value;
}

}  // namespace flowrun

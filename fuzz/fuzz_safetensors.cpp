// Fuzz target: safetensors (weights and checkpoints). Any bytes give tensors
// or a std::runtime_error; no allocation beyond what the bytes allow.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "stages/model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    flowrun::stages::Metadata metadata;
    flowrun::stages::StateDict tensors = flowrun::stages::decode_safetensors(data, size, "fuzz.safetensors", &metadata);
    for (const auto& [name, tensor] : tensors) (void)tensor.sum();
  } catch (const std::runtime_error&) {
  }
  return 0;
}

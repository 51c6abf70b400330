// The checkpoint file's layout, shared by the `checkpoint` stage that writes
// it and the `resnet` stage that can take its weights from one: safetensors
// whose metadata says format=flowrun-checkpoint, one uint8 tensor per
// stateful stage named "stage/NAME" (a model's is itself safetensors).
#pragma once

namespace flowrun::stages::checkpoint_format {
constexpr const char* kFormat = "flowrun-checkpoint";
constexpr const char* kVersion = "1";
constexpr const char* kStagePrefix = "stage/";
}  // namespace flowrun::stages::checkpoint_format

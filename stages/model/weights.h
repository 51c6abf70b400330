// Weight files: PyTorch's zip-format `torch.save` of a state dict (as
// torchvision publishes its models), read with a small restricted unpickler
// that interprets only what a state dict needs and never runs pickle code;
// and safetensors, read and written. Every size and offset in a file is
// checked against the file before anything is allocated.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace flowrun::stages {

using StateDict = std::vector<std::pair<std::string, at::Tensor>>;  // in file order

// By content: a zip archive is a torch.save file, anything else safetensors
// (whose header metadata goes to `metadata` when given).
// Throws std::runtime_error("PATH: what is wrong").
// A torch.save file may hold a plain state dict or a checkpoint dict
// ({'epoch', 'state_dict', 'optimizer', ...}): then the weights are taken from
// `entry`, or with "auto" from the first of checkpoint_entries() present
// (timm's load_checkpoint order, EMA weights first), and `note` says which.
// The rest of a checkpoint (ints, strings, optimizer states, objects of any
// class) is parsed past, never constructed or run.
using Metadata = std::map<std::string, std::string>;
StateDict read_weights(const std::string& path, Metadata* metadata = nullptr, const std::string& entry = "auto",
                       std::string* note = nullptr);
StateDict read_torch_state_dict(const std::string& path);
StateDict read_torch_state_dict(const std::string& path, const std::string& entry, std::string* note);
const std::vector<std::string>& checkpoint_entries();
StateDict read_safetensors(const std::string& path);

// Writes tensors (contiguous CPU copies) as safetensors, atomically.
// `metadata` goes into the header's "__metadata__" (string to string).
void write_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata = {});

// The same format in memory. `name` says what the bytes are, in errors.
std::string encode_safetensors(const StateDict& tensors, const Metadata& metadata = {});
StateDict decode_safetensors(const uint8_t* bytes, size_t size, const std::string& name, Metadata* metadata = nullptr);
StateDict read_safetensors(const std::string& path, Metadata* metadata);

}  // namespace flowrun::stages

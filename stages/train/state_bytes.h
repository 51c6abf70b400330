// Stage state as bytes (Stage::save_state) in LibTorch's own archive format:
// named tensors and scalars, and byte strings kept as uint8 tensors.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace flowrun::stages {

inline std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

// Throws naming `what` when the bytes are not an archive.
inline void load_archive(torch::serialize::InputArchive& archive, const std::string& bytes, const std::string& what) {
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    std::string why = e.what();
    throw std::runtime_error("saved state of " + what + " is unreadable: " + why.substr(0, why.find('\n')));
  }
}

inline torch::Tensor bytes_tensor(const std::string& bytes) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

inline std::string tensor_bytes(const torch::Tensor& t) {
  if (t.scalar_type() != torch::kUInt8 || t.dim() != 1) throw std::runtime_error("saved bytes are not a uint8 vector");
  torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()));
}

// A list of names (as a JSON array: any name survives) and back.
inline void write_lines(torch::serialize::OutputArchive& archive, const std::string& key,
                        const std::vector<std::string>& lines) {
  archive.write(key, bytes_tensor(nlohmann::json(lines).dump()));
}

inline std::vector<std::string> read_lines(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor bytes;
  archive.read(key, bytes);
  try {
    return nlohmann::json::parse(tensor_bytes(bytes)).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("saved state: '" + key + "' is not a list of names");
  }
}

inline int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  if (!value.isInt()) throw std::runtime_error("saved state: '" + key + "' is not an integer");
  return value.toInt();
}

inline double read_double(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  if (!value.isDouble()) throw std::runtime_error("saved state: '" + key + "' is not a number");
  return value.toDouble();
}

}  // namespace flowrun::stages

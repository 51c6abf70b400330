// `idx`: the IDX files of MNIST and Fashion-MNIST (gzipped or not), such as
// Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist.
// Gzipped files are unpacked once into a cache folder and memory-mapped, so
// resident memory does not grow with the dataset.
#pragma once

#include <memory>

#include "stages/data/dataset_source.h"

namespace flowrun::stages {

// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws std::runtime_error naming the file
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// An IDX file: dims and a pointer to its unsigned-byte payload.
struct IdxFile {
  std::unique_ptr<MappedFile> map;
  std::vector<int64_t> dims;
  const uint8_t* payload = nullptr;
};
// Opens PATH or PATH.gz (unpacked into `cache_dir`); checks magic, type and size.
IdxFile open_idx(const std::string& path, const std::string& cache_dir);

class Idx : public DatasetSource {
 public:
  static Schema schema();
  explicit Idx(const StageInit& init);

 protected:
  void fill(Sample& sample, int64_t index) override;

 private:
  IdxFile images_, labels_;
  int rows_ = 0, cols_ = 0, channels_ = 3;
};

}  // namespace flowrun::stages

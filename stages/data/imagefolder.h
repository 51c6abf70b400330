// `imagefolder`: torchvision's ImageFolder layout — a root with one folder
// per class (classes sorted by name), image files anywhere below each
// (.jpg/.jpeg/.png in any letter case). Emits samples with their path; the
// decode stage reads the file.
#pragma once

#include "stages/data/dataset_source.h"

namespace flowrun::stages {

class ImageFolder : public DatasetSource {
 public:
  static Schema schema();
  explicit ImageFolder(const StageInit& init);

 protected:
  void fill(Sample& sample, int64_t index) override { sample.path = paths_[index]; }

 private:
  std::vector<std::string> paths_;
};

// The files ImageFolder would list under `root`: paths, labels, class names.
// Throws std::runtime_error naming the folder when root is missing, has no
// class folders, or a class folder has no images.
struct FolderListing {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
};
FolderListing list_image_folder(const std::string& root);

// Image files below `dir` at any depth, sorted, each folder visited once
// (symbolic-link loops end there).
std::vector<std::string> list_images_below(const std::string& dir);

}  // namespace flowrun::stages

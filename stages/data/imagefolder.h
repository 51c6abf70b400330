// `imagefolder`: torchvision's ImageFolder layout — a root with one folder
// per class (classes sorted by name), image files anywhere below each, by
// torchvision's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp,
// any letter case; the decode stage then goes by the bytes, as PIL does).
// Unlike torchvision, hidden entries (names starting with '.', so also "._x"
// AppleDouble files) and __MACOSX folders are left out, never classes; files
// of other types are counted and logged once per class folder. Emits samples
// with their path; the decode stage reads the file.
#pragma once

#include "stages/data/dataset_source.h"

namespace flowrun::stages {

// The files ImageFolder would list under `root`: paths, labels, class names.
// Throws std::runtime_error naming the folder when root is missing, has no
// class folders, or a class folder has no images.
// `ignored` counts what was left out: files of other types, and hidden
// entries / macOS debris (each hidden folder counts once, not its contents).
struct FolderListing {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
  struct Ignored {
    int64_t other_types = 0, hidden = 0;
  } ignored;
};
FolderListing list_image_folder(const std::string& root);

// Image files below `dir` at any depth, sorted, each folder visited once
// (symbolic-link loops end there); logs what it leaves out, once.
std::vector<std::string> list_images_below(const std::string& dir, FolderListing::Ignored* ignored = nullptr);

class ImageFolder : public DatasetSource {
 public:
  static Schema schema();
  explicit ImageFolder(const StageInit& init);
  // Adds other_files_ignored and hidden_ignored to the source's figures.
  void report(Report& report) const override;

 protected:
  void fill(Sample& sample, int64_t index) override { sample.path = paths_[index]; }

 private:
  std::vector<std::string> paths_;
  FolderListing::Ignored ignored_;
};

}  // namespace flowrun::stages

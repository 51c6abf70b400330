#include "stages/data/imagefolder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

namespace fs = std::filesystem;

namespace {

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Image files below `dir`, sorted, following symbolic links but never
// entering a directory twice (a link loop ends there).
void collect(const fs::path& dir, std::set<fs::path>& visited, std::vector<std::string>& out, int depth) {
  std::error_code ec;
  fs::path canonical = fs::canonical(dir, ec);
  if (ec || depth > 64 || !visited.insert(canonical).second) return;
  std::vector<fs::path> files, dirs;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) dirs.push_back(it->path());
    else if (it->is_regular_file(type_ec) && is_image_file(it->path())) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& file : files) out.push_back(file.string());
  for (const auto& sub : dirs) collect(sub, visited, out, depth + 1);
}

}  // namespace

std::vector<std::string> list_images_below(const std::string& dir) {
  std::set<fs::path> visited;
  std::vector<std::string> out;
  collect(dir, visited, out, 0);
  return out;
}

FolderListing list_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw std::runtime_error(root + ": not a folder (expected one subfolder per class)");
  std::vector<fs::path> class_dirs;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) class_dirs.push_back(it->path());
  }
  if (ec) throw std::runtime_error(root + ": cannot list: " + ec.message());
  if (class_dirs.empty()) throw std::runtime_error(root + ": no class folders (expected one subfolder per class)");
  std::sort(class_dirs.begin(), class_dirs.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();  // byte order, as Python's sorted()
  });
  FolderListing listing;
  std::set<fs::path> visited;
  for (const auto& dir : class_dirs) {
    size_t before = listing.paths.size();
    collect(dir, visited, listing.paths, 0);
    if (listing.paths.size() == before)
      throw std::runtime_error(dir.string() + ": class folder has no images (.jpg, .jpeg, .png)");
    listing.labels.resize(listing.paths.size(), static_cast<int64_t>(listing.class_names.size()));
    listing.class_names.push_back(dir.filename().string());
  }
  return listing;
}

Schema ImageFolder::schema() {
  return Schema("imagefolder", "images in ROOT/CLASS/...: classes sorted by name, as torchvision's ImageFolder")
      .param(Path("root", "the folder holding one subfolder per class"))
      .param(DatasetSource::sampler_param());
}

ImageFolder::ImageFolder(const StageInit& init) : DatasetSource(init, init.params.get_string("root")) {
  FolderListing listing = list_image_folder(init.params.get_string("root"));
  paths_ = std::move(listing.paths);
  set_dataset(std::move(listing.labels), std::move(listing.class_names));
}

FLOWRUN_REGISTER_STAGE(ImageFolder);

}  // namespace flowrun::stages

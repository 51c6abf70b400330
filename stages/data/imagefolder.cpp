#include "stages/data/imagefolder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "pipeline/registry.h"

namespace flowrun::stages {

namespace fs = std::filesystem;

namespace {

// torchvision's IMG_EXTENSIONS (datasets/folder.py), any letter case.
bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* known : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (ext == known) return true;
  return false;
}

// Hidden entries (".git", ".DS_Store"), macOS archive debris (__MACOSX/, and
// "._name" AppleDouble files, which start with '.' too): never data.
bool is_debris(const fs::path& path) {
  std::string name = path.filename().string();
  return name.empty() || name[0] == '.' || name == "__MACOSX";
}

// Image files below `dir`, sorted, following symbolic links but never
// entering a directory twice (a link loop ends there). Counts what it leaves out.
void collect(const fs::path& dir, std::set<fs::path>& visited, std::vector<std::string>& out, int depth,
             FolderListing::Ignored& ignored) {
  std::error_code ec;
  fs::path canonical = fs::canonical(dir, ec);
  if (ec || depth > 64 || !visited.insert(canonical).second) return;
  std::vector<fs::path> files, dirs;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code type_ec;
    if (is_debris(it->path())) ++ignored.hidden;
    else if (it->is_directory(type_ec)) dirs.push_back(it->path());
    else if (!it->is_regular_file(type_ec)) continue;  // dangling links, sockets...
    else if (is_image_file(it->path())) files.push_back(it->path());
    else ++ignored.other_types;
  }
  std::sort(files.begin(), files.end());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& file : files) out.push_back(file.string());
  for (const auto& sub : dirs) collect(sub, visited, out, depth + 1, ignored);
}

void log_other_types(int64_t count, const std::string& where) {
  if (count > 0)
    spdlog::warn("{} file{} of other types ignored under {} (flowrun reads .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)",
                 count, count == 1 ? "" : "s", where);
}

void log_hidden(int64_t count, const std::string& where) {
  if (count > 0)
    spdlog::info("{} hidden file{} and folder{} left out under {} (names starting with '.', __MACOSX, ._* AppleDouble)",
                 count, count == 1 ? "" : "s", count == 1 ? "" : "s", where);
}

}  // namespace

std::vector<std::string> list_images_below(const std::string& dir, FolderListing::Ignored* ignored) {
  std::set<fs::path> visited;
  std::vector<std::string> out;
  FolderListing::Ignored counts;
  collect(dir, visited, out, 0, counts);
  log_other_types(counts.other_types, dir);
  log_hidden(counts.hidden, dir);
  if (ignored) *ignored = counts;
  return out;
}

FolderListing list_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw std::runtime_error(root + ": not a folder (expected one subfolder per class)");
  FolderListing listing;
  std::vector<fs::path> class_dirs;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (is_debris(it->path())) ++listing.ignored.hidden;
    else if (it->is_directory(type_ec)) class_dirs.push_back(it->path());
  }
  if (ec) throw std::runtime_error(root + ": cannot list: " + ec.message());
  if (class_dirs.empty()) throw std::runtime_error(root + ": no class folders (expected one subfolder per class)");
  std::sort(class_dirs.begin(), class_dirs.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();  // byte order, as Python's sorted()
  });
  std::set<fs::path> visited;
  for (const auto& dir : class_dirs) {
    size_t before = listing.paths.size();
    FolderListing::Ignored here;
    collect(dir, visited, listing.paths, 0, here);
    log_other_types(here.other_types, dir.string());
    listing.ignored.other_types += here.other_types;
    listing.ignored.hidden += here.hidden;
    if (listing.paths.size() == before)
      throw std::runtime_error(dir.string() + ": class folder has no images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp" +
                               (here.other_types ? "; " + std::to_string(here.other_types) +
                                                       (here.other_types == 1 ? " file" : " files") + " of other types"
                                                 : "") +
                               ")");
    listing.labels.resize(listing.paths.size(), static_cast<int64_t>(listing.class_names.size()));
    listing.class_names.push_back(dir.filename().string());
  }
  log_hidden(listing.ignored.hidden, root);
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
  ignored_ = listing.ignored;
  set_dataset(std::move(listing.labels), std::move(listing.class_names));
}

void ImageFolder::report(Report& report) const {
  DatasetSource::report(report);
  report.set("other_files_ignored", static_cast<double>(ignored_.other_types));
  report.set("hidden_ignored", static_cast<double>(ignored_.hidden));
}

FLOWRUN_REGISTER_STAGE(ImageFolder);

}  // namespace flowrun::stages

#include "stages/data/idx.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "pipeline/atomic_file.h"
#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

namespace fs = std::filesystem;

MappedFile::MappedFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    throw std::runtime_error(path + ": empty or unreadable file");
  }
  size_ = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw std::runtime_error(path + ": cannot map: " + std::strerror(errno));
  data_ = static_cast<const uint8_t*>(map);
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

std::string default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/flowrun";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/flowrun";
  return (fs::temp_directory_path() / "flowrun-cache").string();
}

// Unpacks `gz` into the cache (once; keyed by its path, size and time).
std::string unpack(const std::string& gz, const std::string& cache_dir) {
  std::error_code ec;
  auto size = fs::file_size(gz, ec);
  auto time = fs::last_write_time(gz, ec).time_since_epoch().count();
  std::string key = std::to_string(hash_name(fs::absolute(gz).string() + ":" + std::to_string(size) + ":" +
                                             std::to_string(time)));
  std::string out = cache_dir + "/idx/" + fs::path(gz).stem().string() + "." + key;
  if (fs::exists(out, ec)) return out;
  gzFile in = gzopen(gz.c_str(), "rb");
  if (!in) throw std::runtime_error(gz + ": cannot open");
  try {
    write_file_atomically(out, [&](std::ostream& stream) {
      std::vector<char> buffer(1 << 20);
      int n;
      while ((n = gzread(in, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) stream.write(buffer.data(), n);
      if (n < 0) {
        int errnum = 0;
        throw std::runtime_error(gz + ": corrupt gzip data: " + gzerror(in, &errnum));
      }
    });
  } catch (...) {
    gzclose(in);
    throw;
  }
  gzclose(in);
  return out;
}

}  // namespace

IdxFile open_idx(const std::string& path, const std::string& cache_dir) {
  std::error_code ec;
  std::string file = path;
  if (!fs::exists(file, ec)) {
    if (!fs::exists(path + ".gz", ec)) throw std::runtime_error(path + "[.gz]: no such file");
    file = path + ".gz";
  }
  if (file.size() > 3 && file.compare(file.size() - 3, 3, ".gz") == 0) file = unpack(file, cache_dir);
  IdxFile idx;
  idx.map = std::make_unique<MappedFile>(file);
  const uint8_t* p = idx.map->data();
  size_t size = idx.map->size();
  if (size < 4 || p[0] != 0 || p[1] != 0) throw std::runtime_error(path + ": not an IDX file (bad magic)");
  if (p[2] != 0x08) throw std::runtime_error(path + ": IDX data type must be unsigned byte (0x08)");
  int ndims = p[3];
  if (ndims < 1 || ndims > 4 || size < 4 + 4u * ndims) throw std::runtime_error(path + ": bad IDX header");
  size_t expected = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* q = p + 4 + 4 * d;
    int64_t dim = (int64_t(q[0]) << 24) | (q[1] << 16) | (q[2] << 8) | q[3];
    idx.dims.push_back(dim);
    expected *= static_cast<size_t>(dim);
  }
  idx.payload = p + 4 + 4 * ndims;
  if (size - (4 + 4 * ndims) < expected)
    throw std::runtime_error(path + ": truncated IDX file (" + std::to_string(size) + " bytes)");
  return idx;
}

Schema Idx::schema() {
  return Schema("idx", "MNIST-style IDX files (gzipped or not): ROOT/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
      .param(Path("root", "the folder of the IDX files").def(std::string("/usr/share/datasets/fashion-mnist")))
      .param(String("part", "train (60,000 images) or test (10,000)").def(std::string("train")).one_of({"train", "test"}))
      .param(StringList("names", "class names (default: Fashion-MNIST's)")
                 .def(std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                               "Shirt", "Sneaker", "Bag", "Ankle boot"}))
      .param(Int("channels", "1: grayscale; 3: gray replicated to RGB (for ImageNet models)").def(int64_t{3}).range(1, 3))
      .param(Path("cache", "where gzipped files are unpacked; \"\" = $XDG_CACHE_HOME/flowrun").def(std::string("")))
      .param(DatasetSource::sampler_param())
      .check([](const Params& p) { return p.get_int("channels") == 2 ? "channels must be 1 or 3" : ""; });
}

Idx::Idx(const StageInit& init) : DatasetSource(init, init.params.get_string("root")) {
  const std::string root = init.params.get_string("root");
  const std::string prefix = root + "/" + (init.params.get_string("part") == "train" ? "train" : "t10k");
  std::string cache = init.params.get_string("cache");
  if (cache.empty()) cache = default_cache_dir();
  images_ = open_idx(prefix + "-images-idx3-ubyte", cache);
  labels_ = open_idx(prefix + "-labels-idx1-ubyte", cache);
  if (images_.dims.size() != 3) throw std::runtime_error(prefix + "-images-idx3-ubyte: expected 3 dimensions");
  if (labels_.dims.size() != 1 || labels_.dims[0] != images_.dims[0])
    throw std::runtime_error(prefix + "-labels-idx1-ubyte: expected one label per image (" +
                             std::to_string(images_.dims[0]) + ")");
  rows_ = static_cast<int>(images_.dims[1]);
  cols_ = static_cast<int>(images_.dims[2]);
  channels_ = static_cast<int>(init.params.get_int("channels"));
  if (channels_ == 2) throw std::runtime_error("channels must be 1 or 3");
  std::vector<std::string> names = init.params.get_string_list("names");
  std::vector<int64_t> labels(images_.dims[0]);
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = labels_.payload[i];
    while (static_cast<size_t>(labels[i]) >= names.size()) names.push_back("class " + std::to_string(names.size()));
  }
  set_dataset(std::move(labels), std::move(names));
}

void Idx::fill(Sample& sample, int64_t index) {
  const uint8_t* src = images_.payload + static_cast<size_t>(index) * rows_ * cols_;
  sample.image = Image(cols_, rows_, channels_);
  uint8_t* dst = sample.image.pixels.data();
  if (channels_ == 1) {
    std::memcpy(dst, src, static_cast<size_t>(rows_) * cols_);
  } else {
    for (int i = 0; i < rows_ * cols_; ++i) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = src[i];
  }
}

FLOWRUN_REGISTER_STAGE(Idx);

}  // namespace flowrun::stages

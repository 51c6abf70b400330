#include "pipeline/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>

namespace flowrun {
namespace {

// Removes PATH.tmp.PID files whose writer is gone (killed with SIGKILL, or a
// power cut): a half-written checkpoint is hundreds of megabytes. A temporary
// whose PID is alive -- another run writing the same file right now -- stays.
void remove_abandoned_temporaries(const std::filesystem::path& dir, const std::filesystem::path& target) {
  std::error_code ec;
  const std::string prefix = target.filename().string() + ".tmp.";
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid <= 0 || pid == getpid()) continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove(it->path(), ec);
  }
}

std::mutex g_written_mutex;
std::vector<std::string> g_written;
std::set<std::string> g_written_set;

void record_written(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_written_mutex);
  if (g_written_set.insert(path).second) g_written.push_back(path);
}

}  // namespace

std::vector<std::string> files_written() {
  std::lock_guard<std::mutex> lock(g_written_mutex);
  return g_written;
}

void record_file_written(const std::string& path) { record_written(path); }

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  auto fail = [&](const std::string& why) { throw std::runtime_error(path + ": error: cannot write: " + why); };
  const std::filesystem::path target(path);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  if (target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail(ec.message());
  }
  remove_abandoned_temporaries(dir, target);
  std::string temporary = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail(std::strerror(errno));
    try {
      write(out);
    } catch (...) {
      out.close();
      std::remove(temporary.c_str());
      throw;
    }
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      fail("write failed (disk full?)");
    }
  }
  int fd = ::open(temporary.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::remove(temporary.c_str());
    fail(why);
  }
  // The rename itself reaches the disk with the directory's entry.
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  record_written(path);
}

void write_file_atomically(const std::string& path, const std::string& content) {
  write_file_atomically(path, [&](std::ostream& out) { out << content; });
}

}  // namespace flowrun

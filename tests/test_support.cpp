#include "test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace flowrun::test {

ResolvedGraph resolve_text(const std::string& text, const std::vector<std::string>& sets, const std::string& file) {
  Diagnostics diagnostics;
  GraphSpec spec = parse_graph(text, file, diagnostics);
  if (!diagnostics.empty()) throw GraphError(diagnostics);
  std::vector<CommandLineOverride> overrides;
  for (size_t i = 0; i < sets.size(); ++i) overrides.push_back({sets[i], "--set #" + std::to_string(i + 1)});
  return resolve_graph(spec, Registry::global(), overrides);
}

std::string errors_of(const std::string& text, const std::vector<std::string>& sets, const std::string& file) {
  try {
    resolve_text(text, sets, file);
    return "";
  } catch (const GraphError& e) {
    return e.what();
  }
}

namespace {
// Every directory temp_dir() made, removed when the test process exits (a suite's runs write
// hundreds of MB; left behind, a full test pass filled the disk). FLOWRUN_KEEP_TEST_DIRS=1 keeps
// them to look at; a child that forked without exec (it ends with _exit) removes nothing.
struct TempDirs {
  std::mutex mutex;
  std::vector<std::filesystem::path> made;
  pid_t owner = getpid();
  ~TempDirs() {
    const char* keep = std::getenv("FLOWRUN_KEEP_TEST_DIRS");
    if (getpid() != owner || (keep && *keep && std::string(keep) != "0")) return;
    std::error_code ignored;
    for (const auto& dir : made) std::filesystem::remove_all(dir, ignored);
  }
};
TempDirs& temp_dirs() {
  static TempDirs dirs;
  return dirs;
}
}  // namespace

std::string temp_dir() {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("flowrun-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto& dirs = temp_dirs();
  std::lock_guard<std::mutex> lock(dirs.mutex);
  dirs.made.push_back(dir);
  return dir.string();
}

CommandResult run_flowrun(const std::vector<std::string>& args, const std::string& cwd) {
  return run_flowrun_signalled(args, nullptr, 0, cwd);
}

CommandResult run_in(const std::string& dir, const std::string& graph, const std::string& name,
                     const std::vector<std::string>& extra) {
  std::vector<std::string> args = {graph, "--threads", "2", "--run-dir", dir + "/" + name,
                                   "--set", "save.path=" + dir + "/" + name + ".safetensors"};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_flowrun(args, dir);
}

nlohmann::json summary_of(const std::string& run_dir) { return nlohmann::json::parse(slurp(run_dir + "/summary.json")); }

CommandResult run_flowrun_signalled(const std::vector<std::string>& args, const std::function<bool()>& ready,
                                    int signal, const std::string& cwd) {
  std::string dir = temp_dir();
  std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  std::string script = "cd '" + (cwd.empty() ? std::string(FLOWRUN_SOURCE_DIR) : cwd) + "' && exec '" FLOWRUN_BINARY "'";
  for (const auto& arg : args) script += " '" + arg + "'";
  script += " >'" + out_path + "' 2>'" + err_path + "'";
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  pid_t pid = 0;
  CommandResult result;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return result;
  int status = 0;
  bool reaped = false;
  while (ready && !reaped) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      reaped = true;
    } else if (ready()) {
      kill(pid, signal);  // the shell has exec'd flowrun: the same pid
      break;
    } else {
      usleep(10000);
    }
  }
  if (!reaped) waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  std::filesystem::remove_all(dir);
  return result;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split(const std::string& csv_line) {
  std::vector<std::string> fields;
  std::stringstream in(csv_line);
  for (std::string field; std::getline(in, field, ',');) fields.push_back(field);
  if (!csv_line.empty() && csv_line.back() == ',') fields.push_back("");
  return fields;
}

std::string write_graph(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::string without_where(const std::string& message) {
  const std::string end = " the stage received this epoch)";
  const size_t where = message.rfind(" (phase '");
  if (where == std::string::npos || message.size() < end.size() ||
      message.compare(message.size() - end.size(), end.size(), end) != 0)
    return "no note of where: " + message;
  return message.substr(0, where);
}

}  // namespace flowrun::test

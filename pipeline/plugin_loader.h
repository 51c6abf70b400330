// Loads plugin shared libraries (dlopen) and lets them register stages.
// A plugin is trusted native code: loading one runs its code in-process.
#pragma once

#include <stdexcept>
#include <string>

#include "pipeline/registry.h"

namespace flowrun {

// what() reads "PATH: error: plugin REASON"; a graph's plugin line reports
// "plugin PATH REASON" at its own place instead.
class PluginError : public std::runtime_error {
 public:
  PluginError(std::string path, std::string reason)
      : std::runtime_error(path + ": error: plugin " + reason), path_(std::move(path)), reason_(std::move(reason)) {}
  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_, reason_;
};

// A path with a '/' is used as is. A bare file name ("libexample.so") is
// looked up in the directories of $FLOWRUN_PLUGIN_PATH (':'-separated), then
// in plugins/ beside the flowrun executable, then in
// ../lib/flowrun/plugins from it; the first found wins.
std::string find_plugin(const std::string& path);

// Loads `path` (through find_plugin) once (later calls with the same file do nothing) and registers
// its stages into `registry`. Throws std::runtime_error naming the file when
// the file is missing, is not a loadable library, lacks the entry point,
// was built for another plugin API or C++ ABI, or its stages clash.
void load_plugin(const std::string& path, Registry& registry);

}  // namespace flowrun

#include "pipeline/plugin_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <vector>
#include <filesystem>
#include <mutex>
#include <set>
#include <stdexcept>

#include "pipeline/plugin_abi.h"

namespace flowrun {

std::string find_plugin(const std::string& path) {
  if (path.find('/') != std::string::npos) return path;
  std::vector<std::filesystem::path> directories;
  if (const char* env = std::getenv("FLOWRUN_PLUGIN_PATH")) {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      if (end > start) directories.emplace_back(list.substr(start, end - start));
      start = end + 1;
    }
  }
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    directories.push_back(exe.parent_path() / "plugins");
    directories.push_back(exe.parent_path() / ".." / "lib" / "flowrun" / "plugins");
  }
  for (const auto& directory : directories)
    if (std::filesystem::exists(directory / path, ec)) return (directory / path).string();
  return path;
}

void load_plugin(const std::string& requested, Registry& registry) {
  const std::string path = find_plugin(requested);
  static std::mutex mutex;
  static std::set<std::string> loaded;
  std::lock_guard<std::mutex> lock(mutex);

  auto fail = [&](const std::string& why) { throw PluginError(path, why); };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail(path == requested && path.find('/') == std::string::npos
             ? "does not exist (searched $FLOWRUN_PLUGIN_PATH and the plugins/ folder beside flowrun)"
             : "does not exist");
  if (!std::filesystem::is_regular_file(path, ec)) fail("is not a regular file");
  std::string canonical = std::filesystem::canonical(path, ec).string();
  if (ec) fail("cannot be resolved: " + ec.message());
  if (loaded.count(canonical)) return;

  // Kept open for the life of the process: its stages may outlive any scope.
  void* handle = dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    fail(std::string("cannot be loaded: ") + (why ? why : "unknown dlopen error"));
  }
  auto entry = reinterpret_cast<flowrun_plugin_entry_fn>(dlsym(handle, FLOWRUN_PLUGIN_ENTRY_SYMBOL));
  if (!entry) {
    dlclose(handle);
    fail("has no entry point '" FLOWRUN_PLUGIN_ENTRY_SYMBOL "' (declare it with FLOWRUN_PLUGIN in <flowrun/sdk.h>)");
  }
  const flowrun_plugin_info* info = entry();
  if (!info) fail("entry point returned nothing");
  if (info->api_version != FLOWRUN_PLUGIN_API_VERSION)
    fail("was built for plugin API version " + std::to_string(info->api_version) + " but this flowrun uses version " +
         std::to_string(FLOWRUN_PLUGIN_API_VERSION) + "; rebuild it against this flowrun's SDK");
  if (!info->cxx_abi || std::strcmp(info->cxx_abi, FLOWRUN_CXX_ABI) != 0)
    fail(std::string("was built with C++ ABI '") + (info->cxx_abi ? info->cxx_abi : "?") + "' but flowrun uses '" +
         FLOWRUN_CXX_ABI + "'");
  if (info->stage_api_version != 0 && info->stage_api_version != FLOWRUN_STAGE_API_VERSION)
    fail(std::string("'") + (info->name ? info->name : "?") + "' was built against stage API version " +
         std::to_string(info->stage_api_version) + " but this flowrun has stage API version " +
         std::to_string(FLOWRUN_STAGE_API_VERSION) + "; rebuild it against this flowrun's SDK");
  if (!info->register_stages) fail("registers no stages");
  registry.set_origin(path);
  try {
    info->register_stages(registry);
  } catch (const std::exception& e) {
    registry.set_origin("built-in");
    fail(std::string("failed to register its stages: ") + e.what());
  }
  registry.set_origin("built-in");
  loaded.insert(canonical);
}

}  // namespace flowrun

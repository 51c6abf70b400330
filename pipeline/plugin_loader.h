// Loads plugin shared libraries (dlopen) and lets them register stages.
// A plugin is trusted native code: loading one runs its code in-process.
#pragma once

#include <string>

#include "pipeline/registry.h"

namespace flowrun {

// Loads `path` once (later calls with the same file do nothing) and registers
// its stages into `registry`. Throws std::runtime_error naming the file when
// the file is missing, is not a loadable library, lacks the entry point,
// was built for another plugin API or C++ ABI, or its stages clash.
void load_plugin(const std::string& path, Registry& registry);

}  // namespace flowrun

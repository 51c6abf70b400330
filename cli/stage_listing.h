// What `flowrun --list-stages` prints: every stage type with its kind,
// origin, doc and parameters (type, default, bounds, doc).
#pragma once

#include <string>

#include "pipeline/registry.h"

namespace flowrun {
// `only`: that stage type (or `run`, `phase`) alone; "" = all.
std::string format_stage_listing(const Registry& registry, const std::string& only = "");
}

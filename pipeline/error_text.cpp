#include "pipeline/error_text.h"

#include <atomic>

namespace flowrun {

namespace {
std::atomic<ErrorTextHook> installed{nullptr};
}  // namespace

void set_error_text_hook(ErrorTextHook hook) { installed.store(hook); }

std::string error_text(const std::exception& e) {
  if (ErrorTextHook hook = installed.load()) {
    std::string text = hook(e);
    if (!text.empty()) return text;
  }
  return e.what();
}

}  // namespace flowrun

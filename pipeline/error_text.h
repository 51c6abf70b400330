// What a stage's exception says to the user. The engine knows no library's
// exception types; a stage library that throws richer ones (LibTorch's
// c10::Error carries a C++ stack trace in what()) installs a hook that
// turns them into one plain line.
#pragma once

#include <exception>
#include <string>

namespace flowrun {

// Returns the text for `e`, or "" to leave it to e.what().
using ErrorTextHook = std::string (*)(const std::exception& e);

// Installs `hook` (one per process; the last installed wins). Thread-safe.
void set_error_text_hook(ErrorTextHook hook);

// The hook's text for `e`, else e.what().
std::string error_text(const std::exception& e);

}  // namespace flowrun

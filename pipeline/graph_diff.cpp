#include "pipeline/graph_diff.h"

#include <regex>
#include <sstream>
#include <vector>

namespace flowrun {

namespace {

// The lines that decide the run's numbers: comments (the file it was
// resolved from) out, run-control settings out of the `run` line, and a
// checkpoint's resume= out of its stage line.
std::vector<std::string> deciding_lines(const std::string& text) {
  static const std::regex run_control(R"( (threads|compute_threads|backend|timeout)=[^ ]*)");
  static const std::regex resume(R"( resume="(?:[^"\\]|\\.)*")");
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("run ", 0) == 0) line = std::regex_replace(line, run_control, "");
    line = std::regex_replace(line, resume, "");
    lines.push_back(line);
  }
  return lines;
}

}  // namespace

std::string graph_difference(const std::string& saved, const std::string& now, int max_lines) {
  const std::vector<std::string> a = deciding_lines(saved), b = deciding_lines(now);
  if (a == b) return "";
  // Lines of one that the other lacks, in order (a stage's line names it).
  auto missing = [](const std::vector<std::string>& from, const std::vector<std::string>& in) {
    std::vector<std::string> out;
    std::vector<bool> used(in.size(), false);
    for (const auto& line : from) {
      bool found = false;
      for (size_t i = 0; i < in.size() && !found; ++i)
        if (!used[i] && in[i] == line) used[i] = found = true;
      if (!found) out.push_back(line);
    }
    return out;
  };
  std::string text;
  auto list = [&](const char* label, const std::vector<std::string>& lines) {
    for (size_t i = 0; i < lines.size() && i < static_cast<size_t>(max_lines); ++i)
      text += std::string("\n  ") + label + ": " + lines[i];
    if (lines.size() > static_cast<size_t>(max_lines))
      text += "\n  (" + std::to_string(lines.size() - max_lines) + " more line(s) " + label + ")";
  };
  list("saved", missing(a, b));
  list("now", missing(b, a));
  if (text.empty()) text = "\n  the same lines in another order";
  return text;
}

}  // namespace flowrun

#include "pipeline/diagnostics.h"

#include <algorithm>
#include <cctype>
#include <tuple>

namespace flowrun {

std::string Diagnostic::format() const {
  std::string place = where.file.empty() ? std::string("flowrun") : where.file;
  if (where.line > 0) place += ":" + std::to_string(where.line) + ":" + std::to_string(where.col);
  return place + ": error: " + message;
}

std::string Diagnostics::format() const {
  std::vector<Diagnostic> sorted = items_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.where.file, a.where.line, a.where.col) < std::tie(b.where.file, b.where.line, b.where.col);
  });
  // The first hundred: past that, a file is not what its reader expects
  // (or a --set went badly wrong), and more lines only bury the first.
  constexpr size_t kShown = 100;
  std::string text;
  for (size_t i = 0; i < sorted.size() && i < kShown; ++i) text += sorted[i].format() + "\n";
  if (sorted.size() > kShown) text += "... and " + std::to_string(sorted.size() - kShown) + " more errors\n";
  return text;
}

namespace {
// Edits (insert, delete, substitute, swap two neighbours) from a to b, case-blind.
size_t edit_distance(const std::string& a, const std::string& b) {
  auto same = [](char x, char y) { return std::tolower(x) == std::tolower(y); };
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + !same(a[i - 1], b[j - 1])});
      if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) && same(a[i - 2], b[j - 1]))
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}
}  // namespace

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = 0;
  for (const auto& candidate : candidates) {
    size_t distance = edit_distance(word, candidate);
    if (!best || distance < best_distance) {
      best = &candidate;
      best_distance = distance;
    }
  }
  // Close enough: a typo or two, never a word that shares nothing with it.
  size_t allowed = word.size() <= 3 ? 1 : word.size() <= 6 ? 2 : 3;
  if (!best || best_distance > allowed || best_distance >= word.size()) return "";
  return "; did you mean '" + *best + "'?";
}

std::string join_names(const std::vector<std::string>& names, size_t limit) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < limit; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > limit) text += ", ...";
  return text;
}

}  // namespace flowrun

#include "pipeline/diagnostics.h"

#include <algorithm>
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
  std::string text;
  for (const auto& d : sorted) text += d.format() + "\n";
  return text;
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitution = diagonal + (std::tolower(a[i - 1]) != std::tolower(b[j - 1]));
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
    }
  }
  return row[b.size()];
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
  // Close enough: at most a third of the word's letters differ (and at least one may).
  if (!best || best_distance > std::max<size_t>(1, word.size() / 3)) return "";
  return "; did you mean '" + *best + "'?";
}

std::string join_names(const std::vector<std::string>& names, size_t limit) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < limit; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > limit) text += ", ...";
  return text;
}

}  // namespace flowrun

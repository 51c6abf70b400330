// Errors that point at a place: FILE:LINE:COL: error: MESSAGE. A whole file
// is checked before anything runs and every error is reported together.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace flowrun {

struct Location {
  std::string file;
  int line = 0;  // 1-based; 0 = no particular place in the file
  int col = 0;   // 1-based
};

struct Diagnostic {
  Location where;
  std::string message;
  std::string format() const;
};

class Diagnostics {
 public:
  void error(const Location& where, std::string message) { items_.push_back({where, std::move(message)}); }
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  const std::vector<Diagnostic>& items() const { return items_; }
  void append(const Diagnostics& other) { items_.insert(items_.end(), other.items_.begin(), other.items_.end()); }
  // One line per error, sorted by file, line and column.
  std::string format() const;

 private:
  std::vector<Diagnostic> items_;
};

// Thrown when a graph (or a command line over it) does not validate.
class GraphError : public std::runtime_error {
 public:
  explicit GraphError(Diagnostics diagnostics)
      : std::runtime_error(diagnostics.format()), diagnostics_(std::move(diagnostics)) {}
  const Diagnostics& diagnostics() const { return diagnostics_; }

 private:
  Diagnostics diagnostics_;
};

// "; did you mean 'size'?" when a candidate is close enough, else "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

// "a, b, c" (at most `limit` names, then "...").
std::string join_names(const std::vector<std::string>& names, size_t limit = 12);

}  // namespace flowrun

// The line-oriented text files the data stages read (image lists, class
// groups): each line without its CR (Windows endings) and, on line 1, a
// UTF-8 byte-order mark; blank lines and lines starting with # skipped.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>

namespace flowrun::stages {

// Calls `visit(line_number, line)` (1-based) for each line that is not
// blank or a comment. Throws "PATH: cannot read WHAT (why)" when the file
// cannot be opened.
inline void for_each_line(const std::string& path, const std::string& what,
                          const std::function<void(int, const std::string&)>& visit) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error(path + ": cannot read " + what + " (" +
                             (std::filesystem::exists(path) ? "not readable" : "no such file") + ")");
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // a UTF-8 byte-order mark
    if (line.empty() || line[0] == '#') continue;
    visit(line_number, line);
  }
}

}  // namespace flowrun::stages

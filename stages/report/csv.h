// CSV fields as RFC 4180 writes them: quoted when they hold a comma, a quote
// or a line break, with quotes doubled. Shared by predict and evaluate.
#pragma once

#include <string>

namespace flowrun::stages {

inline std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

}  // namespace flowrun::stages

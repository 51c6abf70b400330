// Files written whole or not at all: a temporary file beside the target,
// flushed to disk, then renamed over it. A crash mid-write leaves the old file
// (and a PATH.tmp.PID, removed by the next write of PATH once PID is gone).
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace flowrun {

// Calls `write` with a stream to the temporary file, then renames it to
// `path`. Throws std::runtime_error naming `path` on any failure.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);
void write_file_atomically(const std::string& path, const std::string& content);

// Every file this process has written through write_file_atomically, once
// each, in the order first written: what the command says at the end.
std::vector<std::string> files_written();
// Adds a file written otherwise (appended to as a run goes) to that list.
void record_file_written(const std::string& path);

}  // namespace flowrun

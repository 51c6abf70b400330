// How the graph a run resumes under differs from the one that saved its
// state, leaving out what only controls the run (where and whether to
// resume, threads, the job's backend and timeout): resuming exactly as the
// README says is no difference.
#pragma once

#include <string>

namespace flowrun {

// "" when the two resolved graphs (ResolvedGraph::format texts) are the same
// but for run-control settings; otherwise the differing lines, saved then
// now (at most `max_lines` of each), for a warning.
std::string graph_difference(const std::string& saved, const std::string& now, int max_lines = 3);

}  // namespace flowrun

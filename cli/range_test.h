// `flowrun GRAPH --lr-find[=N]`: the graph turned into a learning-rate
// range test (see stages/train/lr_finder.h) on its training flow.
#pragma once

#include <cstdint>

#include "pipeline/graph.h"

namespace flowrun {

// Keeps the first phase that trains (a `train` stage in a flow), its
// training flow alone and the components, without the stages that would
// write files a real run writes (checkpoint, save_weights); sets the train
// stage's lr_find to `steps`, with enough epochs for them. Throws
// std::invalid_argument when the graph has no training flow.
ResolvedGraph range_test_graph(const ResolvedGraph& graph, int64_t steps);

}  // namespace flowrun

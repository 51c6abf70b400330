#include "range_test.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace flowrun {

ResolvedGraph range_test_graph(const ResolvedGraph& graph, int64_t steps) {
  for (const ResolvedPhase& phase : graph.phases)
    for (const auto& chain : graph.chains)
      for (const auto& name : chain) {
        const ResolvedStage* stage = phase.find(name);
        if (!stage || stage->ops.empty() || stage->ops.front().type != "train") continue;
        ResolvedGraph test = graph;
        test.chains = {chain};
        ResolvedPhase only = phase;
        only.epochs = steps;  // at least a batch an epoch: the train stage ends the run when done
        only.name = "lr_find";
        std::set<std::string> in_flow(chain.begin(), chain.end());
        for (const auto& source : graph.sources_of(chain.front())) in_flow.insert(source);  // joined ones too
        only.stages.clear();
        for (const auto& s : phase.stages) {
          const bool component = s.kind == StageKind::Component;
          const bool writes = !s.ops.empty() && (s.ops.front().type == "checkpoint" || s.ops.front().type == "save_weights");
          if ((in_flow.count(s.name) || component) && !writes) only.stages.push_back(s);
        }
        for (auto& s : only.stages)
          if (s.name == name) s.ops.front().params.set("lr_find", Value(steps));
        test.phases = {only};
        test.implicit_phase = true;  // one phase: the test's
        test.run.epochs = steps;
        return test;
      }
  throw std::invalid_argument("--lr-find: the graph has no training flow (a flow ending in a 'train' stage)");
}

}  // namespace flowrun

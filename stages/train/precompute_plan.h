// Precomputed backbone features for phases that train the head alone
// (fastai 0.7's precompute=True). When a phase keeps the whole backbone
// frozen with its BatchNorm in eval mode, and nothing before the train stage
// draws new random augmentations each epoch, a sample's backbone output is
// the same every epoch: the train stage computes it once, keeps it by
// dataset index (FeatureCache, precompute.h), and later batches of that
// phase run the head alone. This header decides, from the graph alone, so
// that --check and the run say the same. No LibTorch here.
#pragma once

#include <string>
#include <vector>

#include "pipeline/graph.h"

namespace flowrun::stages {

struct PrecomputePlan {
  bool use = false;
  bool forced = false;  // precompute=on: not being able to is an error
  std::string why;      // why it is on or off (the log, --check)
};

// What train stage `train` of `phase`, fed by the flow `chain` (stage
// names, source first), will do; reads the graph only, so --check and the
// run decide alike.
PrecomputePlan plan_precompute(const ResolvedPhase& phase, const std::vector<std::string>& chain,
                               const std::string& train);

// Why the items reaching `stage` of the flow `chain` may differ from one
// epoch to the next: the first stage before it whose schema is randomized()
// ("stage 'aug' (hflip) draws new random augmentations every epoch"), or ""
// when nothing before it draws random numbers. (The precompute plan's rule,
// and a distill stage's for caching its teacher's outputs.)
std::string random_stage_before(const ResolvedPhase& phase, const std::vector<std::string>& chain,
                                const std::string& stage);

// The flow of `graph` that ends in (or holds) `stage`; empty when none.
const std::vector<std::string>& flow_of(const ResolvedGraph& graph, const std::string& stage);

// One comment line per train stage and phase: precompute on or off, and why
// (what --check prints after the graph).
std::string precompute_notes(const ResolvedGraph& graph);

}  // namespace flowrun::stages

// The data stage API: what a plugin needs to work on samples and images, or
// to decide which samples an epoch visits. Engine-only plugins need not
// include it; including it records FLOWRUN_STAGE_API_VERSION in the plugin,
// and flowrun refuses a plugin built against another stage API.
//
//   flowrun::stages::Sample  one sample: index, label, path, image (8-bit HWC
//                            RGB once decoded), tensor (float CHW once normalized)
//   flowrun::stages::Image   pixels, width, height, channels
//   flowrun::stages::RandomImageOp  base of random augmentations: rng_for(sample)
//                            is the sample's own generator, a function of (run
//                            seed, stage name, epoch, sample index), so results
//                            do not depend on threads or order
//   flowrun::stages::Rng     that generator: uniform(), below(n), chance(p), shuffle();
//                            no public constructor: a stage gets one from its
//                            declared randomness, RandomStream(init, type).draw(epoch,
//                            index) (refused unless the type's schema says
//                            randomized()), or as a sampler op, SamplerOp::rng(epoch)
//   flowrun::stages::SamplerOp / SampleSet  a sampler op reorders, filters or
//                            draws the epoch's dataset indices; its schema
//                            says .provides("sampler") (a source's sampler=
//                            takes only stages whose every op does)
//
// No LibTorch here: link flowrun::data. A plugin's stages are in-process
// code; the functions these headers declare resolve against the flowrun
// program that loads the plugin.
#pragma once

#include "sdk.h"
#include "stages/common/random.h"
#include "stages/data/sample.h"
#include "stages/data/sampler.h"
#include "stages/image/image.h"
#include "stages/image/random_op.h"

namespace flowrun::plugin_detail {
constexpr uint32_t stage_api_version_used(int) { return FLOWRUN_STAGE_API_VERSION; }
}  // namespace flowrun::plugin_detail

// Counter-based randomness: every random choice is a pure function of
// (seed, stream, epoch, sample index), so results never depend on which
// thread ran what, or in which order.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/registry.h"
#include "pipeline/stage.h"

namespace flowrun::stages {

inline uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a: names a random stream (a stage and its op) with a number.
inline uint64_t hash_name(const std::string& text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return h;
}

class RandomStream;
class SamplerOp;

// A generator of one (seed, stream, epoch, index). A stage gets one only
// through its declared randomness (RandomStream, which a stage type without
// Schema::randomized() cannot draw from) or as a sampler op (SamplerOp::rng):
// there is no public constructor, so an undeclared augmentation cannot
// draw unseen (precompute would cache its first draw).
class Rng {
 public:
  uint64_t next() { return mix64(state_++); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n); n > 0. (Multiply-shift: bias below 2^-64 * n.)
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
  bool chance(double p) { return uniform() < p; }

  // Fisher-Yates: a uniformly random order of all of v.
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  // Moves a uniformly random choice of k elements to the front of v (k <= size).
  template <class T>
  void choose_front(std::vector<T>& v, size_t k) {
    for (size_t i = 0; i < k; ++i) std::swap(v[i], v[i + below(v.size() - i)]);
  }

 private:
  friend class RandomStream;
  Rng(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index)
      : state_(mix64(mix64(mix64(seed ^ mix64(stream)) ^ epoch) ^ index)) {}
  uint64_t state_;
};

// A stage's random stream: one generator per (epoch, item), a function of
// (run seed, stage name, stage type) alone. A stage type whose schema does
// not declare randomized() (its output differs every epoch) may build one
// but not draw from it: draw() throws, naming the type and what to add, so
// a stage that forgot it is caught at its first draw.
class RandomStream {
 public:
  RandomStream(const StageInit& init, const std::string& type)
      : seed_(init.run.seed), stream_(hash_name(init.name + "/" + type)), type_(type) {
    const StageType* registered = Registry::global().find(type);
    declared_ = !registered || registered->schema.is_randomized();  // (a type of a test's own registry: not refused)
  }
  Rng draw(uint64_t epoch, uint64_t index) const {
    if (!declared_)
      throw std::logic_error("stage type '" + type_ + "' draws random numbers but its schema does not declare them: "
                             "add .randomized() to its Schema (otherwise flowrun takes it as deterministic and "
                             "precompute caches its first draw)");
    return Rng(seed_, stream_, epoch, index);
  }

 private:
  friend class SamplerOp;  // a sampler's order, a function of (seed, epoch): never a sample's output
  RandomStream(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream), declared_(true) {}
  uint64_t seed_, stream_;
  std::string type_;
  bool declared_ = true;
};

}  // namespace flowrun::stages

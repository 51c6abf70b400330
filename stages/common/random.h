// Counter-based randomness: every random choice is a pure function of
// (seed, stream, epoch, sample index), so results never depend on which
// thread ran what, or in which order.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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

class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream, uint64_t epoch = 0, uint64_t index = 0)
      : state_(mix64(mix64(mix64(seed ^ mix64(stream)) ^ epoch) ^ index)) {}
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
  uint64_t state_;
};

}  // namespace flowrun::stages

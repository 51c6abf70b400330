// Stage activity per thread, written as Chrome trace-event JSON
// (chrome://tracing, Perfetto) by --profile. Each thread appends to its own
// buffer, so recording costs no lock; the total is capped to bound memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace flowrun {

int64_t now_ns();  // steady clock

class Tracer {
 public:
  explicit Tracer(size_t max_events = 2'000'000) : max_events_(max_events) {}
  // Returns the id to record events under.
  uint32_t add_name(const std::string& name);
  void record(uint32_t name_id, int64_t begin_ns, int64_t end_ns);
  size_t dropped() const { return dropped_.load(); }
  // Writes the trace atomically; throws std::runtime_error naming the file.
  void write(const std::string& path) const;

 private:
  struct Event {
    uint32_t name;
    int64_t begin_ns, end_ns;
  };
  struct ThreadBuffer {
    uint32_t thread_index;
    std::vector<Event> events;
  };
  ThreadBuffer& buffer();

  size_t max_events_;
  std::atomic<size_t> recorded_{0}, dropped_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers_;
  int64_t origin_ns_ = now_ns();
  uint64_t id_ = next_id();
  static uint64_t next_id() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
  }
};

}  // namespace flowrun

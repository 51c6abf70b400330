#include "pipeline/trace.h"

#include <chrono>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "pipeline/atomic_file.h"

namespace flowrun {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint32_t Tracer::add_name(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  names_.push_back(name);
  return static_cast<uint32_t>(names_.size() - 1);
}

Tracer::ThreadBuffer& Tracer::buffer() {
  // One buffer per (thread, tracer); tracers are few and long-lived.
  // Keyed by a never-reused id, not the address (a new tracer may reuse it).
  thread_local uint64_t owner = 0;
  thread_local ThreadBuffer* mine = nullptr;
  if (owner != id_) {
    std::lock_guard<std::mutex> lock(mutex_);
    buffers_.push_back(std::make_unique<ThreadBuffer>());
    buffers_.back()->thread_index = static_cast<uint32_t>(buffers_.size());
    mine = buffers_.back().get();
    owner = id_;
  }
  return *mine;
}

void Tracer::record(uint32_t name_id, int64_t begin_ns, int64_t end_ns) {
  if (recorded_.fetch_add(1, std::memory_order_relaxed) >= max_events_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  buffer().events.push_back({name_id, begin_ns, end_ns});
}

void Tracer::write(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mutex_);
  write_file_atomically(path, [&](std::ostream& out) {
    // Streamed by hand: a DOM of millions of events would cost gigabytes.
    out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    bool first = true;
    auto separator = [&] {
      if (!first) out << ",\n";
      first = false;
    };
    for (const auto& buffer : buffers_) {
      separator();
      out << R"({"name":"thread_name","ph":"M","pid":1,"tid":)" << buffer->thread_index
          << R"(,"args":{"name":"worker )" << buffer->thread_index << "\"}}";
      for (const auto& event : buffer->events) {
        separator();
        out << "{\"name\":" << nlohmann::json(names_[event.name]).dump() << ",\"ph\":\"X\",\"pid\":1,\"tid\":"
            << buffer->thread_index << ",\"ts\":" << (event.begin_ns - origin_ns_) / 1000.0
            << ",\"dur\":" << (event.end_ns - event.begin_ns) / 1000.0 << "}";
      }
    }
    out << "\n]}\n";
  });
}

}  // namespace flowrun

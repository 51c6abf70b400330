// What flows between stages: one value of any type, plus the engine's
// bookkeeping. Copies are cheap (the value is shared), so TBB may copy items.
#pragma once

#include <any>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <typeinfo>

namespace flowrun {

std::string demangle(const char* name);

class Item {
 public:
  template <class T>
  void set(T value) { data_ = std::make_shared<std::any>(std::move(value)); }

  template <class T>
  bool holds() const { return data_ && data_->type() == typeid(T); }

  // The value as T; throws when the item holds something else (a graph wired
  // with stages that do not fit: the message names both types).
  template <class T>
  T& get() {
    if (T* value = data_ ? std::any_cast<T>(data_.get()) : nullptr) return *value;
    throw std::runtime_error("expected an item of type " + demangle(typeid(T).name()) + " but got " +
                             (data_ ? demangle(data_->type().name()) : std::string("nothing")));
  }
  template <class T>
  const T& get() const { return const_cast<Item*>(this)->get<T>(); }

  // A dropped item keeps its place in the stream (so order can be restored)
  // but later stages skip it.
  void drop() { data_.reset(); }
  bool dropped() const { return !data_; }

  // Order in this pass of the flow, set by the engine (from 0, also when a
  // resumed epoch starts part way: see source_end for the absolute place).
  uint64_t seq = 0;

  // Engine bookkeeping: how many source items this item accounts for, which
  // stage made it and when (for queue-wait counters).
  uint32_t tokens = 1;
  uint32_t producer = 0;
  int64_t ready_ns = 0;
  // One past the last source item (by sequence) this item accounts for:
  // where a run resumes once this item is fully processed.
  uint64_t source_end = 0;
  // Passed along unprocessed because the run is stopping.
  bool abandoned = false;
  // Which of its flow's sources made it: 0 = the first; a flow that joins
  // sources (`flow a + b -> ...`) alternates them, and b's items are 1.
  uint32_t origin = 0;

 private:
  std::shared_ptr<std::any> data_;
};

}  // namespace flowrun

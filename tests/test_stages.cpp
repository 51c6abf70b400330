// Stage types that exist only in the test binary, to exercise every
// parameter type and the executor's paths (errors, accumulation, phases).
#include "test_stages.h"

#include <chrono>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "pipeline/interrupt.h"
#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::test {

std::atomic<int> Probe::constructed{0};
std::atomic<int> Probe::updated{0};
std::atomic<int> Probe::stopped_interrupted{0};
std::atomic<int> Probe::stopped_normally{0};
std::vector<std::string> Probe::epochs_seen;

Schema Kitchen::schema() {
  return Schema("kitchen", "takes one parameter of every type")
      .param(Int("size", "a required int").range(1, 4096))
      .param(Float("p", "a probability").def(0.5).range(0, 1))
      .param(String("mode", "padding mode").def(std::string("reflect")).one_of({"reflect", "constant", "edge"}))
      .param(Bool("flag", "a switch").def(false))
      .param(Path("file", "a path").def(std::string("")))
      .param(FloatList("mean", "per-channel means").def(std::vector<double>{0.5}).range(0, 1))
      .param(StringList("names", "some names").def(std::vector<std::string>{}))
      .param(IntList("sizes", "some sizes").def(std::vector<int64_t>{}).at_least(0));
}

Schema FailsAt::schema() {
  return Schema("fails_at", "throws when it sees the integer `at`")
      .param(Int("at", "the value that fails").def(int64_t{0}));
}
void FailsAt::process(Item& item) {
  if (item.get<int64_t>() == at_) throw std::runtime_error("bad value " + std::to_string(at_));
}

Schema Group::schema() {
  return Schema("group", "collects `size` integers into one vector item")
      .param(Int("size", "items per group").def(int64_t{4}).at_least(1))
      .param(Bool("drop_last", "drop the last, smaller group").def(false));
}
void Group::process(Item& item, const Emit& emit) {
  current_.push_back(item.get<int64_t>());
  if (static_cast<int64_t>(current_.size()) == size_) flush_group(emit);
}
void Group::flush(const Emit& emit) {
  if (!current_.empty() && !drop_last_) flush_group(emit);
  current_.clear();
}
void Group::flush_group(const Emit& emit) {
  Item out;
  out.set(std::move(current_));
  current_.clear();
  emit(out);
}

Schema GroupSink::schema() { return Schema("group_sink", "records the groups it receives"); }
void GroupSink::process(Item& item, const Emit& emit) {
  if (item.holds<std::vector<int64_t>>()) groups_.push_back(item.get<std::vector<int64_t>>());
  emit(item);
}
void GroupSink::report(Report& report) const {
  report.set("groups", static_cast<double>(groups_.size()));
  int64_t total = 0, checksum = 0, position = 0;
  for (const auto& group : groups_)
    for (int64_t value : group) total += value, checksum += value * ++position;
  report.set("total", static_cast<double>(total));
  report.set("checksum", static_cast<double>(checksum));  // order-sensitive
  report.set("last_size", groups_.empty() ? 0 : static_cast<double>(groups_.back().size()));
}

std::vector<std::string> OrderLog::log;
Schema OrderLog::schema() { return Schema("order_log", "logs NAME:VALUE of every item"); }
void OrderLog::process(Item& item, const Emit& emit) {
  log.push_back(name_ + ":" + std::to_string(item.get<int64_t>()));
  emit(item);
}

Schema Probe::schema() {
  return Schema("probe", "a component that records how the engine treats it")
      .param(Float("lr", "a setting phases change").def(0.1))
      .param(Bool("adapts", "accept new parameters in place").def(true));
}
Probe::Probe(const StageInit& init) : adapts_(init.params.get_bool("adapts")), lr_(init.params.get_float("lr")) {
  ++constructed;
}
bool Probe::update_params(const Params& params) {
  if (!adapts_ || !params.get_bool("adapts")) return false;
  lr_ = params.get_float("lr");
  ++updated;
  return true;
}
void Probe::begin_epoch(const EpochInfo& epoch) {
  epochs_seen.push_back(epoch.phase + ":" + std::to_string(epoch.epoch) + ":" + std::to_string(epoch.epoch_in_phase) +
                        ":lr=" + std::to_string(lr_));
}
void Probe::on_stop(bool interrupted) { ++(interrupted ? stopped_interrupted : stopped_normally); }
void Probe::reset() {
  constructed = updated = stopped_interrupted = stopped_normally = 0;
  epochs_seen.clear();
}

bool GroupSink::save_state(std::string& out) const {
  std::ostringstream text;
  for (const auto& group : groups_) {
    for (int64_t value : group) text << value << ' ';
    text << '\n';
  }
  out = text.str();
  return true;
}
void GroupSink::load_state(const std::string& in) {
  groups_.clear();
  std::istringstream lines(in);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream values(line);
    groups_.emplace_back();
    for (int64_t value; values >> value;) groups_.back().push_back(value);
  }
}

Schema RandomTag::schema() {
  return Schema("random_tag", "replaces v by v * scale + a random draw below scale; drops with probability drop")
      .param(Int("scale", "the multiplier and the draws' bound").def(int64_t{1000}).range(1, 1000000))
      .param(Float("drop", "probability of dropping an item").def(0.0).range(0, 1))
      .param(Int("delay_us", "first waits (v mod 5) * delay_us: concurrent copies finish out of order").def(int64_t{0})
                 .range(0, 100000))
      .randomized();
}
RandomTag::RandomTag(const StageInit& init)
    : stream_(init, "random_tag"),
      scale_(init.params.get_int("scale")),
      delay_us_(init.params.get_int("delay_us")),
      drop_(init.params.get_float("drop")) {}
void RandomTag::process(Item& item) {
  const int64_t value = item.get<int64_t>();
  if (delay_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(value % 5 * delay_us_));
  stages::Rng rng = stream_.draw(epoch_, static_cast<uint64_t>(value));
  if (rng.chance(drop_)) return item.drop();
  item.set<int64_t>(value * scale_ + static_cast<int64_t>(rng.below(static_cast<uint64_t>(scale_))));
}

Schema StopAfter::schema() {
  return Schema("stop_after", "requests a stop when its n-th item passes (0: never)")
      .param(Int("n", "the item").def(int64_t{0}).at_least(0));
}
void StopAfter::process(Item&) {
  if (++seen_ == n_) request_stop();
}

std::optional<RunState> MemoryKeeper::kept;
Schema MemoryKeeper::schema() {
  return Schema("memory_keeper", "keeps the run's state in memory")
      .param(Bool("resume", "take the run up from the kept state").def(false));
}
std::optional<RunState> MemoryKeeper::resume_state() { return resume_ ? kept : std::nullopt; }

FLOWRUN_REGISTER_STAGE(StopAfter);
FLOWRUN_REGISTER_STAGE(RandomTag);
FLOWRUN_REGISTER_STAGE(MemoryKeeper);
FLOWRUN_REGISTER_STAGE(Kitchen);
FLOWRUN_REGISTER_STAGE(FailsAt);
FLOWRUN_REGISTER_STAGE(Group);
FLOWRUN_REGISTER_STAGE(GroupSink);
FLOWRUN_REGISTER_STAGE(Probe);
FLOWRUN_REGISTER_STAGE(OrderLog);

}  // namespace flowrun::test

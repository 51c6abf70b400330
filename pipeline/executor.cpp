#include "pipeline/executor.h"
#include "pipeline/graph_diff.h"

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <set>
#include <cstdio>
#include <memory>
#include <sstream>

#include "pipeline/error_text.h"
#include "pipeline/interrupt.h"
#include "pipeline/run_state.h"
#include "pipeline/trace.h"
#include "pipeline/worker_threads.h"

namespace flowrun {
namespace {

namespace flow = tbb::flow;

struct Counters {
  std::atomic<uint64_t> items_in{0}, items_out{0}, dropped{0};
  std::atomic<int64_t> busy_ns{0};
  std::atomic<int64_t> wait_output_ns{0};  // source: held back by the in-flight bound
  std::atomic<int64_t> queued_ns{0};       // outputs waiting for the next stage, summed over items
};

// One named stage of the graph, alive across epochs (and phases, unless a
// phase changes it in a way it cannot absorb).
struct StageSlot {
  ResolvedStage config;
  std::vector<std::unique_ptr<Stage>> ops;
  Counters counters;
  uint32_t trace_id = 0;
  uint32_t index = 0;
  bool in_phase = false;
};

// The TBB nodes of one chain for one epoch, and its bookkeeping.
struct ChainRun {
  std::vector<StageSlot*> stages;
  std::vector<StageSlot*> sources;  // stages[0], then the sources joined to it: their items alternate
  std::unique_ptr<flow::input_node<Item>> source;
  std::unique_ptr<flow::limiter_node<Item, int>> limiter;
  std::vector<std::unique_ptr<flow::graph_node>> nodes;
  std::vector<flow::receiver<Item>*> entry;  // entry[i]: where stage i's input goes; entry.back(): release
  std::vector<uint32_t> pending;             // per serial stage: tokens of items it absorbed
  std::vector<uint64_t> out_seq;             // per serial stage: next output sequence number
  std::vector<uint64_t> absorbed_end;        // per serial stage: source_end of the last item it took in
  std::vector<uint64_t> emitted_end;         // per serial stage: source_end of its last output
  std::atomic<int64_t>* max_alive = nullptr;
  std::atomic<int64_t> alive{0};
  uint64_t next_seq = 0;     // sequence numbers count from 0 in every chain run
  uint64_t first_item = 0;   // the epoch's source item this run starts at (a resumed run skips some)
  int64_t last_return_ns = 0;
  bool exhausted = false;
  bool stopped = false;
  bool flushing = false;  // the epoch's last outputs: finished even when a stop comes
};

std::string type_of(const ResolvedStage& stage) {
  std::string text;
  for (size_t i = 0; i < stage.ops.size(); ++i) text += (i ? " | " : "") + stage.ops[i].type;
  return text;
}

// The same, naming the plugin each op's type came from (for error messages).
std::string type_and_origin_of(const ResolvedStage& stage) {
  std::string text;
  for (size_t i = 0; i < stage.ops.size(); ++i) {
    text += (i ? " | " : "") + stage.ops[i].type;
    const StageType* type = stage.ops[i].stage_type;
    if (type && type->origin != "built-in") text += " from plugin " + type->origin;
  }
  return text;
}

class Runner : public StageDirectory {
 public:
  Runner(const ResolvedGraph& graph, const RunOptions& options) : graph_(graph), options_(options) {
    run_info_.seed = graph.run.seed;
    run_info_.threads = std::max(1, options.threads);
    run_info_.compute_threads = static_cast<int>(graph.run.compute_threads);
    run_info_.run_dir = options.run_dir;
    run_info_.job = options.job;
    run_info_.job.backend = graph.run.backend;
    run_info_.job.timeout_s = graph.run.timeout_s;
    if (!options.profile_path.empty()) tracer_ = std::make_unique<Tracer>();
    max_alive_ = std::vector<std::atomic<int64_t>>(graph.chains.size());
    chain_ns_.assign(graph.chains.size(), 0);
    last_pass_ns_.assign(graph.chains.size(), 0);
  }

  RunResult run() {
    int64_t start = now_ns();
    // Flows run on `threads` workers, or on one when a stage asks for it
    // (run_flow_on_one_thread).
    tbb::task_arena arena(run_info_.threads), single(1);
    arenas_ = {&arena, &single};
    RunResult result;
    RunPosition position;  // where the run stands: the next work to do
    try {
      std::optional<RunState> resume;
      int total_epochs = 0;
      for (const auto& phase : graph_.phases) total_epochs += static_cast<int>(phase.epochs);
      if (!graph_.phases.empty()) {
        prepare_phase(graph_.phases.front());
        resume = resume_state(total_epochs);
        if (resume) result.resumed_from = resume->position;
      }
      int global_epoch = 0;
      bool stopped = false;  // by a signal, or by a stage that finished the run early
      for (size_t p = 0; p < graph_.phases.size() && !stopped; ++p) {
        const ResolvedPhase& phase = graph_.phases[p];
        if (resume && global_epoch + phase.epochs <= resume->position.epoch) {
          global_epoch += static_cast<int>(phase.epochs);  // done before the stop
          continue;
        }
        prepare_phase(phase);
        for (int64_t e = 0; e < phase.epochs; ++e, ++global_epoch) {
          if (resume && global_epoch < resume->position.epoch) continue;
          position = RunPosition{global_epoch, 0, 0};
          // Ranks of a job agree on a stop at every epoch boundary too (a
          // collective: every rank passes here at the same epoch).
          if (const StopAgreement& agree = stop_agreement(); agree && !stop_requested() && agree(stop_wanted()))
            request_stop();
          if (stop_requested()) {
            stopped = true;
            break;
          }
          EpochInfo info{phase.name, static_cast<int>(p), global_epoch, static_cast<int>(e),
                         static_cast<int>(phase.epochs), graph_.run.seed};
          spdlog::debug("phase '{}' epoch {}/{} (global epoch {})", phase.name, e + 1, phase.epochs, global_epoch);
          epoch_now_ = info;
          // A state saved between epochs (an end-of-epoch checkpoint) is
          // loaded before the epoch begins, so that each stage starts the
          // epoch afresh (its per-epoch sums are the finished epoch's); one
          // saved inside an epoch after, so that the epoch goes on from it.
          const bool resume_between_epochs = resume && resume->position.at_epoch_start();
          if (resume_between_epochs) load_states(*resume);
          for_each_stage([&](StageSlot& slot, Stage& stage) { stage.begin_epoch(info); });
          if (resume) {
            if (!resume_between_epochs) load_states(*resume);
            position = resume->position;
            resume.reset();
          }
          if (!run_epoch_flow(position)) {
            stopped = true;
            break;
          }
          for_each_stage([&](StageSlot& slot, Stage& stage) { stage.end_epoch(info); });
          RunPosition next{global_epoch + 1, 0, 0};
          if (StateKeeper* k = keeper()) call_stage(*keeper_slot_, [&] { k->epoch_ended(next, collector(next)); });
        }
      }
      // A stage that ended the run early (finish_requested) completed it;
      // the request is this run's alone.
      result.interrupted = stopped && !finish_requested();
      if (result.interrupted) result.stop_reason = "interrupted";
      if (finish_requested()) {
        const std::string reason = finish_reason();
        result.stop_reason = reason.empty() ? "completed" : reason;
        set_finish_reason("");
        clear_stop_request();
      }
      if (resume) {  // resumed a run that had already finished: its final state is the result
        prepare_phase(graph_.phases.back());
        load_states(*resume);
        position = resume->position;
      } else if (!stopped) {
        position = RunPosition{global_epoch, 0, 0};
      }
      if (StateKeeper* k = keeper())
        call_stage(*keeper_slot_, [&] { k->run_stopped(position, result.interrupted, collector(position)); });
      for_each_stage([&](StageSlot& slot, Stage& stage) { stage.on_stop(result.interrupted); });
    } catch (...) {
      write_trace();
      throw;
    }
    result.elapsed_s = (now_ns() - start) / 1e9;
    result.epochs_run = position.epoch;
    result.stopped_at = position;
    collect(result);
    write_trace();
    return result;
  }

 private:
  // The graph's state keeper (a `checkpoint` stage), if it has one.
  StateKeeper* keeper() {
    StateKeeper* found = nullptr;
    for (auto& slot : slots_)
      for (auto& op : slot->ops)
        if (auto* k = dynamic_cast<StateKeeper*>(op.get())) {
          if (found && found != k)
            throw std::runtime_error("the graph has two stages that keep the run's state ('" + keeper_slot_->config.name +
                                     "' and '" + slot->config.name + "'); keep one");
          found = k;
          keeper_slot_ = slot.get();
        }
    return found;
  }

  std::optional<RunState> resume_state(int total_epochs) {
    StateKeeper* k = keeper();
    if (!k) return std::nullopt;
    std::optional<RunState> state;
    call_stage(*keeper_slot_, [&] { state = k->resume_state(); });
    if (!state) return state;
    const RunPosition& at = state->position;
    if (at.epoch > total_epochs || (at.epoch == total_epochs && !at.at_epoch_start()) ||
        at.flow >= static_cast<int>(graph_.chains.size()))
      throw StageError(keeper_slot_->config.name, "stage '" + keeper_slot_->config.name + "': the saved state is at " +
                                                       at.describe() + ", which this graph (" +
                                                       std::to_string(total_epochs) + " epochs, " +
                                                       std::to_string(graph_.chains.size()) + " flows) does not have");
    if (!state->graph.empty()) {
      const std::string difference = graph_difference(state->graph, graph_text());
      if (!difference.empty())
        spdlog::warn("resuming under a graph that differs from the one that saved the state:{}", difference);
    }
    spdlog::warn("resuming at {}", at.describe());  // not a fresh run: always say so
    return state;
  }

  // The resolved graph as text, stored with a run's state: made once, when first asked.
  const std::string& graph_text() {
    if (graph_text_.empty()) graph_text_ = graph_.format();
    return graph_text_;
  }

  // Every stateful stage's bytes at `position`, gathered when the keeper asks.
  StateCollector collector(const RunPosition& position) {
    return [this, position] {
      RunState state;
      state.position = position;
      state.graph = graph_text();
      for (auto& slot : slots_)
        for (size_t i = 0; i < slot->ops.size(); ++i) {
          std::string bytes;
          bool has = false;
          call_stage(*slot, [&] { has = slot->ops[i]->save_state(bytes); });
          if (has) state.stages[op_key(*slot, i)] = std::move(bytes);
        }
      return state;
    };
  }

  static std::string op_key(const StageSlot& slot, size_t i) {
    return slot.ops.size() > 1 ? slot.config.name + "#" + std::to_string(i) : slot.config.name;
  }

  void load_states(const RunState& state) {
    std::map<std::string, std::pair<StageSlot*, Stage*>> ops;
    for (auto& slot : slots_)
      for (size_t i = 0; i < slot->ops.size(); ++i) ops[op_key(*slot, i)] = {slot.get(), slot->ops[i].get()};
    for (const auto& entry : state.stages) {
      const std::string& key = entry.first;
      const std::string& bytes = entry.second;  // a plain reference: C++17 lambdas cannot capture bindings
      auto it = ops.find(key);
      if (it == ops.end())
        throw StageError(keeper_slot_->config.name, "stage '" + keeper_slot_->config.name +
                                                         "': the saved state holds stage '" + key +
                                                         "', which this graph does not have at " +
                                                         state.position.describe());
      call_stage(*it->second.first, [&] { it->second.second->load_state(bytes); });
    }
  }

  template <class F>
  void for_each_stage(F&& f) {
    for (auto& slot : slots_)
      if (slot->in_phase)
        for (auto& op : slot->ops) call_stage(*slot, [&] { f(*slot, *op); });
  }

  // Runs stage code, turning its exceptions into StageError naming the stage
  // (and, for an item's processing, where in the run it failed).
  template <class F>
  void call_stage(const StageSlot& slot, F&& f, std::optional<uint64_t> item_seq = std::nullopt) {
    try {
      f();
    } catch (const StageError&) {
      failed_.store(true);
      throw;
    } catch (const std::exception& e) {
      failed_.store(true);
      std::string where;
      if (item_seq)
        where = " (phase '" + epoch_now_.phase + "', epoch " + std::to_string(epoch_now_.epoch + 1) + " (" +
                std::to_string(epoch_now_.epoch_in_phase + 1) + "/" + std::to_string(epoch_now_.epochs_in_phase) +
                " of the phase), item " + std::to_string(*item_seq + 1) + " the stage received this epoch)";
      throw StageError(slot.config.name,
                       "stage '" + slot.config.name + "' (" + type_and_origin_of(slot.config) + "): " + error_text(e) + where);
    }
  }

  std::vector<Stage*> find(const std::string& name) const override {
    std::vector<Stage*> ops;
    for (const auto& slot : slots_)
      if (slot->in_phase && slot->config.name == name)
        for (const auto& op : slot->ops) ops.push_back(op.get());
    return ops;
  }

  void run_flow_on_one_thread(const std::string& name, bool one) const override {
    for (size_t c = 0; c < graph_.chains.size(); ++c)
      if (std::find(graph_.chains[c].begin(), graph_.chains[c].end(), name) != graph_.chains[c].end()) {
        if (one) one_thread_.insert(c);
        else one_thread_.erase(c);
      }
  }

  const ResolvedGraph* resolved_graph() const override { return &graph_; }

  double busy_threads_besides(const std::string& name) const override {
    for (size_t c = 0; c < graph_.chains.size(); ++c) {
      const auto& chain = graph_.chains[c];
      if (std::find(chain.begin(), chain.end(), name) == chain.end()) continue;
      if (!last_pass_ns_[c]) return 0;
      int64_t busy = 0;
      for (const auto& other : chain)
        if (other != name)
          if (auto it = last_pass_busy_ns_.find(other); it != last_pass_busy_ns_.end()) busy += it->second;
      return static_cast<double>(busy) / static_cast<double>(last_pass_ns_[c]);
    }
    return 0;
  }

  StageSlot* find_slot(const std::string& name) {
    for (auto& slot : slots_)
      if (slot->config.name == name) return slot.get();
    return nullptr;
  }

  std::unique_ptr<Stage> make_op(const StageSlot& slot, const ResolvedOp& op) {
    std::unique_ptr<Stage> stage;
    call_stage(slot, [&] {
      stage = op.stage_type->make(StageInit{slot.config.name, op.params, run_info_, services_, *this});
    });
    return stage;
  }

  // Builds the phase's stages, reusing those whose configuration is unchanged
  // or that accept the new parameters.
  void prepare_phase(const ResolvedPhase& phase) {
    for (auto& slot : slots_) slot->in_phase = false;
    for (const auto& config : phase.stages) {
      StageSlot* slot = find_slot(config.name);
      if (!slot) {
        slots_.push_back(std::make_unique<StageSlot>());
        slot = slots_.back().get();
        slot->index = static_cast<uint32_t>(slots_.size() - 1);
        slot->config = config;
        if (tracer_) slot->trace_id = tracer_->add_name(config.name);
        for (const auto& op : config.ops) slot->ops.push_back(make_op(*slot, op));
      } else if (!slot->config.same_config(config)) {
        bool same_types = slot->config.ops.size() == config.ops.size();
        for (size_t i = 0; same_types && i < config.ops.size(); ++i) same_types = slot->config.ops[i].type == config.ops[i].type;
        ResolvedStage old = slot->config;
        slot->config = config;
        if (!same_types) {
          slot->ops.clear();
          for (const auto& op : config.ops) slot->ops.push_back(make_op(*slot, op));
        } else {
          for (size_t i = 0; i < config.ops.size(); ++i) {
            if (old.ops[i].params == config.ops[i].params) continue;
            bool kept = false;
            call_stage(*slot, [&] { kept = slot->ops[i]->update_params(config.ops[i].params); });
            if (!kept) slot->ops[i] = make_op(*slot, config.ops[i]);
          }
        }
      }
      slot->in_phase = true;
    }
    // Components a phase no longer declares are let go.
    for (auto& slot : slots_)
      if (!slot->in_phase && slot->config.kind == StageKind::Component) slot->ops.clear();
  }

  int64_t concurrency_of(const StageSlot& slot) const {
    if (slot.config.kind != StageKind::Transform) return 1;
    return slot.config.concurrency > 0 ? slot.config.concurrency : run_info_.threads;
  }

  void trace(const StageSlot& slot, int64_t begin, int64_t end) {
    if (tracer_) tracer_->record(slot.trace_id, begin, end);
  }

  // The item waited in a queue between its producer and this stage.
  void count_queue_wait(const Item& item, int64_t start) {
    if (item.producer < slots_.size() && item.ready_ns)
      slots_[item.producer]->counters.queued_ns.fetch_add(start - item.ready_ns, std::memory_order_relaxed);
  }

  static void release(ChainRun& chain, uint32_t tokens) {
    if (!tokens) return;
    chain.alive.fetch_sub(tokens, std::memory_order_relaxed);
    chain.limiter->decrementer().try_put(static_cast<int>(tokens));
  }

  // An item emitted by serial stage i of the chain goes downstream.
  void forward(ChainRun& chain, size_t i, Item out) {
    StageSlot& slot = *chain.stages[i];
    out.seq = chain.out_seq[i]++;
    out.source_end = chain.emitted_end[i] = chain.absorbed_end[i];
    out.tokens = chain.pending[i];
    chain.pending[i] = 0;
    out.producer = slot.index;
    out.ready_ns = now_ns();
    slot.counters.items_out.fetch_add(1, std::memory_order_relaxed);
    chain.entry[i + 1]->try_put(out);
  }

  void build_chain(flow::graph& g, ChainRun& chain) {
    size_t n = chain.stages.size();
    chain.entry.assign(n + 1, nullptr);
    chain.pending.assign(n, 0);
    chain.out_seq.assign(n, 0);
    chain.absorbed_end.assign(n, chain.first_item);
    chain.emitted_end.assign(n, chain.first_item);
    // The in-flight bound: the input node may hold one produced item while
    // the limiter is full, so the limiter admits one less.
    chain.limiter = std::make_unique<flow::limiter_node<Item, int>>(g, static_cast<size_t>(graph_.run.in_flight - 1));

    auto release_node = std::make_unique<flow::function_node<Item, flow::continue_msg>>(
        g, flow::unlimited, [&chain](const Item& item) {
          release(chain, item.tokens);
          return flow::continue_msg();
        });
    chain.entry[n] = release_node.get();
    chain.nodes.push_back(std::move(release_node));

    bool unordered = false;  // a concurrent transform since the last ordered point
    for (size_t i = 1; i < n; ++i) {
      StageSlot& slot = *chain.stages[i];
      if (slot.config.kind == StageKind::Transform) {
        int64_t concurrency = concurrency_of(slot);
        unordered |= concurrency > 1;
        auto node = std::make_unique<flow::function_node<Item, flow::continue_msg>>(
            g, static_cast<size_t>(concurrency), [this, &chain, &slot, i](const Item& input) {
              ensure_worker_thread_setup();
              Item item = input;
              int64_t begin = now_ns();
              count_queue_wait(item, begin);
              if (!item.dropped() && !chain.flushing && stop_requested()) {
                item.drop();  // stopping: pass it on unprocessed; a resumed run replays it
                item.abandoned = true;
              }
              if (!item.dropped()) {
                slot.counters.items_in.fetch_add(1, std::memory_order_relaxed);
                call_stage(
                    slot,
                    [&] {
                      for (auto& op : slot.ops) {
                        static_cast<TransformStage&>(*op).process(item);
                        if (item.dropped()) {
                          slot.counters.dropped.fetch_add(1, std::memory_order_relaxed);
                          break;
                        }
                      }
                    },
                    item.seq);
                if (!item.dropped()) slot.counters.items_out.fetch_add(1, std::memory_order_relaxed);
              }
              int64_t end = now_ns();
              slot.counters.busy_ns.fetch_add(end - begin, std::memory_order_relaxed);
              trace(slot, begin, end);
              item.producer = slot.index;
              item.ready_ns = end;
              chain.entry[i + 1]->try_put(item);
              return flow::continue_msg();
            });
        chain.entry[i] = node.get();
        chain.nodes.push_back(std::move(node));
      } else {
        auto node = std::make_unique<flow::function_node<Item, flow::continue_msg>>(
            g, flow::serial, [this, &chain, &slot, i](const Item& input) {
              ensure_worker_thread_setup();
              Item item = input;
              int64_t begin = now_ns();
              count_queue_wait(item, begin);
              // Items come in stream order, and a stop is for good: from the
              // first item that arrives after a stop, nothing more is taken in.
              if (item.abandoned || (!chain.flushing && stop_requested())) {
                release(chain, item.tokens);
              } else if (item.dropped()) {
                chain.absorbed_end[i] = item.source_end;
                release(chain, item.tokens);  // a dropped item holds nothing: free its slot now
              } else {
                chain.absorbed_end[i] = item.source_end;
                chain.pending[i] += item.tokens;
                slot.counters.items_in.fetch_add(1, std::memory_order_relaxed);
                SerialStage::Emit emit = [this, &chain, i](Item out) { forward(chain, i, std::move(out)); };
                call_stage(slot, [&] { static_cast<SerialStage&>(*slot.ops.front()).process(item, emit); }, item.seq);
              }
              int64_t end = now_ns();
              slot.counters.busy_ns.fetch_add(end - begin, std::memory_order_relaxed);
              trace(slot, begin, end);
              return flow::continue_msg();
            });
        flow::receiver<Item>* target = node.get();
        if (unordered) {
          // Restore stream order before a stage that depends on it.
          auto sequencer = std::make_unique<flow::sequencer_node<Item>>(g, [](const Item& item) { return item.seq; });
          flow::make_edge(*sequencer, *node);
          target = sequencer.get();
          chain.nodes.push_back(std::move(sequencer));
        }
        unordered = false;
        chain.entry[i] = target;
        chain.nodes.push_back(std::move(node));
      }
    }
    if (n > 1) {
      flow::make_edge(*chain.limiter, *chain.entry[1]);
    } else {
      flow::make_edge(*chain.limiter, *chain.entry[n]);
    }

    chain.source = std::make_unique<flow::input_node<Item>>(g, [this, &chain](tbb::flow_control& control) {
      ensure_worker_thread_setup();
      int64_t begin = now_ns();
      if (chain.last_return_ns) chain.sources[0]->counters.wait_output_ns.fetch_add(begin - chain.last_return_ns);
      if (stop_requested() || failed_.load()) {
        chain.stopped = true;
        control.stop();
        return Item();
      }
      // Joined sources take turns: item j of the epoch comes from source j % m.
      const size_t origin = static_cast<size_t>((chain.first_item + chain.next_seq) % chain.sources.size());
      StageSlot& source_slot = *chain.sources[origin];
      Item item;
      bool more = false;
      call_stage(source_slot, [&] {
        auto& source = static_cast<SourceStage&>(*source_slot.ops.front());
        more = source.next(item);
        if (!more && origin > 0) {  // a joined source starts over: the first source alone ends the epoch
          source.begin_epoch(epoch_now_);
          more = source.next(item);
          if (!more)
            throw std::runtime_error("it is joined to the flow from '" + chain.sources[0]->config.name +
                                     "' but has no items this epoch");
        }
      });
      int64_t end = now_ns();
      source_slot.counters.busy_ns.fetch_add(end - begin, std::memory_order_relaxed);
      trace(source_slot, begin, end);
      if (!more) {
        chain.exhausted = true;
        chain.last_return_ns = 0;
        control.stop();
        return Item();
      }
      source_slot.counters.items_out.fetch_add(1, std::memory_order_relaxed);
      item.seq = chain.next_seq++;
      item.source_end = chain.first_item + item.seq + 1;
      item.tokens = 1;
      item.origin = static_cast<uint32_t>(origin);
      item.producer = source_slot.index;
      item.ready_ns = end;
      int64_t alive = chain.alive.fetch_add(1, std::memory_order_relaxed) + 1;
      int64_t seen = chain.max_alive->load(std::memory_order_relaxed);
      while (alive > seen && !chain.max_alive->compare_exchange_weak(seen, alive)) {
      }
      chain.last_return_ns = end;
      return item;
    });
    flow::make_edge(*chain.source, *chain.limiter);
  }

  // One epoch: the flows run one after another, in the order written (a
  // training flow, then its evaluation). False when a stop request cut it short.
  // `position` starts where the epoch's work starts (a resumed run may begin
  // mid-flow) and, after a stop, says where it stopped.
  bool run_epoch_flow(RunPosition& position) {
    for (size_t c = static_cast<size_t>(position.flow); c < graph_.chains.size(); ++c) {
      uint64_t items = position.items;
      position.flow = static_cast<int>(c);
      position.items = 0;
      bool completed = false;
      arenas_[one_thread_.count(c) ? 1 : 0]->execute([&] { completed = run_chain(c, items, position.items); });
      if (!completed) return false;
    }
    position.flow = 0;
    return true;
  }

  // Runs flow `c` from source item `start`. False when a stop cut it short;
  // then `stopped_at` is the first source item whose work is not done.
  bool run_chain(size_t c, uint64_t start, uint64_t& stopped_at) {
    struct Clock {  // the flow's own running time: its stages' capacity
      int64_t& total;
      int64_t start = now_ns();
      ~Clock() { total += now_ns() - start; }
    } clock{chain_ns_[c]};
    flow::graph g;
    ChainRun chain;
    for (const auto& name : graph_.chains[c]) chain.stages.push_back(find_slot(name));
    for (const auto& name : graph_.sources_of(graph_.chains[c].front())) chain.sources.push_back(find_slot(name));
    chain.max_alive = &max_alive_[c];
    if (start) {
      // Each source passes over its share of the first `start` items (a
      // joined one starting over as it does while running).
      const uint64_t m = chain.sources.size();
      for (uint64_t k = 0; k < m; ++k) {
        StageSlot& source = *chain.sources[k];
        const uint64_t count = start > k ? (start - k + m - 1) / m : 0;
        uint64_t skipped = 0;
        call_stage(source, [&] {
          auto& stage = static_cast<SourceStage&>(*source.ops.front());
          skipped = stage.skip(count);
          while (k > 0 && skipped < count) {
            stage.begin_epoch(epoch_now_);
            const uint64_t more = stage.skip(count - skipped);
            if (!more) break;
            skipped += more;
          }
        });
        if (skipped < count)
          throw std::runtime_error("cannot resume the flow from '" + source.config.name + "' at item " +
                                   std::to_string(count) + ": this epoch it has only " + std::to_string(skipped) +
                                   " (did its data change?)");
      }
      chain.first_item = start;
    }
    build_chain(g, chain);
    std::vector<int64_t> busy_before;
    for (const StageSlot* slot : chain.stages) busy_before.push_back(slot->counters.busy_ns.load());
    const int64_t pass_start = now_ns();
    chain.source->activate();
    g.wait_for_all();
    // A stop may come after the source is done but before every item is.
    if (chain.stopped || stop_requested()) {
      // Every item has drained: a serial stage holding items (a partial
      // batch) has done the work up to its last output; one holding nothing,
      // up to its last input. The earliest of these is where to resume.
      stopped_at = chain.first_item + chain.next_seq;
      bool any_serial = false;
      for (size_t i = 1; i < chain.stages.size(); ++i) {
        if (chain.stages[i]->config.kind != StageKind::Serial) continue;
        uint64_t done = chain.pending[i] ? chain.emitted_end[i] : chain.absorbed_end[i];
        stopped_at = any_serial ? std::min(stopped_at, done) : done;
        any_serial = true;
      }
      if (!any_serial) stopped_at = start;  // nothing kept: the flow starts over
      return false;
    }
    if (!chain.exhausted) throw_stalled(chain);
    // End of the epoch: serial stages hand over what they hold, in flow order.
    chain.flushing = true;
    for (size_t i = 1; i < chain.stages.size(); ++i) {
      StageSlot& slot = *chain.stages[i];
      if (slot.config.kind != StageKind::Serial) continue;
      SerialStage::Emit emit = [this, &chain, i](Item out) { forward(chain, i, std::move(out)); };
      call_stage(slot, [&] { static_cast<SerialStage&>(*slot.ops.front()).flush(emit); });
      g.wait_for_all();
      release(chain, chain.pending[i]);
      chain.pending[i] = 0;
    }
    g.wait_for_all();
    // What this pass kept busy, for stages that size their own threads by it.
    last_pass_ns_[c] = now_ns() - pass_start;
    for (size_t i = 0; i < chain.stages.size(); ++i)
      last_pass_busy_ns_[chain.stages[i]->config.name] = chain.stages[i]->counters.busy_ns.load() - busy_before[i];
    if (chain.alive.load() != 0)  // an engine bug, never to pass silently
      throw std::runtime_error("the flow from '" + chain.stages[0]->config.name + "' lost " +
                               std::to_string(chain.alive.load()) + " item(s) this epoch");
    return true;
  }

  [[noreturn]] void throw_stalled(const ChainRun& chain) {
    std::string holders;
    for (size_t i = 0; i < chain.stages.size(); ++i)
      if (chain.pending.size() > i && chain.pending[i])
        holders += (holders.empty() ? "" : ", ") + chain.stages[i]->config.name + " holds " + std::to_string(chain.pending[i]);
    throw std::runtime_error("the flow from '" + chain.stages[0]->config.name + "' stalled: its stages hold every " +
                             "admitted item (" + holders + ") and wait for more than run.in_flight=" +
                             std::to_string(graph_.run.in_flight) + " allows; raise run.in_flight");
  }

  void collect(RunResult& result) {
    double best = -1;
    for (size_t c = 0; c < graph_.chains.size(); ++c) {
      // Flows take turns: a stage's capacity is the time its own flow ran.
      const double elapsed = std::max(chain_ns_[c] / 1e9, 1e-9);
      std::vector<std::string> names = graph_.sources_of(graph_.chains[c].front());
      names.insert(names.end(), graph_.chains[c].begin() + 1, graph_.chains[c].end());
      for (const auto& name : names) {
        const StageSlot& slot = *find_slot(name);
        StageStats stats;
        stats.name = name;
        stats.type = type_of(slot.config);
        stats.kind = slot.config.kind;
        stats.concurrency = concurrency_of(slot);
        stats.items_in = slot.counters.items_in;
        stats.items_out = slot.counters.items_out;
        stats.dropped = slot.counters.dropped;
        stats.busy_s = slot.counters.busy_ns / 1e9;
        stats.wait_output_s = slot.counters.wait_output_ns / 1e9;
        stats.output_queue_ms = stats.items_out ? slot.counters.queued_ns / 1e6 / stats.items_out : 0;
        double capacity = elapsed * std::min<int64_t>(stats.concurrency, run_info_.threads);
        stats.wait_input_s = std::max(0.0, capacity - stats.busy_s - stats.wait_output_s);
        stats.utilization = std::min(1.0, stats.busy_s / capacity);
        stats.bound_s = stats.busy_s / std::max<int64_t>(1, std::min<int64_t>(stats.concurrency, run_info_.threads));
        Report report;
        for (const auto& op : slot.ops) op->report(report);
        stats.figures = report.figures();
        // Not the busiest of its own capacity: a short flow's stage (predict
        // once at the end) can be busy all of its flow's 0.7 s while another
        // flow's trainer takes 7 s. The run lasts at least each stage's busy
        // time over the threads it can use; the largest such time bounds it.
        if (stats.bound_s > best) {
          best = stats.bound_s;
          result.bottleneck = name;
        }
        result.stages.push_back(std::move(stats));
      }
    }
    for (const auto& slot : slots_) {
      if (slot->config.kind != StageKind::Component || slot->ops.empty()) continue;
      Report report;
      for (const auto& op : slot->ops) op->report(report);
      result.component_figures[slot->config.name] = report.figures();
    }
    for (const auto& max : max_alive_) result.max_in_flight.push_back(max.load());
    if (tracer_) result.trace_events_dropped = tracer_->dropped();
    struct rusage usage {};
    if (getrusage(RUSAGE_SELF, &usage) == 0) result.peak_rss_mb = usage.ru_maxrss / 1024.0;
  }

  void write_trace() {
    if (!tracer_) return;
    tracer_->write(options_.profile_path);
    if (tracer_->dropped()) spdlog::warn("profile: {} events past the cap were not recorded", tracer_->dropped());
  }

  const ResolvedGraph& graph_;
  RunOptions options_;
  RunInfo run_info_;
  Services services_;
  std::vector<std::unique_ptr<StageSlot>> slots_;
  std::unique_ptr<Tracer> tracer_;
  std::vector<std::atomic<int64_t>> max_alive_;
  std::vector<int64_t> chain_ns_;  // per flow: time spent running it
  std::vector<int64_t> last_pass_ns_;                 // per flow: how long its last complete pass took
  std::map<std::string, int64_t> last_pass_busy_ns_;  // per stage: busy time in its flow's last complete pass
  mutable std::set<size_t> one_thread_;                     // flows that run on one worker thread
  std::vector<tbb::task_arena*> arenas_;              // all the workers, one worker
  std::atomic<bool> failed_{false};
  EpochInfo epoch_now_;  // the epoch under way (named in a stage's errors)
  StageSlot* keeper_slot_ = nullptr;
  std::string graph_text_;
};

}  // namespace

RunResult run_graph(const ResolvedGraph& graph, const RunOptions& options) {
  Runner runner(graph, options);
  return runner.run();
}

std::string format_stage_table(const RunResult& result) {
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof line, "%-14s %-22s %-9s %4s %4s %4s %10s %10s %8s %9s %9s %10s %8s %6s\n", "stage",
                "type", "kind", "conc", "thr", "prec", "items_in", "items_out", "dropped", "busy_s", "wait_in_s", "wait_out_s",
                "queue_ms", "busy%");
  out << line;
  for (const auto& s : result.stages) {
    std::string type = s.type.size() > 22 ? s.type.substr(0, 21) + "~" : s.type;
    // Threads of its own a stage's work used (a model's tensor kernels), as it reports them.
    auto threads = s.figures.find("compute_threads");
    std::string thr = threads == s.figures.end() ? "-" : std::to_string(static_cast<long long>(threads->second));
    // The precision a model's forward passes ran in, as it reports it.
    auto bf16 = s.figures.find("bf16");
    const char* prec = bf16 == s.figures.end() ? "-" : bf16->second != 0 ? "bf16" : "fp32";
    std::snprintf(line, sizeof line, "%-14s %-22s %-9s %4lld %4s %4s %10llu %10llu %8llu %9.3f %9.3f %10.3f %8.3f %5.1f%%\n",
                  s.name.c_str(), type.c_str(), to_string(s.kind), static_cast<long long>(s.concurrency), thr.c_str(), prec,
                  static_cast<unsigned long long>(s.items_in), static_cast<unsigned long long>(s.items_out),
                  static_cast<unsigned long long>(s.dropped), s.busy_s, s.wait_input_s, s.wait_output_s,
                  s.output_queue_ms, 100 * s.utilization);
    out << line;
  }
  if (!result.bottleneck.empty()) {
    for (const auto& s : result.stages)
      if (s.name == result.bottleneck) {
        std::snprintf(line, sizeof line,
                      "bottleneck: %s (busy %.3f s over the threads it can use: %.1f%% of the run; %.1f%% of its "
                      "flow's capacity); elapsed %.3f s\n",
                      s.name.c_str(), s.bound_s, 100 * s.bound_s / std::max(result.elapsed_s, 1e-9),
                      100 * s.utilization, result.elapsed_s);
        out << line;
      }
  }
  return out.str();
}

}  // namespace flowrun

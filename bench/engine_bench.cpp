// The executor's own cost per item: a count source, N pass-through
// transforms and a sink, at several thread counts. Run:
//   build/bench/engine_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include "pipeline/executor.h"
#include "pipeline/graph.h"

namespace {

flowrun::ResolvedGraph make_graph(int transforms, int items) {
  std::string text = "run in_flight=256\nsource = count count=" + std::to_string(items) + "\n";
  for (int i = 0; i < transforms; ++i) text += "t" + std::to_string(i) + " = sleep us=0\n";
  text += "sink = sink\n";
  flowrun::Diagnostics diagnostics;
  flowrun::GraphSpec spec = flowrun::parse_graph(text, "bench.graph", diagnostics);
  return flowrun::resolve_graph(spec, flowrun::Registry::global());
}

void BM_Chain(benchmark::State& state) {
  const int transforms = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int items = 100000;
  flowrun::ResolvedGraph graph = make_graph(transforms, items);
  flowrun::RunOptions options;
  options.threads = threads;
  for (auto _ : state) flowrun::run_graph(graph, options);
  state.counters["items_per_s"] = benchmark::Counter(static_cast<double>(items) * state.iterations(),
                                                     benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Chain)->ArgsProduct({{0, 1, 4}, {1, 2}})->ArgNames({"transforms", "threads"})->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

// The executor: bounded in-flight items, order, accumulation, phases, errors,
// cancellation, counters and traces.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "pipeline/executor.h"
#include "pipeline/interrupt.h"
#include "pipeline/run_state.h"
#include "pipeline/summary.h"
#include "test_stages.h"
#include "test_support.h"

using namespace flowrun;
using flowrun::test::resolve_text;

namespace {

RunResult run_text(const std::string& text, int threads = 2, const std::vector<std::string>& sets = {},
                   const std::string& profile = "") {
  ResolvedGraph graph = resolve_text(text, sets);
  RunOptions options;
  options.threads = threads;
  options.profile_path = profile;
  return run_graph(graph, options);
}

const StageStats& stats_of(const RunResult& result, const std::string& name) {
  for (const auto& s : result.stages)
    if (s.name == name) return s;
  throw std::runtime_error("no stage " + name);
}

}  // namespace

// A million items into a slow sink: never more than in_flight alive at once,
// however far ahead the source could run.
TEST(Executor, LongStreamsNeverExceedTheInFlightBound) {
#ifdef FLOWRUN_TEST_SANITIZED
  const double n = 200000;  // under a sanitizer a million items take a minute or more
#else
  const double n = 1000000;
#endif
  RunResult result = run_text("run in_flight=64\nsource = count count=" + std::to_string(static_cast<int>(n)) +
                                  "\nwork = sleep concurrency=2\nsink = sink\n",
                              2);
  ASSERT_EQ(result.max_in_flight.size(), 1u);
  EXPECT_LE(result.max_in_flight[0], 64);
  EXPECT_GE(result.max_in_flight[0], 32);  // the sink is the slow end: the bound is reached, not idle
  const StageStats& sink = stats_of(result, "sink");
  EXPECT_EQ(sink.figures.at("items"), n);
  EXPECT_EQ(sink.figures.at("sum"), n * (n - 1) / 2);
  EXPECT_EQ(sink.figures.at("ordered"), 1.0);
}

TEST(Executor, SlowSinkHoldsTheSourceBack) {
  RunResult result = run_text("run in_flight=8\nsource = count count=400\nsink = sink us=500\n", 2);
  EXPECT_LE(result.max_in_flight[0], 8);
  EXPECT_EQ(stats_of(result, "sink").figures.at("items"), 400.0);
  // The source spent most of the run waiting for room, and the table names the sink.
  EXPECT_GT(stats_of(result, "source").wait_output_s, 0.5 * result.elapsed_s);
  EXPECT_EQ(result.bottleneck, "sink");
}

TEST(Executor, ConcurrentTransformsKeepStreamOrderForSerialStages) {
  for (int threads : {1, 2, 4}) {
    RunResult result = run_text(
        "run in_flight=32\nsource = count count=2000\nwork = sleep us=20 concurrency=4\ng = group size=7\n"
        "out = group_sink\n",
        threads);
    const auto& figures = stats_of(result, "out").figures;
    EXPECT_EQ(figures.at("groups"), 286.0) << threads;  // 2000 / 7, rounded up: the flush emits the last 5
    EXPECT_EQ(figures.at("last_size"), 5.0);
    EXPECT_EQ(figures.at("total"), 1999000.0);
    // In order: the position-weighted sum of 0..1999 is sum(i * (i+1)).
    EXPECT_EQ(figures.at("checksum"), 2666666000.0) << threads;
    EXPECT_LE(result.max_in_flight[0], 32);
  }
}

TEST(Executor, DroppedItemsKeepTheirPlaceAndReleaseTheirSlots) {
  RunResult result = run_text(
      "run in_flight=8\nsource = count count=1000\nwork = sleep drop_every=3 concurrency=2\ng = group size=5 "
      "drop_last=true\nout = group_sink\n",
      2);
  // 1000 items, 334 multiples of 3 dropped: 666 kept, 133 full groups, 1 left over and dropped.
  EXPECT_EQ(stats_of(result, "work").dropped, 334u);
  EXPECT_EQ(stats_of(result, "g").items_in, 666u);
  EXPECT_EQ(stats_of(result, "out").figures.at("groups"), 133.0);
  EXPECT_EQ(stats_of(result, "out").figures.at("last_size"), 5.0);
}

TEST(Executor, StalledFlowIsAnErrorNotAHang) {
  try {
    run_text("run in_flight=4\nsource = count count=100\ng = group size=10\nout = group_sink\n", 2);
    FAIL() << "expected a stall error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(),
                 "the flow from 'source' stalled: its stages hold every admitted item (g holds 3) and wait for more "
                 "than run.in_flight=4 allows; raise run.in_flight");
  }
}

TEST(Executor, StageErrorStopsTheRunAndNamesTheStage) {
  try {
    run_text("run in_flight=16\nsource = count count=1000000\nbad = fails_at at=500\nsink = sink\n", 2);
    FAIL() << "expected a StageError";
  } catch (const StageError& e) {
    EXPECT_EQ(e.stage(), "bad");
    // Where it failed: the phase, the epoch, and which of the stage's items (from 1).
    EXPECT_STREQ(e.what(),
                 "stage 'bad' (fails_at): bad value 500 (phase 'main', epoch 1 (1/1 of the phase), item 501 the stage "
                 "received this epoch)");
  }
  // In a later phase and epoch, the error says so.
  try {
    run_text("source = count count=20\nbad = fails_at at=7\nsink = sink\n"
             "phase warm epochs=1 { bad.at = 100 }\nphase main epochs=3 { bad.at = 7 }\n", 2);
    FAIL() << "expected a StageError";
  } catch (const StageError& e) {
    EXPECT_NE(std::string(e.what()).find("bad value 7 (phase 'main', epoch 2 (1/3 of the phase), item 8 "), std::string::npos)
        << e.what();
  }
}

TEST(Executor, WrongItemTypeNamesBothTypes) {
  try {
    run_text("source = count count=10\ng = group size=2\nagain = group size=2\nout = group_sink\n", 1);
    FAIL() << "expected a StageError";
  } catch (const StageError& e) {
    EXPECT_EQ(e.stage(), "again");
    EXPECT_NE(std::string(e.what()).find("expected an item of type long but got std::vector<long"), std::string::npos)
        << e.what();
  }
}

TEST(Executor, PhasesRunInOrderAndStagesAdaptOrAreRebuilt) {
  test::Probe::reset();
  RunResult result = run_text(
      "source = count count=10\nsink = sink\n"
      "phase head epochs=2 { opt = probe lr=0.5 }\n"
      "phase full epochs=1 { opt = probe lr=0.25 }\n"
      "phase last epochs=1 { opt = probe lr=0.125 adapts=false }\n",
      2);
  EXPECT_EQ(result.epochs_run, 4);
  EXPECT_EQ(stats_of(result, "sink").figures.at("items"), 40.0);
  EXPECT_EQ(test::Probe::epochs_seen,
            (std::vector<std::string>{"head:0:0:lr=0.500000", "head:1:1:lr=0.500000", "full:2:0:lr=0.250000",
                                      "last:3:0:lr=0.125000"}));
  EXPECT_EQ(test::Probe::constructed, 2);  // built once, rebuilt when it would not adapt
  EXPECT_EQ(test::Probe::updated, 1);
  EXPECT_EQ(test::Probe::stopped_normally, 1);
  EXPECT_EQ(test::Probe::stopped_interrupted, 0);
}

TEST(Executor, StopRequestEndsTheRunAndLetsStagesSave) {
  test::Probe::reset();
  clear_stop_request();
  install_stop_signal_handlers();
  std::thread signaller([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::raise(SIGINT);
  });
  RunResult result =
      run_text("run in_flight=16\nsource = count count=100000000\nsink = sink us=10\np = probe\n", 2);
  signaller.join();
  clear_stop_request();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  EXPECT_TRUE(result.interrupted);
  EXPECT_EQ(result.epochs_run, 0);
  double items = stats_of(result, "sink").figures.at("items");
  EXPECT_GT(items, 0);
  EXPECT_LT(items, 1e8);
  // The stop comes at the next item boundary: items still in flight are
  // passed on unprocessed (at most in_flight of them), and the run says
  // where its work ended, for a resumed run to go on from.
  const double made = static_cast<double>(stats_of(result, "source").items_out);
  EXPECT_LE(items, made);
  EXPECT_LE(made - items, 16);
  EXPECT_EQ(static_cast<double>(result.stopped_at.items), items);
  EXPECT_EQ(result.stopped_at.epoch, 0);
  EXPECT_EQ(test::Probe::stopped_interrupted, 1);
}

TEST(Executor, SameSeedSameResultWhateverTheThreads) {
  // Random stages (draws from seed, epoch and item) running 3 at a time
  // before order-sensitive serial stages, over two epochs: the same seed
  // gives the very same stream (the checksum weighs each value by its
  // position, exactly: values < 3e6 at positions < 5000) whatever the
  // threads; another seed, another stream. The first one's items wait 0 to
  // 80 us, so with threads they reach the next stages out of order: a draw
  // taken in arrival order (not keyed by the item) shows.
  const std::string graph =
      "run epochs=2\nsource = count count=3000\njitter = random_tag scale=100 drop=0.2 delay_us=20 concurrency=3\n"
      "work = sleep drop_every=5 concurrency=3\nmore = random_tag scale=10 concurrency=2\ng = group size=9\n"
      "out = group_sink\n";
  auto run = [&](int threads, const std::string& seed) {
    const RunResult result = run_text(graph, threads, {"run.seed=" + seed});
    const auto& figures = stats_of(result, "out").figures;
    return std::make_pair(figures.at("checksum"), figures.at("total"));
  };
  const auto first = run(1, "7");
  EXPECT_EQ(run(2, "7"), first);
  EXPECT_EQ(run(3, "7"), first);
  EXPECT_NE(run(2, "8"), first);
}

TEST(Executor, CountersAndSummary) {
  RunResult result = run_text("source = count count=200\nwork = sleep us=200 concurrency=1\nsink = sink\n", 2);
  const StageStats& work = stats_of(result, "work");
  EXPECT_EQ(work.items_in, 200u);
  EXPECT_EQ(work.items_out, 200u);
  EXPECT_GE(work.busy_s, 200 * 200e-6);
  EXPECT_EQ(result.bottleneck, "work");
  nlohmann::json summary = summary_json(result);
  EXPECT_EQ(summary["stages"]["work"]["items_in"], 200);
  EXPECT_EQ(summary["items"], 200.0);
  EXPECT_GT(summary["elapsed_s"].get<double>(), 0.0);
  EXPECT_EQ(summary["bottleneck"], "work");
  std::string table = format_stage_table(result);
  EXPECT_NE(table.find("bottleneck: work"), std::string::npos) << table;
}

TEST(Executor, ProfileWritesAChromeTrace) {
  std::string path = test::temp_dir() + "/trace.json";
  run_text("source = count count=50\nwork = sleep us=10\nsink = sink\n", 2, {}, path);
  std::ifstream in(path);
  nlohmann::json trace = nlohmann::json::parse(in);
  int work_events = 0;
  for (const auto& event : trace["traceEvents"])
    if (event["ph"] == "X" && event["name"] == "work") {
      ++work_events;
      EXPECT_GE(event["dur"].get<double>(), 10.0);
    }
  EXPECT_EQ(work_events, 50);
}

TEST(Executor, FlowsRunOneAfterAnotherInTheOrderWritten) {
  test::OrderLog::log.clear();
  run_text("b = count count=3 start=10\ny = order_log\na = count count=3\nx = order_log\nflow a -> x\nflow b -> y\n"
           "run epochs=2\n",
           2);
  EXPECT_EQ(test::OrderLog::log, (std::vector<std::string>{"x:0", "x:1", "x:2", "y:10", "y:11", "y:12", "x:0", "x:1",
                                                           "x:2", "y:10", "y:11", "y:12"}));
}

TEST(Executor, SourceOnlyChainAndZeroEpochs) {
  RunResult result = run_text("source = count count=10\n", 1);
  EXPECT_EQ(stats_of(result, "source").items_out, 10u);
  result = run_text("source = count count=10\nsink = sink\n", 1, {"run.epochs=0"});
  EXPECT_EQ(result.epochs_run, 0);
}

// Stop anywhere, resume from the kept state: the same groups in the same
// order as a run that never stopped, whatever the threads — with dropped
// items, concurrent transforms and a serial stage holding a partial group
// at the stop.
TEST(Executor, AResumedRunEndsAsIfItHadNeverStopped) {
  const std::string graph =
      "run in_flight=16 epochs=3\nsource = count count=100\nwork = sleep drop_every=7 concurrency=3\n"
      "stop = stop_after\ng = group size=9\nout = group_sink\nkeeper = memory_keeper\n"
      "flow source -> work -> stop -> g -> out\n";
  clear_stop_request();
  test::MemoryKeeper::kept.reset();
  RunResult whole = run_text(graph, 2);
  ASSERT_FALSE(whole.interrupted);
  const auto& expected = stats_of(whole, "out").figures;
  for (int threads : {1, 2, 3})
    for (int stop_at : {5, 95, 150, 240}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", stop at item " + std::to_string(stop_at));
      test::MemoryKeeper::kept.reset();
      RunResult stopped = run_text(graph, threads, {"stop.n=" + std::to_string(stop_at)});
      clear_stop_request();
      ASSERT_TRUE(stopped.interrupted);
      ASSERT_TRUE(test::MemoryKeeper::kept.has_value());
      EXPECT_EQ(test::MemoryKeeper::kept->position.epoch, stopped.stopped_at.epoch);
      RunResult resumed = run_text(graph, threads, {"keeper.resume=true"});
      ASSERT_FALSE(resumed.interrupted);
      ASSERT_TRUE(resumed.resumed_from.has_value());
      EXPECT_EQ(resumed.epochs_run, 3);
      // Only the rest was done again.
      EXPECT_EQ(stats_of(resumed, "source").items_out + resumed.resumed_from->epoch * 100 +
                    resumed.resumed_from->items,
                stats_of(whole, "source").items_out);
      const auto& got = stats_of(resumed, "out").figures;
      for (const char* key : {"groups", "total", "checksum", "last_size"}) EXPECT_EQ(got.at(key), expected.at(key)) << key;
    }
}

TEST(Executor, SavedCountsAreDecimalDigitsOnly) {
  EXPECT_EQ(parse_saved_count("0"), 0u);
  EXPECT_EQ(parse_saved_count("150"), 150u);
  EXPECT_EQ(parse_saved_count("4611686018427387904"), uint64_t{1} << 62);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1x", "0x10", "4611686018427387905", "99999999999999999999"})
    EXPECT_EQ(parse_saved_count(bad), std::nullopt) << "'" << bad << "'";
}

// A flow joining sources alternates their items; the first defines the
// epoch, a joined one starts over when it runs out (here: 3 of a's, 2 of t's).
TEST(Executor, JoinedSourcesAlternateAndTheFirstEndsTheEpoch) {
  for (int threads : {1, 3}) {
    test::OrderLog::log.clear();
    run_text("a = count count=3\nt = count count=2 start=100\nwork = sleep concurrency=3\nx = order_log\n"
             "flow a + t -> work -> x\nrun epochs=2\n",
             threads);
    const std::vector<std::string> epoch = {"x:0", "x:100", "x:1", "x:101", "x:2", "x:100"};
    std::vector<std::string> both = epoch;
    both.insert(both.end(), epoch.begin(), epoch.end());
    EXPECT_EQ(test::OrderLog::log, both) << threads;
  }
  EXPECT_THROW(
      {
        try {
          run_text("a = count count=3\nt = count count=0\nx = order_log\nflow a + t -> x\n", 1);
        } catch (const StageError& e) {
          EXPECT_STREQ(e.what(), "stage 't' (count): it is joined to the flow from 'a' but has no items this epoch");
          throw;
        }
      },
      StageError);
}

// Stopped anywhere, a joined flow resumes as if it had never stopped: each
// source takes up its own share, the joined one in its second round too.
TEST(Executor, AResumedJoinedFlowEndsAsIfItHadNeverStopped) {
  const std::string graph =
      "run in_flight=16 epochs=2\nsource = count count=40\ntarget = count count=15 start=1000\n"
      "work = sleep drop_every=7 concurrency=3\nstop = stop_after\ng = group size=9\nout = group_sink\n"
      "keeper = memory_keeper\nflow source + target -> work -> stop -> g -> out\n";
  clear_stop_request();
  test::MemoryKeeper::kept.reset();
  RunResult whole = run_text(graph, 2);
  ASSERT_FALSE(whole.interrupted);
  EXPECT_EQ(stats_of(whole, "target").items_out, 80u);  // 40 an epoch: 15, 15 again, then 10
  const auto& expected = stats_of(whole, "out").figures;
  for (int threads : {1, 2})
    for (int stop_at : {5, 37, 100, 130}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", stop at item " + std::to_string(stop_at));
      test::MemoryKeeper::kept.reset();
      RunResult stopped = run_text(graph, threads, {"stop.n=" + std::to_string(stop_at)});
      clear_stop_request();
      ASSERT_TRUE(stopped.interrupted);
      RunResult resumed = run_text(graph, threads, {"keeper.resume=true"});
      ASSERT_FALSE(resumed.interrupted);
      const auto& got = stats_of(resumed, "out").figures;
      for (const char* key : {"groups", "total", "checksum", "last_size"}) EXPECT_EQ(got.at(key), expected.at(key)) << key;
    }
}

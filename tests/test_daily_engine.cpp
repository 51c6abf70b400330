// Issue 21 on the engine's side: the bottleneck is the stage that bounds the
// run, and the summary says where and why a run ended, counts as integers.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pipeline/executor.h"
#include "pipeline/graph_diff.h"
#include "pipeline/summary.h"
#include "test_support.h"

using namespace flowrun;

namespace {
RunResult run_text(const std::string& text, int threads) {
  ResolvedGraph graph = test::resolve_text(text);
  RunOptions options;
  options.threads = threads;
  return run_graph(graph, options);
}
}  // namespace

// Item 11: two items in flight keep the first flow's 4-wide stage at
// half of its capacity, while the second flow's short serial stage is
// busy all of its flow's time; the first one's 0.4 s of work over 4 threads
// (0.1 s) bound the run, not the second's 0.04 s.
TEST(DailyEngine, TheBottleneckIsTheStageWhoseBusyTimeBoundsTheRun) {
  RunResult result = run_text(
      "run in_flight=2\n"
      "a = count count=100\nwork = sleep us=4000 concurrency=4\nsa = sink\n"
      "b = count count=20\nquick = sleep us=2000\nsb = sink\n"
      "flow a -> work -> sa\nflow b -> quick -> sb\n",
      4);
  EXPECT_EQ(result.bottleneck, "work");
  const std::string table = format_stage_table(result);
  EXPECT_NE(table.find("bottleneck: work ("), std::string::npos) << table;
  for (const auto& s : result.stages) {
    if (s.name == "work") {
      EXPECT_NEAR(s.bound_s, s.busy_s / 4, 1e-9);
    }
  }
}

// Item 13: a complete 3-epoch run ended at the end of epoch 3 (not "epoch 4"),
// completed, and its counts are integers.
TEST(DailyEngine, TheSummarySaysACompleteRunEndedAfterItsLastEpoch) {
  RunResult result = run_text("run epochs=3\nsource = count count=10\nsink = sink\n", 2);
  nlohmann::json summary = summary_json(result);
  EXPECT_EQ(summary["stopped_at"], "end of epoch 3");
  EXPECT_EQ(summary["stop_reason"], "completed");
  EXPECT_EQ(summary["epochs"], 3);
  ASSERT_TRUE(summary.contains("items"));
  EXPECT_TRUE(summary["items"].is_number_integer()) << summary["items"];
  EXPECT_TRUE(summary["stages"]["sink"]["figures"]["items"].is_number_integer());
}

// Item 8: resuming as the README says (--set checkpoint.resume=...) always
// warned that the graph differs; run-control settings are no difference,
// and a real difference is named.
TEST(DailyEngine, ResumingComparesTheGraphsWithoutRunControlAndNamesWhatDiffers) {
  const std::string graph = "run threads=2\nsource = count count=10\nsink = sink\n";
  const std::string saved = test::resolve_text(graph).format();
  const std::string other_threads = test::resolve_text(graph, {"run.threads=1", "run.timeout=30"}).format();
  ASSERT_NE(saved, other_threads);
  EXPECT_EQ(graph_difference(saved, other_threads), "");
  // A checkpoint's resume= is where the run comes from, not what it computes.
  const std::string line = "ck = checkpoint path=\"/tmp/a.ckpt\" every=1 resume=\"\"\n";
  const std::string resumed = "ck = checkpoint path=\"/tmp/a.ckpt\" every=1 resume=\"/tmp/a \\\"b\\\".ckpt\"\n";
  EXPECT_EQ(graph_difference("# resolved from a.graph\n" + line, "# resolved from /x/a.graph\n" + resumed), "");
  // What computes differently is named, saved then now.
  const std::string more = test::resolve_text(graph, {"source.count=20"}).format();
  const std::string difference = graph_difference(saved, more);
  EXPECT_NE(difference.find("saved: source = count count=10"), std::string::npos) << difference;
  EXPECT_NE(difference.find("now: source = count count=20"), std::string::npos) << difference;
}

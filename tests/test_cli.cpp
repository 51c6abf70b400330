// The flowrun command as a user runs it: exit codes, messages, --check,
// --list-stages, --set, plugins, summary JSON, signals.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_support.h"

using flowrun::test::run_flowrun;
using flowrun::test::temp_dir;

namespace {
std::string write_graph(const std::string& text) {
  std::string path = temp_dir() + "/g.graph";
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST(Cli, EveryShippedGraphChecksAndListsStages) {
  int graphs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FLOWRUN_SOURCE_DIR "/graphs")) {
    if (entry.path().extension() != ".graph") continue;
    ++graphs;
    auto check = run_flowrun({"--check", entry.path().string()});
    EXPECT_EQ(check.exit_code, 0) << entry.path() << "\n" << check.err;
    EXPECT_NE(check.out.find("flow "), std::string::npos) << check.out;
    auto list = run_flowrun({"--list-stages", entry.path().string()});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    EXPECT_NE(list.out.find("sleep (transform, built-in)"), std::string::npos);
  }
  EXPECT_GE(graphs, 3);
  auto bench = run_flowrun({"--check", "bench/data.graph", "--set", "source.root=/data/x"});
  EXPECT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_NE(bench.out.find("source = imagefolder root=\"/data/x\""), std::string::npos) << bench.out;
}

TEST(Cli, DemoGraphRunsThroughTheExamplePlugin) {
  std::string summary = temp_dir() + "/summary.json";
  auto result = run_flowrun({"graphs/plugin_demo.graph", "--summary-json", summary, "--threads", "2"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::ifstream in(summary);
  nlohmann::json json = nlohmann::json::parse(in);
  EXPECT_EQ(json["sum"], 3 * 499500.0);
  EXPECT_EQ(json["stages"]["triple"]["type"], "multiply");
  EXPECT_EQ(json["stages"]["triple"]["items_out"], 1000);
  EXPECT_TRUE(json.contains("elapsed_s"));
  EXPECT_NE(result.err.find("bottleneck: "), std::string::npos) << result.err;
  // --set changes the plugin stage's parameter.
  result = run_flowrun({"graphs/plugin_demo.graph", "--set", "triple.factor=-1", "--summary-json", summary});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::ifstream again(summary);
  EXPECT_EQ(nlohmann::json::parse(again)["sum"], -499500.0);
}

TEST(Cli, ListStagesShowsTypesDefaultsAndPluginStages) {
  auto result = run_flowrun({"--list-stages", "--plugin", FLOWRUN_PLUGIN_DIR "/libflowrun_example.so"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("count (source, built-in)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("    count              int          = 1000           items per epoch [>= 0]"),
            std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("multiply (transform, " FLOWRUN_PLUGIN_DIR "/libflowrun_example.so)"), std::string::npos);
}

TEST(Cli, InvalidGraphExitsTwoWithEveryError) {
  std::string path = write_graph("source = count cout=3\nwork = slep\nsink = sink\n");
  auto result = run_flowrun({path});
  EXPECT_EQ(result.exit_code, 2);
  std::string first = path + ":1:16: error: unknown parameter 'cout' for stage 'source' (count); did you mean "
                             "'count'? (parameters: count, start)\n";
  std::string second = path + ":2:8: error: unknown stage type 'slep'; did you mean 'sleep'? (types: ";
  EXPECT_EQ(result.err.substr(0, first.size() + second.size()), first + second) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 2) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST(Cli, BadSetExitsTwo) {
  std::string path = write_graph("source = count\nsink = sink\n");
  auto result = run_flowrun({path, "--set", "source.count=many"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err, "--set #1:1:14: error: parameter 'count' expects an int but got a word 'many'\n");
}

TEST(Cli, BadCommandLineExitsTwo) {
  EXPECT_EQ(run_flowrun({"--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(run_flowrun({}).exit_code, 2);
  EXPECT_EQ(run_flowrun({"--threads", "0", "graphs/plugin_demo.graph"}).exit_code, 2);
  EXPECT_EQ(run_flowrun({"--log-level", "loud", "graphs/plugin_demo.graph"}).exit_code, 2);
  auto missing = run_flowrun({"/nonexistent.graph"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.err, "/nonexistent.graph: error: cannot read graph file\n");
  auto plugin = run_flowrun({"--plugin", "/nonexistent/libx.so", "--list-stages"});
  EXPECT_EQ(plugin.exit_code, 2);
  EXPECT_EQ(plugin.err, "/nonexistent/libx.so: error: plugin does not exist\n");
}

TEST(Cli, PluginLineErrorPointsAtTheGraph) {
  std::string path = write_graph("plugin \"missing/libx.so\"\nsource = count\n");
  auto result = run_flowrun({path});
  EXPECT_EQ(result.exit_code, 2);
  std::string dir = std::filesystem::path(path).parent_path().string();
  EXPECT_EQ(result.err, path + ":1:8: error: plugin " + dir + "/missing/libx.so does not exist\n");
}

TEST(Cli, FailingRunExitsOneAndNamesTheStage) {
  std::string path = write_graph("source = count count=100000\nboom = explode at=500\nsink = sink\n");
  std::string summary = temp_dir() + "/summary.json";
  auto result = run_flowrun({path, "--plugin", TEST_PLUGIN_EXPLODE, "--summary-json", summary});
  EXPECT_EQ(result.exit_code, 1);
  // A plugin's stage is reported as any stage is, naming the plugin it came from.
  // And where in the run it failed: the 501st item the stage received.
  EXPECT_EQ(result.err, "flowrun: error: stage 'boom' (explode from plugin " TEST_PLUGIN_EXPLODE "): exploded at 500 "
                        "(phase 'main', epoch 1 (1/1 of the phase), item 501 the stage received this epoch)\n");
  EXPECT_FALSE(std::filesystem::exists(summary));  // no summary of a failed run
}

TEST(Cli, UnwritableSummaryExitsOne) {
  std::string path = write_graph("source = count count=10\nsink = sink\n");
  std::string in_the_way = temp_dir() + "/file-in-the-way";
  std::ofstream(in_the_way) << "x";
  auto result = run_flowrun({path, "--summary-json", in_the_way + "/sub/summary.json"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find(in_the_way + "/sub/summary.json: error: cannot write: "), std::string::npos) << result.err;
}

TEST(Cli, CheckPrintsTheResolvedGraphAndRunsNothing) {
  std::string path = write_graph("source = count count=3\nsink = sink us=1000000\n");
  auto result = run_flowrun({"--check", path, "--seed", "9", "--set", "source.start=4"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "# resolved from " + path +
                            "\nrun seed=9 in_flight=256 epochs=1 threads=auto compute_threads=auto backend=auto timeout=600.0\nsource = count count=3 start=4\n"
                            "sink = sink us=1000000\nflow source -> sink\n");
}

TEST(Cli, SignalStopsTheRunWithExit130) {
  std::string path = write_graph("source = count count=1000000000\nwork = sleep us=50\nsink = sink\n");
  std::string summary = temp_dir() + "/summary.json";
  std::string log = temp_dir() + "/stderr";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, 2);
    execl(FLOWRUN_BINARY, FLOWRUN_BINARY, path.c_str(), "--summary-json", summary.c_str(), "--threads", "2",
          "--log-level", "info", static_cast<char*>(nullptr));
    _exit(99);
  }
  // Signal once the run has started (the log says so), then let it work a little.
  for (int waited = 0; waited < 600; ++waited) {
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("running ") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  std::ifstream in(summary);
  nlohmann::json json = nlohmann::json::parse(in);
  EXPECT_EQ(json["interrupted"], true);
  EXPECT_GT(json["items"].get<double>(), 0);
}

TEST(Cli, HelpExitsZero) {
  auto result = run_flowrun({"--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("--summary-json"), std::string::npos);
}

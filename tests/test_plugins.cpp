// Plugin loading: the example plugin works; every kind of bad plugin is
// refused with a message naming the file.
#include <gtest/gtest.h>

#include <fstream>

#include "pipeline/executor.h"
#include "pipeline/plugin_abi.h"
#include "pipeline/plugin_loader.h"
#include "test_support.h"

using namespace flowrun;

namespace {
std::string load_error(const std::string& path) {
  try {
    load_plugin(path, Registry::global());
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}
const std::string kExample = FLOWRUN_PLUGIN_DIR "/libflowrun_example.so";
}  // namespace

TEST(Plugins, ExamplePluginRegistersItsStageAndRuns) {
  ASSERT_EQ(load_error(kExample), "");
  const StageType* multiply = Registry::global().find("multiply");
  ASSERT_NE(multiply, nullptr);
  EXPECT_EQ(multiply->origin, kExample);
  EXPECT_EQ(multiply->schema.kind(), StageKind::Transform);
  EXPECT_EQ(load_error(kExample), "");  // loading twice is harmless
  ResolvedGraph graph = test::resolve_text("source = count count=100\nx = multiply factor=5\nsink = sink\n");
  RunOptions options;
  options.threads = 2;
  RunResult result = run_graph(graph, options);
  EXPECT_EQ(result.stages.back().figures.at("sum"), 5 * 4950.0);
}

TEST(Plugins, BareNameIsFoundOnThePluginPath) {
  setenv("FLOWRUN_PLUGIN_PATH", "/nonexistent:" FLOWRUN_PLUGIN_DIR, 1);
  EXPECT_EQ(find_plugin("libflowrun_example.so"), FLOWRUN_PLUGIN_DIR "/libflowrun_example.so");
  unsetenv("FLOWRUN_PLUGIN_PATH");
  EXPECT_EQ(find_plugin("./libflowrun_example.so"), "./libflowrun_example.so");
}

TEST(Plugins, MissingFile) {
  EXPECT_EQ(load_error("/nonexistent/libnothing.so"), "/nonexistent/libnothing.so: error: plugin does not exist");
  EXPECT_EQ(load_error("libnothing_at_all.so"),
            "libnothing_at_all.so: error: plugin does not exist (searched $FLOWRUN_PLUGIN_PATH and the plugins/ "
            "folder beside flowrun)");
}

TEST(Plugins, VersionMismatchIsRefused) {
  EXPECT_EQ(load_error(TEST_PLUGIN_BAD_VERSION),
            std::string(TEST_PLUGIN_BAD_VERSION) +
                ": error: plugin was built for plugin API version " + std::to_string(FLOWRUN_PLUGIN_API_VERSION + 41) +
                " but this flowrun uses version " + std::to_string(FLOWRUN_PLUGIN_API_VERSION) +
                "; rebuild it against this flowrun's SDK");
}

TEST(Plugins, MissingEntryPointIsRefused) {
  EXPECT_EQ(load_error(TEST_PLUGIN_NO_ENTRY),
            std::string(TEST_PLUGIN_NO_ENTRY) +
                ": error: plugin has no entry point 'flowrun_plugin_entry' (declare it with FLOWRUN_PLUGIN in "
                "<flowrun/sdk.h>)");
}

TEST(Plugins, NotALibraryIsRefused) {
  std::string path = test::temp_dir() + "/libfake.so";
  std::ofstream(path) << "this is not an ELF file\n";
  std::string error = load_error(path);
  EXPECT_EQ(error.rfind(path + ": error: plugin cannot be loaded: ", 0), 0u) << error;
  EXPECT_EQ(load_error(test::temp_dir()).find("is not a regular file") != std::string::npos, true);
}

TEST(Plugins, StageNameClashIsRefused) {
  std::string error = load_error(TEST_PLUGIN_CLASH);
  EXPECT_EQ(error, std::string(TEST_PLUGIN_CLASH) +
                       ": error: plugin failed to register its stages: stage type 'sleep' from " + TEST_PLUGIN_CLASH +
                       " is already registered by built-in");
  EXPECT_EQ(Registry::global().find("sleep")->origin, "built-in");
}

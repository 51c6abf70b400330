// The graph language's syntax: what parses, and where errors point.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "pipeline/graph_spec.h"

using namespace flowrun;

namespace {

GraphSpec parse_ok(const std::string& text) {
  Diagnostics diagnostics;
  GraphSpec spec = parse_graph(text, "g.graph", diagnostics);
  EXPECT_TRUE(diagnostics.empty()) << diagnostics.format();
  return spec;
}

std::string parse_errors(const std::string& text) {
  Diagnostics diagnostics;
  parse_graph(text, "g.graph", diagnostics);
  return diagnostics.format();
}

}  // namespace

TEST(Parser, ReadsEveryStatementKind) {
  GraphSpec spec = parse_ok(R"(# a comment line
plugin "libx.so"                         # bare name: searched on the plugin path
plugin "sub/liby.so"
run seed=7 in_flight=32
source  = count count=10 start=-3
augment = sleep us=5 | sleep us=1.5e3 spin=true
sink    = sink us=0
flow source -> augment
flow augment -> sink
phase warm epochs=2 { augment.us = 0; extra = thing name="a b" }
phase main epochs=3 {
  augment.1.us = 4
  sink = sink us=[1, 2,
                  3]
}
)");
  ASSERT_EQ(spec.plugins.size(), 2u);
  EXPECT_EQ(spec.plugins[0].path, "libx.so");
  EXPECT_EQ(spec.plugins[1].path, "./sub/liby.so");
  ASSERT_EQ(spec.run_settings.size(), 2u);
  EXPECT_EQ(spec.run_settings[0].name, "seed");
  EXPECT_EQ(spec.run_settings[0].value.int_value, 7);
  ASSERT_EQ(spec.stages.size(), 3u);
  EXPECT_EQ(spec.stages[0].ops[0].params[1].value.int_value, -3);
  ASSERT_EQ(spec.stages[1].ops.size(), 2u);
  EXPECT_EQ(spec.stages[1].ops[1].params[0].value.kind, RawValue::Kind::Float);
  EXPECT_DOUBLE_EQ(spec.stages[1].ops[1].params[0].value.float_value, 1500.0);
  EXPECT_EQ(spec.stages[1].ops[1].params[1].value.kind, RawValue::Kind::Word);
  EXPECT_EQ(spec.stages[1].where.line, 6);
  EXPECT_EQ(spec.stages[1].where.col, 1);
  EXPECT_EQ(spec.stages[1].ops[1].where.col, 24);
  ASSERT_EQ(spec.flows.size(), 2u);
  EXPECT_EQ(spec.flows[0].names, (std::vector<std::string>{"source", "augment"}));
  ASSERT_EQ(spec.phases.size(), 2u);
  EXPECT_EQ(spec.phases[0].name, "warm");
  EXPECT_EQ(spec.phases[0].overrides[0].path, (std::vector<std::string>{"augment", "us"}));
  EXPECT_EQ(spec.phases[0].stages[0].ops[0].params[0].value.text, "a b");
  EXPECT_EQ(spec.phases[1].overrides[0].path, (std::vector<std::string>{"augment", "1", "us"}));
  const RawValue& list = spec.phases[1].stages[0].ops[0].params[0].value;
  ASSERT_EQ(list.kind, RawValue::Kind::List);
  ASSERT_EQ(list.items.size(), 3u);
  EXPECT_EQ(list.items[2].int_value, 3);
  EXPECT_EQ(list.items[2].where.line, 14);
}

TEST(Parser, StringEscapesAndSemicolons) {
  GraphSpec spec = parse_ok("a = count; b = sink us=1 ; c = x s=\"q\\\"uote\\\\ \\n\"\n");
  ASSERT_EQ(spec.stages.size(), 3u);
  EXPECT_EQ(spec.stages[2].ops[0].params[0].value.text, "q\"uote\\ \n");
}

TEST(Parser, LineContinuation) {
  GraphSpec spec = parse_ok("a = count \\\n    count=5\n");
  ASSERT_EQ(spec.stages.size(), 1u);
  EXPECT_EQ(spec.stages[0].ops[0].params[0].name, "count");
  EXPECT_EQ(spec.stages[0].ops[0].params[0].where.line, 2);
}

TEST(Parser, UnterminatedStringPointsAtItsQuote) {
  EXPECT_EQ(parse_errors("a = count\nb = x path=\"abc\n"),
            "g.graph:2:12: error: unterminated string (missing closing '\"')\n");
}

TEST(Parser, UnclosedListPointsAtTheBracket) {
  EXPECT_EQ(parse_errors("a = x v=[1, 2\n"), "g.graph:1:9: error: unclosed '[' (missing ']')\n");
}

TEST(Parser, UnclosedPhasePointsAtTheBrace) {
  EXPECT_EQ(parse_errors("a = count\nphase p epochs=1 {\n  a.count = 3\n"),
            "g.graph:2:18: error: unclosed '{' of phase 'p' (missing '}')\n");
}

TEST(Parser, StrayClosingBrackets) {
  EXPECT_EQ(parse_errors("a = count\n}\n]\n"),
            "g.graph:2:1: error: unmatched '}'\ng.graph:3:1: error: unmatched ']'\n");
}

TEST(Parser, ReportsEveryErrorOfTheFile) {
  std::string errors = parse_errors(
      "a = count count=\n"       // missing value
      "b sink\n"                 // missing '='
      "c = sleep us=12ms\n"      // malformed number
      "d = sink @\n"             // unknown character
      "e = sink us=3 us\n");     // parameter without '='
  EXPECT_EQ(errors,
            "g.graph:1:17: error: expected a value but found end of line\n"
            "g.graph:2:3: error: expected '=' after stage name 'b' but found a name\n"
            "g.graph:3:14: error: malformed number '12ms'\n"
            "g.graph:4:10: error: unexpected character '@'\n"
            "g.graph:5:17: error: expected '=' after parameter 'us' but found end of line\n");
}

TEST(Parser, FlowNeedsTwoStages) {
  EXPECT_EQ(parse_errors("flow a\n"), "g.graph:1:6: error: a flow links at least two stages: 'flow a -> b'\n");
  EXPECT_EQ(parse_errors("flow a -> \n"), "g.graph:2:1: error: expected a stage name in flow but found end of file\n");
}

TEST(Parser, PluginNeedsAQuotedPath) {
  EXPECT_EQ(parse_errors("plugin libx.so\n"), "g.graph:1:8: error: expected a quoted path after 'plugin'\n");
}

TEST(Parser, NestedListsAreRefused) {
  EXPECT_EQ(parse_errors("a = x v=[[1]]\n"), "g.graph:1:10: error: lists cannot be nested\n");
}

TEST(Parser, KeywordsAreOnlyKeywordsAtStatementStart) {
  // A stage may be called `run` or `phase`: the '=' tells.
  GraphSpec spec = parse_ok("run = count\nphase = sink\n");
  ASSERT_EQ(spec.stages.size(), 2u);
  EXPECT_EQ(spec.stages[0].name, "run");
}

TEST(Parser, OverrideFromCommandLine) {
  Diagnostics diagnostics;
  ParamOverride o;
  ASSERT_TRUE(parse_override("augment.hflip.p=0.25", "--set #1", o, diagnostics));
  EXPECT_EQ(o.path, (std::vector<std::string>{"augment", "hflip", "p"}));
  EXPECT_DOUBLE_EQ(o.value.float_value, 0.25);
  EXPECT_FALSE(parse_override("augment.p=[1, 2", "--set #2", o, diagnostics));
  EXPECT_FALSE(parse_override("augment=3", "--set #3", o, diagnostics));
  EXPECT_FALSE(parse_override("=3", "--set #4", o, diagnostics));
  EXPECT_EQ(diagnostics.format(),
            "--set #2:1:11: error: unclosed '[' (missing ']')\n"
            "--set #3:1:1: error: expected 'stage.param = value'\n"
            "--set #4:1:1: error: expected STAGE.PARAM=VALUE\n");
}

TEST(Parser, CommandLineValuesNeedNoQuotes) {
  Diagnostics diagnostics;
  ParamOverride o;
  ASSERT_TRUE(parse_override("source.root=/data/imagewoof2-160/train", "--set #1", o, diagnostics));
  EXPECT_EQ(o.value.kind, RawValue::Kind::Word);
  EXPECT_EQ(o.value.text, "/data/imagewoof2-160/train");
  EXPECT_EQ(o.value.where.col, 13);
  ASSERT_TRUE(parse_override("s.name=two words", "--set #2", o, diagnostics));
  EXPECT_EQ(o.value.text, "two words");
  ASSERT_TRUE(parse_override("s.name=\"quoted\"", "--set #3", o, diagnostics));
  EXPECT_EQ(o.value.kind, RawValue::Kind::String);
  EXPECT_EQ(o.value.text, "quoted");
  ASSERT_TRUE(parse_override("s.path=", "--set #5", o, diagnostics));
  EXPECT_EQ(o.value.kind, RawValue::Kind::Word);
  EXPECT_EQ(o.value.text, "");
  ASSERT_TRUE(parse_override("s.n=-3", "--set #4", o, diagnostics));
  EXPECT_EQ(o.value.kind, RawValue::Kind::Int);
  EXPECT_EQ(o.value.int_value, -3);
  EXPECT_TRUE(diagnostics.empty()) << diagnostics.format();
}

TEST(Parser, UnreadableFileIsAnError) {
  Diagnostics diagnostics;
  parse_graph_file("/nonexistent/x.graph", diagnostics);
  EXPECT_EQ(diagnostics.format(), "/nonexistent/x.graph: error: cannot read graph file\n");
}

// A binary file given as the graph (a weights file, the program itself) is
// one error saying so, not one per byte; any file's errors stop at 100.
TEST(Parser, ABinaryFileIsOneErrorAndErrorsStopAtAHundred) {
  const std::string path = testing::TempDir() + "/binary.graph";
  {
    std::ofstream out(path, std::ios::binary);
    out << "ab\n\x7f" << std::string(1, '\0') << "ELF\x01\x02";
  }
  Diagnostics binary;
  parse_graph_file(path, binary);
  EXPECT_EQ(binary.format(), path + ":2:2: error: not a graph: a binary file (a NUL byte); a graph is a text file of "
                                    "stage declarations (README: Writing a graph)\n");
  std::string garbage;
  for (int i = 0; i < 150; ++i) garbage += "@\n";
  const std::string errors = parse_errors(garbage);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 101) << errors;
  EXPECT_NE(errors.find("\n... and 50 more errors\n"), std::string::npos) << errors.substr(errors.size() - 200);
}

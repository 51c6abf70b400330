// Validation of a parsed graph against the stage schemas, --set, phases, and
// the resolved graph printed back by --check.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"

using namespace flowrun;
using flowrun::test::errors_of;
using flowrun::test::resolve_text;

namespace {
const std::string kChain = "source = count count=10\nwork = sleep\nsink = sink\n";

const ResolvedStage& stage_of(const ResolvedGraph& graph, const std::string& name, size_t phase = 0) {
  const ResolvedStage* stage = graph.phases.at(phase).find(name);
  if (!stage) throw std::runtime_error("no stage " + name);
  return *stage;
}
}  // namespace

TEST(Validation, DefaultsFillMissingParameters) {
  ResolvedGraph graph = resolve_text("source = count\nk = kitchen size=3\nsink = sink\n");
  const Params& params = stage_of(graph, "k").ops[0].params;
  EXPECT_EQ(params.get_int("size"), 3);
  EXPECT_DOUBLE_EQ(params.get_float("p"), 0.5);
  EXPECT_EQ(params.get_string("mode"), "reflect");
  EXPECT_EQ(params.get_float_list("mean"), std::vector<double>{0.5});
  EXPECT_EQ(graph.chains, (std::vector<std::vector<std::string>>{{"source", "k", "sink"}}));
  EXPECT_EQ(graph.run.in_flight, 256);
  ASSERT_EQ(graph.phases.size(), 1u);
  EXPECT_EQ(graph.phases[0].name, "main");
}

TEST(Validation, TypedValues) {
  ResolvedGraph graph = resolve_text(
      "source = count\nk = kitchen size=3 p=1 mode=edge flag=true mean=[0.1, 0.2, 1] names=[\"a\", b] sizes=[]\n"
      "sink = sink\n");
  const Params& params = stage_of(graph, "k").ops[0].params;
  EXPECT_DOUBLE_EQ(params.get_float("p"), 1.0);  // an int is a fine float
  EXPECT_EQ(params.get_string("mode"), "edge");
  EXPECT_TRUE(params.get_bool("flag"));
  EXPECT_EQ(params.get_float_list("mean"), (std::vector<double>{0.1, 0.2, 1.0}));
  EXPECT_EQ(params.get_string_list("names"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(params.get_int_list("sizes").empty());
}

TEST(Validation, UnknownStageTypeSuggestsTheClosest) {
  std::string errors = errors_of("source = count\nwork = slep us=3\nsink = sink\n");
  const std::string start = "test.graph:2:8: error: unknown stage type 'slep'; did you mean 'sleep'? (types: ";
  EXPECT_EQ(errors.substr(0, start.size()), start) << errors;
  const std::string end = "; see --list-stages)\n";
  EXPECT_EQ(errors.substr(errors.size() - end.size()), end) << errors;
}

TEST(Validation, UnknownParameterSuggestsTheClosest) {
  EXPECT_EQ(errors_of("source = count cuont=3\nsink = sink\n"),
            "test.graph:1:16: error: unknown parameter 'cuont' for stage 'source' (count); did you mean 'count'? "
            "(parameters: count, start)\n");
}

TEST(Validation, WrongTypes) {
  std::string errors = errors_of(
      "source = count count=1.5\n"
      "k = kitchen size=\"3\" p=yes mode=3 flag=1 mean=0.5 names=[1]\n"
      "sink = sink\n");
  EXPECT_EQ(errors,
            "test.graph:1:22: error: parameter 'count' expects an int but got a float '1.5'\n"
            "test.graph:2:18: error: parameter 'size' expects an int but got a string '3'\n"
            "test.graph:2:24: error: parameter 'p' expects a float but got a word 'yes'\n"
            "test.graph:2:33: error: parameter 'mode' expects a string but got an int '3'\n"
            "test.graph:2:40: error: parameter 'flag' expects a bool (true or false) but got an int '1'\n"
            "test.graph:2:47: error: parameter 'mean' expects a list of floats but got a float '0.5'\n"
            "test.graph:2:58: error: parameter 'names' expects a list of strings but an item is an int '1'\n");
}

TEST(Validation, OutOfRangeAndChoices) {
  std::string errors = errors_of("source = count count=-1\nk = kitchen size=5000 p=1.5 mode=reflcet mean=[0.5, 2]\nsink = sink\n");
  EXPECT_EQ(errors,
            "test.graph:1:22: error: parameter 'count' = -1 is out of range [0, inf]\n"
            "test.graph:2:18: error: parameter 'size' = 5000 is out of range [1, 4096]\n"
            "test.graph:2:25: error: parameter 'p' = 1.5 is out of range [0.0, 1.0]\n"
            "test.graph:2:34: error: parameter 'mode' cannot be 'reflcet'; did you mean 'reflect'? (choices: reflect, "
            "constant, edge)\n"
            "test.graph:2:53: error: parameter 'mean' = 2 is out of range [0.0, 1.0]\n");
}

TEST(Validation, ARequiredParameterMayComeFromTheCommandLine) {
  const std::string text = "source = count count=1\nk = kitchen\nflow source -> k\n";
  EXPECT_EQ(errors_of(text, {"k.size=3"}), "");
  EXPECT_EQ(test::resolve_text(text, {"k.size=3"}).phases[0].find("k")->ops[0].params.get_int("size"), 3);
  EXPECT_EQ(errors_of(text), "test.graph:2:5: error: missing required parameter 'size' (int) for stage 'k' (kitchen)\n");
}

// Found by fuzzing: a phase overriding a parameter of an op whose own
// parameters were wrong crashed the resolver.
TEST(Validation, APhaseOverrideOfAnInvalidOpIsReportedNotACrash) {
  std::string errors = errors_of("src = count count=-5 bogus=1\nsink = sink\nphase p epochs=1 { src.count = 2 }\n");
  EXPECT_EQ(errors,
            "test.graph:1:19: error: parameter 'count' = -5 is out of range [0, inf]\n"
            "test.graph:1:22: error: unknown parameter 'bogus' for stage 'src' (count) (parameters: count, start)\n");
}

TEST(Validation, MissingRequiredAndDuplicates) {
  std::string errors = errors_of("source = count count=1 count=2\nk = kitchen\nk = sink\nsink = sink\n");
  EXPECT_EQ(errors,
            "test.graph:1:24: error: parameter 'count' given twice for stage 'source' (count) (first at 1:16)\n"
            "test.graph:2:5: error: missing required parameter 'size' (int) for stage 'k' (kitchen)\n"
            "test.graph:3:1: error: duplicate stage name 'k' (first declared at 2:1)\n");
}

TEST(Validation, AutoOnlyWhereAllowed) {
  EXPECT_NO_THROW(resolve_text("source = count\nwork = sleep concurrency=auto\nsink = sink\n"));
  EXPECT_EQ(errors_of("source = count count=auto\nsink = sink\n"),
            "test.graph:1:22: error: parameter 'count' expects int (auto is not allowed here) but got a word 'auto'\n");
  ResolvedGraph graph = resolve_text("source = count\nwork = sleep concurrency=3\nsink = sink\n");
  EXPECT_EQ(stage_of(graph, "work").concurrency, 3);
}

TEST(Validation, FlowErrors) {
  std::string base = "a = count\nb = sleep\nc = sleep\nd = sink\n";
  EXPECT_EQ(errors_of(base + "flow a -> b -> x -> d\nflow b -> c\n"),
            "test.graph:5:16: error: dangling connection: no stage named 'x'\n");
  EXPECT_EQ(errors_of(base + "flow a -> b -> d\nflow b -> c\n"),
            "test.graph:6:11: error: stage 'b' already feeds 'd'; a stage feeds at most one stage\n");
  EXPECT_EQ(errors_of(base + "flow a -> b -> d\n"),
            "test.graph:3:1: error: stage 'c' is not connected; add it to a flow line\n");
  EXPECT_EQ(errors_of(base + "flow a -> b -> c -> d\nflow a -> dd\n"),
            "test.graph:6:11: error: dangling connection: no stage named 'dd'; did you mean 'd'?\n");
}

TEST(Validation, CycleIsReported) {
  EXPECT_EQ(errors_of("a = count\nb = sleep\nc = sleep\nd = sink\nflow a -> b -> c -> d\nflow c -> b\n"),
            "test.graph:6:11: error: stage 'c' already feeds 'd'; a stage feeds at most one stage\n");
  EXPECT_EQ(errors_of("a = count\nb = sleep\nc = sleep\nflow b -> c -> b\nflow a -> d\nd = sink\n"),
            "test.graph:4:16: error: cycle in flow: c -> b -> c\n");
  EXPECT_EQ(errors_of("a = count\nb = sleep\nflow a -> b -> b\n"), "test.graph:3:16: error: cycle in flow: b -> b\n");
}

TEST(Validation, SourcesTakeNoInputAndFlowsStartWithOne) {
  EXPECT_EQ(errors_of("a = count\nb = count\nflow a -> b\n"),
            "test.graph:3:11: error: source stage 'b' cannot take input (from 'a')\n");
  EXPECT_EQ(errors_of("a = sleep\nb = sink\n"),
            "test.graph:1:1: error: stage 'a' has no input; a flow starts with a source stage\n");
  EXPECT_EQ(errors_of("p = probe\n"), "test.graph: error: the graph has no source stage\n");
}

TEST(Validation, ExplicitFlowsMakeSeveralChains) {
  ResolvedGraph graph = resolve_text("a = count\nb = count\nx = sink\ny = sink\nflow a -> x\nflow b -> y\n");
  EXPECT_EQ(graph.chains, (std::vector<std::vector<std::string>>{{"a", "x"}, {"b", "y"}}));
}

TEST(Validation, PathsResolveRelativeToTheGraphFile) {
  ResolvedGraph graph = resolve_text("source = count\nk = kitchen size=1 file=\"data/x.bin\"\nsink = sink\n", {},
                                     "/some/where/g.graph");
  EXPECT_EQ(stage_of(graph, "k").ops[0].params.get_string("file"), "/some/where/data/x.bin");
  graph = resolve_text("source = count\nk = kitchen size=1 file=\"/abs/x.bin\"\nsink = sink\n", {}, "/some/where/g.graph");
  EXPECT_EQ(stage_of(graph, "k").ops[0].params.get_string("file"), "/abs/x.bin");
  // On the command line a relative path is relative to the working directory.
  graph = resolve_text("source = count\nk = kitchen size=1\nsink = sink\n", {"k.file=rel/y.bin"}, "/some/where/g.graph");
  EXPECT_EQ(stage_of(graph, "k").ops[0].params.get_string("file"),
            (std::filesystem::current_path() / "rel/y.bin").string());
}

TEST(Validation, PhasesOverrideAndAddComponents) {
  ResolvedGraph graph = resolve_text(kChain +
                                     "phase warm epochs=2 { work.us = 5; opt = probe lr=0.5 }\n"
                                     "phase main epochs=3 { opt = probe lr=0.01; sink = sink us=1 }\n");
  ASSERT_EQ(graph.phases.size(), 2u);
  EXPECT_EQ(graph.phases[0].epochs, 2);
  EXPECT_EQ(stage_of(graph, "work", 0).ops[0].params.get_int("us"), 5);
  EXPECT_EQ(stage_of(graph, "work", 1).ops[0].params.get_int("us"), 0);
  EXPECT_DOUBLE_EQ(stage_of(graph, "opt", 0).ops[0].params.get_float("lr"), 0.5);
  EXPECT_DOUBLE_EQ(stage_of(graph, "opt", 1).ops[0].params.get_float("lr"), 0.01);
  EXPECT_EQ(stage_of(graph, "sink", 1).ops[0].params.get_int("us"), 1);
}

TEST(Validation, PhaseErrors) {
  std::string errors = errors_of(kChain +
                                 "phase work epochs=-1 { extra = sleep; work.uss = 3; sink = count; nope.x = 1 }\n");
  EXPECT_EQ(errors,
            "test.graph:4:7: error: phase name 'work' is already used (at 2:1)\n"
            "test.graph:4:19: error: parameter 'epochs' = -1 is out of range [0, 1000000]\n"
            "test.graph:4:24: error: stage 'extra' is not declared outside the phase; a phase may add components but "
            "flow stages are declared at top level\n"
            "test.graph:4:44: error: unknown parameter 'uss' for stage 'work' (sleep); did you mean 'us'? (parameters: "
            "us, spin, drop_every)\n"
            "test.graph:4:53: error: stage 'sink' is a serial stage; phase 'work' cannot make it a source\n"
            "test.graph:4:67: error: no stage named 'nope'\n");
}

TEST(Validation, PipedStagesFuseTransforms) {
  ResolvedGraph graph = resolve_text("source = count\naug = sleep us=1 | kitchen size=2 | sleep us=3\nsink = sink\n",
                                     {"aug.kitchen.p=0.25", "aug.2.us=7", "aug.size=9"});
  const ResolvedStage& aug = stage_of(graph, "aug");
  ASSERT_EQ(aug.ops.size(), 3u);
  EXPECT_EQ(aug.kind, StageKind::Transform);
  EXPECT_DOUBLE_EQ(aug.ops[1].params.get_float("p"), 0.25);
  EXPECT_EQ(aug.ops[1].params.get_int("size"), 9);
  EXPECT_EQ(aug.ops[2].params.get_int("us"), 7);
  EXPECT_EQ(aug.ops[0].params.get_int("us"), 1);
  EXPECT_EQ(errors_of("source = count\naug = sleep | sink\nsink = sink\n"),
            "test.graph:2:15: error: 'sink' is a serial stage; only transforms (or components) can be piped with '|'\n");
  EXPECT_EQ(errors_of("source = count\naug = sleep | probe\nsink = sink\n"),
            "test.graph:2:15: error: 'probe' is a component stage but 'sleep' is a transform; a pipe joins stages of "
            "one kind\n");
  EXPECT_EQ(errors_of("source = count\naug = sleep us=1 | sleep us=3\nsink = sink\n", {"aug.us=2"}),
            "--set #1:1:5: error: parameter 'us' of stage 'aug' is ambiguous: several of its ops take it; write "
            "aug.OP.us\n");
}

TEST(Validation, CommandLineOverrides) {
  std::string graph_text = kChain + "phase a epochs=1 { work.us = 5 }\nphase b epochs=2 { }\n";
  ResolvedGraph graph = resolve_text(graph_text, {"work.us=9", "b.epochs=4", "a.sink.us=2", "run.seed=11",
                                                  "work.concurrency=2"});
  EXPECT_EQ(stage_of(graph, "work", 0).ops[0].params.get_int("us"), 9);  // the command line wins in every phase
  EXPECT_EQ(stage_of(graph, "work", 1).ops[0].params.get_int("us"), 9);
  EXPECT_EQ(stage_of(graph, "work", 1).concurrency, 2);
  EXPECT_EQ(graph.phases[1].epochs, 4);
  EXPECT_EQ(stage_of(graph, "sink", 0).ops[0].params.get_int("us"), 2);
  EXPECT_EQ(stage_of(graph, "sink", 1).ops[0].params.get_int("us"), 0);
  EXPECT_EQ(graph.run.seed, 11u);
  // run.epochs sets the epochs of a graph without phases; so does main.epochs,
  // the name --check and the epoch lines give its one phase, and
  // main.STAGE.PARAM sets its stages.
  EXPECT_EQ(resolve_text(kChain, {"run.epochs=3"}).phases[0].epochs, 3);
  ResolvedGraph implicit = resolve_text(kChain, {"main.epochs=2", "main.work.us=7"});
  EXPECT_EQ(implicit.phases.at(0).name, "main");
  EXPECT_EQ(implicit.phases[0].epochs, 2);
  EXPECT_EQ(implicit.run.epochs, 2);
  EXPECT_EQ(stage_of(implicit, "work").ops[0].params.get_int("us"), 7);
  EXPECT_EQ(resolve_text(kChain + "phase a epochs=2 { }\n", {"run.epochs=3"}).warnings,
            (std::vector<std::string>{"--set run.epochs applies to a graph without phases; this graph's phases set "
                                      "their own (a 2): set PHASE.epochs"}));
  EXPECT_EQ(resolve_text("run epochs=3\n" + kChain + "phase a epochs=2 { }\n").warnings,
            (std::vector<std::string>{"test.graph:1:5: run epochs= applies to a graph without phases; this graph's "
                                      "phases set their own (a 2): set each phase's epochs"}));
  EXPECT_EQ(resolve_text(kChain, {"run.epochs=0"}).warnings,
            (std::vector<std::string>{"no epoch to run (epochs=0): the run does nothing and reports no figures"}));
  EXPECT_TRUE(resolve_text(kChain, {"run.epochs=1"}).warnings.empty());
  EXPECT_EQ(errors_of(kChain, {"main.epochs=-2"}), "--set #1:1:13: error: parameter 'epochs' = -2 is out of range [0, 1000000]\n");
}

TEST(Validation, CommandLineOverrideErrors) {
  std::string errors = errors_of(kChain, {"wrk.us=1", "work.sz=1", "work.us=x", "run.sed=1", "work.us"});
  EXPECT_EQ(errors,
            "--set #1:1:1: error: no stage or phase named 'wrk'; did you mean 'work'?\n"
            "--set #2:1:6: error: unknown parameter 'sz' for stage 'work' (sleep) (parameters: us, spin, drop_every)\n"
            "--set #3:1:9: error: parameter 'us' expects an int but got a word 'x'\n"
            "--set #4:1:5: error: unknown setting 'sed' for the run line; did you mean 'seed'? (settings: seed, "
            "in_flight, epochs, threads, compute_threads, backend, timeout)\n"
            "--set #5:1:8: error: expected '=' after 'work.us' but found the end of the text\n");
  // An op index alone is no parameter.
  EXPECT_EQ(errors_of("source = count\nwork = sleep | sleep\nsink = sink\n", {"work.1=3"}),
            "--set #1:1:6: error: '1' selects an op of stage 'work': name its parameter too (work.1.PARAM=VALUE)\n");
  EXPECT_EQ(errors_of("source = count\nwork = sleep | kitchen size=3\nsink = sink\nphase p epochs=1 { }\n", {"p.work.kitchen=3"}),
            "--set #1:1:8: error: 'kitchen' selects an op of stage 'work': name its parameter too "
            "(p.work.kitchen.PARAM=VALUE)\n");
}

// A source's sampler= names a stage whose every op is a sampler op: checked
// with the graph, each problem at its place.
TEST(Validation, ASamplerIsAStageOfSamplerOps) {
  const std::string base = "samp = shuffle | subset fraction=0.5\nsink = sink\n";
  EXPECT_EQ(errors_of("src = idx sampler=samp\n" + base), "");
  EXPECT_EQ(errors_of("src = idx\n" + base), "") << "no sampler: every sample, in order";
  EXPECT_EQ(errors_of("src = idx sampler=nosuch\n" + base),
            "test.graph:1:7: error: stage 'src' (idx): sampler='nosuch' names no stage (sampler stages: samp)\n");
  EXPECT_EQ(errors_of("src = idx sampler=sink\n" + base),
            "test.graph:1:7: error: stage 'src' (idx): sampler='sink': stage 'sink' is no sampler (sampler stages: samp)\n");
  EXPECT_EQ(errors_of("src = idx sampler=samp\nsamp = shuffle | subset fraction=0.5 | memory_keeper\nsink = sink\n"),
            "test.graph:2:40: error: stage 'samp' op #3 (memory_keeper) is no sampler op, but stage 'src' (idx) takes 'samp' as its "
            "sampler: every op of a sampler stage must be one\n");
  // A reference set by --set or a phase is reported where it was written.
  EXPECT_EQ(errors_of("src = idx\n" + base, {"src.sampler=nosuch"}),
            "--set #1:1:13: error: stage 'src' (idx): sampler='nosuch' names no stage (sampler stages: samp)\n");
  EXPECT_EQ(errors_of("src = idx sampler=samp\n" + base + "phase p epochs=1 { src.sampler = sink }\n"),
            "test.graph:4:34: error: stage 'src' (idx): sampler='sink': stage 'sink' is no sampler in phase 'p' "
            "(sampler stages: samp)\n");
  // An op that chooses by class after keep_labels (which leaves a few labels
  // a class) would choose by the labels left: said at --check, at the op.
  EXPECT_EQ(errors_of("src = idx sampler=samp\nsamp = keep_labels k=2 | per_class k=3\nsink = sink\n"),
            "test.graph:2:26: error: stage 'samp' (per_class): per_class comes after keep_labels (op #1 of sampler "
            "'samp'), which keeps the class labels of a few samples only, so per_class would choose by the labels left: "
            "put keep_labels after the ops that choose, weigh or map samples by class\n");
  EXPECT_NE(errors_of("src = idx sampler=samp\nsamp = keep_labels k=2 | split stratified=true\nsink = sink\n")
                .find("stage 'samp' (split): split comes after keep_labels"), std::string::npos);
  EXPECT_EQ(errors_of("src = idx sampler=samp\nsamp = keep_labels k=2 | split | shuffle\nsink = sink\n"), "")
      << "a split that is not stratified reads no class";
  EXPECT_EQ(errors_of("src = idx sampler=samp\nsamp = per_class k=3 | keep_labels k=2 | keep_labels k=1 task=group | "
                      "balanced\nsink = sink\n")
                .find("test.graph:2:"), 0u) << "balanced still comes after the classes' keep_labels";
  EXPECT_EQ(errors_of("src = idx sampler=samp\nsamp = per_class k=3 | keep_labels k=2 task=group | balanced\nsink = sink\n"), "")
      << "thinning another task's labels leaves the classes";
}

TEST(Validation, ResolvedGraphPrintsBackToTheSameGraph) {
  std::string text = "plugin \"/x/liby.so\"\nrun seed=4 in_flight=16\nsource = count count=5\n"
                     "aug = sleep us=2 | kitchen size=3 names=[\"a b\", c] mean=[0.25]\nsink = sink\n"
                     "phase one epochs=2 { aug.kitchen.p = 0.75; opt = probe }\nphase two epochs=1 { opt = probe lr=2 }\n";
  Diagnostics diagnostics;
  GraphSpec spec = parse_graph(text, "g.graph", diagnostics);
  spec.plugins.clear();  // not loadable here; the printed line is checked below
  ResolvedGraph graph = resolve_graph(spec, Registry::global());
  graph.plugins = {"/x/liby.so"};
  std::string printed = graph.format();
  EXPECT_NE(printed.find("plugin \"/x/liby.so\"\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("aug = sleep drop_every=0 spin=false us=2 concurrency=auto | kitchen file=\"\" flag=false "
                         "mean=[0.25] mode=\"reflect\" names=[\"a b\", \"c\"] p=0.5 size=3 sizes=[]\n"),
            std::string::npos)
      << printed;
  GraphSpec again = parse_graph(printed, "g.graph", diagnostics);
  ASSERT_TRUE(diagnostics.empty()) << diagnostics.format() << printed;
  again.plugins.clear();
  ResolvedGraph reparsed = resolve_graph(again, Registry::global());
  reparsed.plugins = graph.plugins;
  EXPECT_EQ(reparsed.format().substr(printed.find('\n')), printed.substr(printed.find('\n')));
  ASSERT_EQ(reparsed.phases.size(), 2u);
  for (size_t p = 0; p < 2; ++p) {
    ASSERT_EQ(reparsed.phases[p].stages.size(), graph.phases[p].stages.size());
    for (size_t s = 0; s < graph.phases[p].stages.size(); ++s)
      EXPECT_TRUE(reparsed.phases[p].stages[s].same_config(graph.phases[p].stages[s]))
          << graph.phases[p].stages[s].name;
  }
}

TEST(Validation, ALikeStageCopiesItsBaseWithChanges) {
  const std::string base = "source = count count=10\naug = sleep us=2 spin=true | kitchen size=3 p=0.25\nsink = sink\n";
  ResolvedGraph graph = resolve_text(base + "aug2 = like aug kitchen.size=5 0.us=7\nsink2 = like sink us=4\n"
                                     "src2 = like source\nflow source -> aug -> sink\nflow src2 -> aug2 -> sink2\n");
  const ResolvedStage& copy = stage_of(graph, "aug2");
  ASSERT_EQ(copy.ops.size(), 2u);
  EXPECT_EQ(copy.ops[0].params.get_int("us"), 7);
  EXPECT_TRUE(copy.ops[0].params.get_bool("spin"));  // kept from the base
  EXPECT_EQ(copy.ops[1].params.get_int("size"), 5);
  EXPECT_DOUBLE_EQ(copy.ops[1].params.get_float("p"), 0.25);
  EXPECT_EQ(stage_of(graph, "sink2").ops[0].params.get_int("us"), 4);
  EXPECT_EQ(stage_of(graph, "aug").ops[1].params.get_int("size"), 3);  // the base is unchanged
  // A copy of a copy (declared before its base); --check prints the copies
  // spelled out, and that parses back to the same graph.
  ResolvedGraph chained = resolve_text(base + "a3 = like a2 0.us=9\na2 = like aug kitchen.p=0.5\n"
                                       "s2 = like source\ns3 = like sink\nflow source -> aug -> sink\n"
                                       "flow s2 -> a3 -> s3\ns4 = like source\ns5 = like sink\nflow s4 -> a2 -> s5\n");
  EXPECT_DOUBLE_EQ(stage_of(chained, "a3").ops[1].params.get_float("p"), 0.5);
  EXPECT_EQ(stage_of(chained, "a3").ops[0].params.get_int("us"), 9);
  EXPECT_EQ(stage_of(chained, "a2").ops[0].params.get_int("us"), 2);
  const std::string printed = chained.format();
  EXPECT_EQ(printed.find("like"), std::string::npos) << printed;
  EXPECT_EQ(resolve_text(printed).format().substr(printed.find('\n')), printed.substr(printed.find('\n')));
}

TEST(Validation, LikeErrorsPointAtTheirPlace) {
  const std::string base = "source = count\naug = sleep | kitchen size=3\nsink = sink\nflow source -> aug -> sink\n";
  const std::string used = "src2 = like source\nflow src2 -> x\n";
  EXPECT_EQ(errors_of(base + "x = like agu\n"),
            "test.graph:5:10: error: stage 'x' is declared like 'agu', but there is no top-level stage of that name\n");
  EXPECT_EQ(errors_of(base + "a = like b\nb = like a\n"),
            "test.graph:5:10: error: stage 'a' is declared like 'b', which is (in turn) declared like it: a loop\n"
            "test.graph:6:10: error: stage 'b' is declared like 'a', which is (in turn) declared like it: a loop\n");
  EXPECT_EQ(errors_of(base + "x = like aug size=4\n" + used),
            "test.graph:5:14: error: stage 'x' pipes 2 ops: name the op of 'size' (e.g. 'sleep.size' or '0.size')\n");
  EXPECT_EQ(errors_of(base + "x = like aug oven.size=4\n" + used),
            "test.graph:5:14: error: stage 'x' has no op 'oven' (its ops: sleep, kitchen)\n");
  // A changed parameter is checked where it is written.
  EXPECT_EQ(errors_of(base + "x = like aug kitchen.size=big\n" + used),
            "test.graph:5:27: error: parameter 'size' expects an int but got a word 'big'\n");
}

TEST(Validation, CopyRepeatsWholeFlowsUnderANewName) {
  const std::string text = "a = count count=3\nwork = sleep us=2\nend = sink\nb = count count=4\nend2 = sink us=1\n"
                           "flow a -> work -> end\nflow b -> end2\n"
                           "copy a b as x_ {\n  work.us = 9\n  end2.us = 5\n}\n";
  ResolvedGraph graph = resolve_text(text);
  EXPECT_EQ(graph.chains, (std::vector<std::vector<std::string>>{
                              {"a", "work", "end"}, {"b", "end2"}, {"x_a", "x_work", "x_end"}, {"x_b", "x_end2"}}));
  EXPECT_EQ(stage_of(graph, "x_work").ops[0].params.get_int("us"), 9);
  EXPECT_EQ(stage_of(graph, "work").ops[0].params.get_int("us"), 2);
  EXPECT_EQ(stage_of(graph, "x_end2").ops[0].params.get_int("us"), 5);
  EXPECT_EQ(stage_of(graph, "x_a").ops[0].params.get_int("count"), 3);
  // --set reaches the copies by their names.
  EXPECT_EQ(stage_of(resolve_text(text, {"x_work.us=4"}), "x_work").ops[0].params.get_int("us"), 4);
  // --set on an original leaves its twins (copies, `like` stages) as the
  // graph has them: a warning names each twin left alone, unless the graph
  // gave it its own value or the command line set it too.
  const std::string twins = text + "c = count\nw2 = like work\nend3 = like end2\nflow c -> w2 -> end3\n";
  EXPECT_EQ(resolve_text(twins, {"a.count=5"}).warnings,
            (std::vector<std::string>{"--set a.count changes 'a' alone: its copy keeps the graph's value (x_a.count); "
                                      "set it too for branches that differ in nothing else"}));
  EXPECT_EQ(resolve_text(twins, {"work.us=7"}).warnings,
            (std::vector<std::string>{"--set work.us changes 'work' alone: its copy keeps the graph's value (w2.us); "
                                      "set it too for branches that differ in nothing else"}));
  EXPECT_TRUE(resolve_text(twins, {"a.count=5", "x_a.count=5"}).warnings.empty());
  EXPECT_EQ(resolve_text(twins, {"end2.us=5"}).warnings,  // not x_end2: the copy block gave it its own value
            (std::vector<std::string>{"--set end2.us changes 'end2' alone: its copy keeps the graph's value (end3.us); "
                                      "set it too for branches that differ in nothing else"}));
  EXPECT_TRUE(resolve_text(twins, {"a.count=3"}).warnings.empty()) << "the value the graph has: nothing changes";
  // Said once, however often the command line repeats it.
  EXPECT_EQ(resolve_text(twins, {"a.count=5", "a.count=5"}).warnings.size(), 1u);
  // An op chosen by index or type, and one phase's stage, are warned of alike.
  const std::string piped = "a = count count=3\nwork = sleep us=2 | sleep us=3\nend = sink\nflow a -> work -> end\n"
                            "w2 = like work\nb = count\nend2 = sink\nflow b -> w2 -> end2\n"
                            "phase p epochs=1 { }\nphase q epochs=1 { }\n";
  EXPECT_EQ(resolve_text(piped, {"work.1.us=7"}).warnings,
            (std::vector<std::string>{"--set work.1.us changes 'work' alone: its copy keeps the graph's value (w2.1.us); "
                                      "set it too for branches that differ in nothing else"}));
  EXPECT_TRUE(resolve_text(piped, {"work.1.us=7", "w2.1.us=7"}).warnings.empty());
  EXPECT_EQ(resolve_text(piped, {"q.work.1.us=7"}).warnings,
            (std::vector<std::string>{"--set q.work.1.us changes 'work' alone: its copy keeps the graph's value "
                                      "(q.w2.1.us); set it too for branches that differ in nothing else"}));
  // The twin set in every phase covers phase q; in phase p the original keeps the graph's value.
  EXPECT_EQ(resolve_text(piped, {"q.work.1.us=7", "w2.1.us=7"}).warnings,
            (std::vector<std::string>{"--set w2.1.us changes 'w2' alone: its twin keeps the graph's value (work.1.us); "
                                      "set it too for branches that differ in nothing else"}));
  EXPECT_TRUE(resolve_text(piped, {"q.work.1.us=7", "q.w2.1.us=7"}).warnings.empty());
  // The twin set under another spelling of the same op is set; a copy set
  // alone leaves the stage it was made from (its twin) at the graph's value.
  const std::string kitchen = "a = count\nwork = sleep | kitchen size=3\nend = sink\nflow a -> work -> end\n"
                              "w2 = like work\nb = count\nend2 = sink\nflow b -> w2 -> end2\n";
  EXPECT_TRUE(resolve_text(kitchen, {"work.1.size=5", "w2.kitchen.size=5"}).warnings.empty());
  EXPECT_TRUE(resolve_text(kitchen, {"work.size=5", "w2.1.size=5"}).warnings.empty());
  EXPECT_EQ(resolve_text(kitchen, {"w2.kitchen.size=5"}).warnings,
            (std::vector<std::string>{"--set w2.kitchen.size changes 'w2' alone: its twin keeps the graph's value "
                                      "(work.kitchen.size); set it too for branches that differ in nothing else"}));
  const std::string flows = "a = count\nwork = sleep\nend = sink\nflow a -> work -> end\n";
  EXPECT_EQ(errors_of(flows + "copy z as x_\n"),
            "test.graph:5:6: error: copy: no flow starts at 'z' (copy names the first stage of a 'flow' line)\n");
  EXPECT_EQ(errors_of(flows + "copy a as x_ { nope.us = 1 }\n"),
            "test.graph:5:16: error: copy: 'nope' is not a stage of the copied flows (a, end, work)\n");
  EXPECT_EQ(errors_of(flows + "x_work = sleep\ncopy a as x_\n"),
            "test.graph:6:11: error: copy: the copy of 'work' would be named 'x_work', which is taken\n");
  EXPECT_EQ(errors_of(flows + "copy a x_\n"),
            "test.graph:5:10: error: expected 'as PREFIX' after the flows to copy but found end of line\n");
}

// `flow a + t -> ...`: sources joined to a flow's first; they print back
// as written, are copied with their flow, and only sources join.
TEST(Validation, AFlowJoinsSourcesWithPlus) {
  const std::string text = "a = count count=3\nt = count count=2\nwork = sleep\nend = sink\nflow a + t -> work -> end\n";
  ResolvedGraph graph = resolve_text(text);
  EXPECT_EQ(graph.chains, (std::vector<std::vector<std::string>>{{"a", "work", "end"}}));
  EXPECT_EQ(graph.sources_of("a"), (std::vector<std::string>{"a", "t"}));
  EXPECT_NE(graph.format().find("flow a + t -> work -> end\n"), std::string::npos) << graph.format();
  ResolvedGraph copied = resolve_text(text + "copy a as x_ { work.us = 3 }\n");
  EXPECT_EQ(copied.sources_of("x_a"), (std::vector<std::string>{"x_a", "x_t"}));
  EXPECT_EQ(stage_of(copied, "x_t").ops[0].params.get_int("count"), 2);
  EXPECT_EQ(errors_of("a = count\nw = sleep\nend = sink\nflow a + w -> end\n"),
            "test.graph:4:10: error: stage 'w' is joined to 'a' with '+' but is not a source; only sources join a flow "
            "('flow source + target -> ...')\n");
  EXPECT_EQ(errors_of("a = count\nt = count\nb = count\nend = sink\nend2 = sink\nflow a + t -> end\nflow b + t -> end2\n"),
            "test.graph:7:10: error: source 't' is already in a flow; a source feeds one flow\n");
  EXPECT_EQ(errors_of("a = count\nt = count\nend = sink\nend2 = sink\nflow a + t -> end\nflow t -> end2\n"),
            "test.graph:6:6: error: source 't' is joined to a flow with '+'; a source feeds one flow\n");
  EXPECT_EQ(errors_of("a = count\nt = count\nw = sleep\nend = sink\nflow a -> w + t -> end\n"),
            "test.graph:5:13: error: only a flow's first stage joins sources with '+' ('flow source + target -> ...')\n");
  EXPECT_EQ(errors_of("a = count\nend = sink\nflow a + tt -> end\n"),
            "test.graph:3:10: error: dangling connection: no stage named 'tt'\n");
}

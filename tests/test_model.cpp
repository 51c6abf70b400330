// The model: torchvision's ResNet keys, weight files (.pth through the
// restricted unpickler, safetensors both ways), strict loading, head
// replacement, and logits equal to torchvision's.
#include <gtest/gtest.h>
#include <limits>
#include <unistd.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data_support.h"
#include "stages/model/model.h"
#include "test_support.h"

using namespace flowrun;
using namespace flowrun::stages;

namespace {

// The oracle's files: made by the model_oracle CTest fixture, or here when
// the suite runs on its own.
const std::string& oracle_dir() {
  static const std::string dir = [] {
    std::string d = MODEL_ORACLE_DIR;
    if (std::filesystem::exists(d + "/complete")) return d;
    std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_resnet.py' --make '" + d + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("oracle failed: " + command);
    return d;
  }();
  return dir;
}

at::Tensor read_f32(const std::string& path, std::vector<int64_t> shape) {
  std::ifstream in(path, std::ios::binary);
  at::Tensor t = at::empty(shape);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * 4));
  return t;
}

std::vector<std::string> keys_of(const StateDict& state) {
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : state) keys.push_back(key);
  return keys;
}

std::string load_error(int depth, int64_t classes, const std::string& file) {
  try {
    ResNet net(depth, classes);
    load_state_dict(*net, read_weights(file), true, file);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Shapes must agree (no broadcasting); a NaN stays NaN and so fails every "<=" bound.
float max_difference(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return std::numeric_limits<float>::infinity();
  return (a - b).abs().max().item<float>();
}

}  // namespace

TEST(Model, KeysAreTorchvisionsInOrder) {
  for (int depth : {18, 50}) {
    std::ifstream in(oracle_dir() + "/" + std::to_string(depth) + ".keys");
    std::vector<std::string> expected;
    for (std::string line; std::getline(in, line);) expected.push_back(line);
    ResNet net(depth, 7);
    // The order too: torchvision's state_dict() interleaves each module's
    // parameters and buffers (bn1.weight, bn1.bias, bn1.running_mean, ...).
    EXPECT_EQ(keys_of(state_dict(*net)), expected) << depth;
    // Saved files list them in the same order.
    const std::string file = testing::TempDir() + "/order.safetensors";
    write_safetensors(file, state_dict(*net));
    EXPECT_EQ(keys_of(read_safetensors(file)), expected) << depth;
    if (depth == 50) {
      EXPECT_EQ(expected.size(), 320u);
    }
  }
}

TEST(Model, TorchvisionPthGivesTheSameLogits) {
  for (int depth : {18, 50}) {
    std::string base = oracle_dir() + "/" + std::to_string(depth);
    StateDict weights = read_torch_state_dict(base + ".pth");
    ResNet net(depth, 7);
    LoadReport report = load_state_dict(*net, weights, false, base + ".pth");
    EXPECT_EQ(report.loaded, weights.size());
    net->eval();
    torch::NoGradGuard no_grad;
    at::Tensor logits = net->forward(read_f32(base + ".input.f32", {2, 3, 32, 32}));
    EXPECT_LE(max_difference(logits, read_f32(base + ".logits.f32", {2, 7})), 1e-4f) << depth;
  }
}

TEST(Model, SafetensorsBothWays) {
  std::string base = oracle_dir() + "/50";
  ResNet net(50, 7);
  load_state_dict(*net, read_safetensors(base + ".safetensors"), false, base + ".safetensors");
  net->eval();
  torch::NoGradGuard no_grad;
  at::Tensor input = read_f32(base + ".input.f32", {2, 3, 32, 32});
  at::Tensor logits = net->forward(input);
  EXPECT_LE(max_difference(logits, read_f32(base + ".logits.f32", {2, 7})), 1e-4f);
  // Exported by flowrun, loaded by torchvision with load_state_dict(strict=True).
  std::string exported = test::temp_dir() + "/exported.safetensors";
  write_safetensors(exported, state_dict(*net));
  std::string out = exported + ".logits";
  std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_resnet.py' --check 50 '" +
                        exported + "' '" + base + ".input.f32' '" + out + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_LE(max_difference(logits, read_f32(out, {2, 7})), 1e-4f);
  // And read back by flowrun unchanged.
  StateDict again = read_safetensors(exported);
  StateDict original = state_dict(*net);
  ASSERT_EQ(keys_of(again), keys_of(original));
  for (size_t i = 0; i < again.size(); ++i) EXPECT_TRUE(again[i].second.equal(original[i].second)) << again[i].first;
}

TEST(Model, NewHeadIsReinitialisedAndReported) {
  std::string file = oracle_dir() + "/18-1000.pth";
  ResNet net(18, 7);
  LoadReport report = load_state_dict(*net, read_weights(file), true, file);
  EXPECT_EQ(report.reinitialised, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_EQ(report.loaded, 122u - 2u);
  EXPECT_EQ(net->fc->weight.size(0), 7);
  EXPECT_EQ(load_error(18, 7, file), "");
  try {
    ResNet strict(18, 7);
    load_state_dict(*strict, read_weights(file), false, file);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("key 'fc.weight' has shape [1000, 512] but the model needs [7, 512]"),
              std::string::npos) << e.what();
  }
}

TEST(Model, WrongKeysAreNamed) {
  const std::string& d = oracle_dir();
  EXPECT_EQ(load_error(18, 7, d + "/missing.pth"),
            d + "/missing.pth: weights do not fit the model:\n  missing key 'layer2.0.bn1.running_var' ([128])");
  EXPECT_EQ(load_error(18, 7, d + "/unexpected.pth"),
            d + "/unexpected.pth: weights do not fit the model:\n  unexpected key 'layer9.weight' ([3])");
  EXPECT_EQ(load_error(18, 7, d + "/misshaped.pth"),
            d + "/misshaped.pth: weights do not fit the model:\n  key 'conv1.weight' has shape [64, 3, 3, 3] but the "
                "model needs [64, 3, 7, 7]");
  std::string wrong_depth = load_error(50, 7, d + "/18.pth");
  EXPECT_NE(wrong_depth.find("missing key 'layer1.0.conv3.weight'"), std::string::npos);
  EXPECT_NE(wrong_depth.find("... and "), std::string::npos);  // long lists are cut
}

TEST(Model, PickleCodeIsNeverRun) {
  const std::string& d = oracle_dir();
  std::string error = load_error(18, 7, d + "/evil.pth");
  // {'w': an object whose unpickling runs os.system}: named, never run.
  EXPECT_NE(error.find("a checkpoint dict with entries ['w': an object of posix.system]"), std::string::npos) << error;
  EXPECT_NE(error.find("nothing in the file is run"), std::string::npos) << error;
  EXPECT_FALSE(std::filesystem::exists(d + "/PWNED"));
}

namespace {
// Weight files as DataParallel, Lightning, the ImageNet example, timm and
// torch.compile write them (tests/oracle/checkpoint_files.py), from 18.pth.
const std::string& ecosystem_dir() {
  static const std::string dir = [] {
    std::string d = oracle_dir() + "/ecosystem";
    if (std::filesystem::exists(d + "/complete")) return d;
    // Made in a folder of this process's own, then renamed: ctest runs other tests of this suite at the same time.
    const std::string mine = d + ".tmp." + std::to_string(::getpid());
    std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/checkpoint_files.py' '" +
                          oracle_dir() + "/18.pth' '" + mine + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("oracle failed: " + command);
    std::error_code taken;
    std::filesystem::rename(mine, d, taken);  // fails when another process's folder is already there: use that
    if (taken) std::filesystem::remove_all(mine);
    if (!std::filesystem::exists(d + "/complete")) throw std::runtime_error("no complete oracle folder " + d);
    return d;
  }();
  return dir;
}

struct Loaded {
  std::string note;
  LoadReport report;
  float difference = 1e9f;  // from the oracle's logits
};

Loaded load_file(const std::string& file, const std::string& entry = "auto") {
  Loaded out;
  ResNet net(18, 7);
  out.report = load_state_dict(*net, read_weights(file, nullptr, entry, &out.note), false, file);
  net->eval();
  torch::NoGradGuard no_grad;
  const std::string base = oracle_dir() + "/18";
  out.difference = max_difference(net->forward(read_f32(base + ".input.f32", {2, 3, 32, 32})),
                                  read_f32(base + ".logits.f32", {2, 7}));
  return out;
}

bool has_note(const LoadReport& report, const std::string& text) {
  for (const auto& note : report.notes)
    if (note.find(text) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(Model, WeightFilesAsThePyTorchEcosystemWritesThem) {
  const std::string& d = ecosystem_dir();
  // nn.DataParallel / DDP: 'module.' stripped, said.
  Loaded dp = load_file(d + "/dataparallel.pth");
  EXPECT_LE(dp.difference, 1e-4f);
  EXPECT_EQ(dp.note, "");  // a plain state dict
  EXPECT_TRUE(has_note(dp.report, "stripped the prefix 'module.'"));
  EXPECT_EQ(dp.report.loaded, 122u);
  // Lightning: the weights under 'state_dict', 'model.' stripped; epochs,
  // optimizer states, hyper-parameters (a Namespace, a set, bytes, a big int,
  // an object whose unpickling would run os.system) read past, nothing run.
  Loaded lightning = load_file(d + "/lightning.ckpt");
  EXPECT_LE(lightning.difference, 1e-4f);
  EXPECT_NE(lightning.note.find("took the weights under 'state_dict' of a checkpoint dict with entries ['epoch': an "
                                "int, 'global_step': an int"), std::string::npos) << lightning.note;
  EXPECT_TRUE(has_note(lightning.report, "stripped the prefix 'model.'"));
  EXPECT_FALSE(std::filesystem::exists(d + "/PWNED"));
  // The ImageNet example: 'state_dict' beside a tensor best_acc1 and the optimizer.
  Loaded imagenet = load_file(d + "/imagenet.pth.tar");
  EXPECT_LE(imagenet.difference, 1e-4f);
  EXPECT_NE(imagenet.note.find("'state_dict'"), std::string::npos) << imagenet.note;
  EXPECT_TRUE(has_note(imagenet.report, "stripped the prefix 'module.'"));
  // timm: the EMA weights first (its load_checkpoint's use_ema=True), the
  // other on request; the note says which was taken and what else is there.
  Loaded ema = load_file(d + "/timm_ema.pth");
  EXPECT_LE(ema.difference, 1e-4f);
  EXPECT_NE(ema.note.find("took the weights under 'state_dict_ema'"), std::string::npos) << ema.note;
  EXPECT_NE(ema.note.find("also holds 'state_dict': choose with weights_entry="), std::string::npos) << ema.note;
  Loaded plain = load_file(d + "/timm_ema.pth", "state_dict");  // zeros there: other logits
  EXPECT_GT(plain.difference, 1e-2f);
  EXPECT_NE(plain.note.find("took the weights under 'state_dict'"), std::string::npos) << plain.note;
  // torch.compile.
  Loaded compiled = load_file(d + "/compiled.pth");
  EXPECT_LE(compiled.difference, 1e-4f);
  EXPECT_TRUE(has_note(compiled.report, "stripped the prefix '_orig_mod.'"));
  // No num_batches_tracked: filled with 0, as PyTorch does, and said.
  Loaded old = load_file(d + "/old_bn.pth");
  EXPECT_LE(old.difference, 1e-4f);
  EXPECT_TRUE(has_note(old.report, "set 20 missing BatchNorm num_batches_tracked to 0")) << old.report.notes.size();
  EXPECT_EQ(old.report.loaded, 102u);
}

TEST(Model, WeightErrorsLeadWithTheCause) {
  const std::string& d = ecosystem_dir();
  const std::string backbone = load_error(18, 7, d + "/backbone.pth");
  EXPECT_EQ(backbone.find(d + "/backbone.pth: weights do not fit the model:\n  every key in the file starts with "
                              "'backbone.', which the model's keys do not (conv1.weight, ...)"), 0u) << backbone;
  EXPECT_EQ(load_error(18, 7, d + "/no_weights.pth"),
            d + "/no_weights.pth: a checkpoint dict with entries ['epoch': an int, 'arch': a string]: none of "
                "'state_dict_ema', 'model_ema', 'state_dict', 'model' holds the weights (nothing in the file is run)");
  // 25 missing keys do not hide the unexpected one (load_state_dict reports both).
  const std::string mixed = load_error(18, 7, d + "/mixed.pth");
  EXPECT_NE(mixed.find("... and 15 more missing keys"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("unexpected key 'head.extra' ([2])"), std::string::npos) << mixed;
  try {
    ResNet net(18, 7);
    read_weights(d + "/lightning.ckpt", nullptr, "model_ema");
    FAIL() << "an absent entry was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("weights_entry='model_ema', but the checkpoint dict has no such entry: its "
                                         "entries are ['epoch': an int"), std::string::npos) << e.what();
  }
}

TEST(Model, BadFilesAreClearErrors) {
  std::string dir = test::temp_dir();
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    return dir + "/" + name;
  };
  std::string empty = write("empty.safetensors", "");
  EXPECT_EQ(load_error(18, 7, empty), empty + ": empty: not a PyTorch .pth (zip) or safetensors file");
  // Neither a zip nor safetensors, whatever the name says.
  std::string text = write("notes.pth", "these are not weights, just a text file\n");
  EXPECT_EQ(load_error(18, 7, text), text + ": not a PyTorch .pth (zip) or safetensors file");
  std::string tiny = write("tiny.safetensors", "{}");
  EXPECT_EQ(load_error(18, 7, tiny), tiny + ": not a PyTorch .pth (zip) or safetensors file");
  std::string legacy = write("legacy.pth", std::string("\x80\x02\x8a\x0alz\xfc\x9c" "F\xf9 j\xa8P\x19.", 16));
  EXPECT_EQ(load_error(18, 7, legacy).rfind(legacy + ": a torch.save file in the legacy (pre-1.6, not zip) format", 0), 0u)
      << load_error(18, 7, legacy);
  std::string huge = write("huge.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}");
  EXPECT_EQ(load_error(18, 7, huge), huge + ": safetensors header size is out of range");
  std::string json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4]}}";
  std::string header(8, '\0');
  header[0] = static_cast<char>(json.size());
  std::string absurd = write("absurd.safetensors", header + json + "abcd");
  EXPECT_EQ(load_error(18, 7, absurd), absurd + ": 'w' shape does not match its byte size");
  std::string outside = write("outside.safetensors", header.substr(0, 0) + [&] {
    std::string j = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    std::string h(8, '\0');
    h[0] = static_cast<char>(j.size());
    return h + j + "abcd";
  }());
  EXPECT_EQ(load_error(18, 7, outside), outside + ": 'w' has data offsets outside the file");
  std::string zip = write("fake.pth", "PK\x03\x04 not really a zip");
  EXPECT_EQ(load_error(18, 7, zip).rfind(zip + ": not a readable torch.save zip archive", 0), 0u) << load_error(18, 7, zip);
  EXPECT_EQ(load_error(18, 7, dir + "/none.pth"), dir + "/none.pth: cannot open weight file");
  EXPECT_EQ(load_error(18, 7, dir), dir + ": a directory, not a weight file: name the .pth or .safetensors file in it");
  // Another depth's weights: the layouts named first, before the keys.
  const std::string r50 = dir + "/resnet50.safetensors";
  write_safetensors(r50, state_dict(*ResNet(50, 7)));
  for (const auto& [depth, layout] : std::vector<std::pair<int, std::string>>{
           {18, "ResNet-18 (blocks 2, 2, 2, 2, basic)"}, {34, "ResNet-34 (blocks 3, 4, 6, 3, basic)"},
           {101, "ResNet-101 (blocks 3, 4, 23, 3, bottleneck)"}})
    EXPECT_EQ(load_error(depth, 7, r50).rfind(r50 + ": weights do not fit the model:\n  the file holds ResNet-50 (blocks "
                                               "3, 4, 6, 3, bottleneck), the model is " + layout + ": a model stage "
                                               "of the file's depth (depth=...) loads it\n", 0), 0u)
        << load_error(depth, 7, r50);
  // Found by fuzzing: a zip whose tensor record is damaged (LibTorch's reader throws its own error).
  const std::string damaged = FLOWRUN_SOURCE_DIR "/fuzz/corpus/pth/damaged_record.pth";
  EXPECT_EQ(load_error(18, 7, damaged).rfind(damaged + ": corrupt torch.save archive (", 0), 0u)
      << load_error(18, 7, damaged);
  // Found by fuzzing: a 292-byte zip whose data.pkl declares 4,194,304,000 bytes. Refused before LibTorch's
  // reader allocates what the record declares.
  const std::string huge_record = FLOWRUN_SOURCE_DIR "/fuzz/corpus/pth/huge_record.pth";
  EXPECT_EQ(load_error(18, 7, huge_record),
            huge_record + ": corrupt torch.save archive (record 'archive/data.pkl' declares 4194304000 bytes, "
                          "more than the whole file's 292)");
}

TEST(Features, MatchTorchvisionsBackboneOnTheSameFiles) {
  std::string root = test::make_jpeg_folder({"cat", "dog", "fox"}, 3, 40, 48);
  std::string dir = test::temp_dir();
  const std::string weights = oracle_dir() + "/50.safetensors";
  std::ofstream(dir + "/features.graph")
      << "run epochs=1 compute_threads=1\n"
      << "src = imagefolder root=\"" << root << "\"\n"
      << "prep = decode | resize size=32 | center_crop size=32 | normalize stats=imagenet\n"
      << "batch = batch size=4\n"
      << "model = resnet depth=50 classes=7 precision=fp32 weights=\"" << weights << "\"\n"  // torchvision's fp32
      << "feats = features path=\"" << dir << "/out/train.safetensors\"\n"
      << "flow src -> prep -> batch -> feats\n";
  auto run = test::run_flowrun({dir + "/features.graph", "--threads", "2", "--summary-json", dir + "/summary.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  Metadata metadata;
  StateDict file = read_safetensors(dir + "/out/train.safetensors", &metadata);
  ASSERT_EQ(keys_of(file), (std::vector<std::string>{"features", "indices", "labels"}));
  const at::Tensor& features = file[0].second;
  ASSERT_EQ(features.sizes().vec(), (std::vector<int64_t>{9, 2048}));
  EXPECT_EQ(metadata.at("layer"), "avgpool");
  // The CSV beside it names every row's file; torchvision computes the same rows from those files.
  std::ifstream table(dir + "/out/train.csv");
  std::string line;
  std::getline(table, line);
  EXPECT_EQ(line, "row,index,label,class,path");
  std::vector<std::string> rows;
  while (std::getline(table, line)) rows.push_back(line);
  ASSERT_EQ(rows.size(), 9u);
  for (int64_t r = 0; r < 9; ++r) {
    std::string expected_start = std::to_string(r) + "," + std::to_string(file[1].second[r].item<int64_t>()) + "," +
                                 std::to_string(file[2].second[r].item<int64_t>()) + ",";
    EXPECT_EQ(rows[r].rfind(expected_start, 0), 0u) << rows[r];
  }
  EXPECT_NE(rows[8].find(",fox," + root + "/fox/"), std::string::npos) << rows[8];
  std::string oracle = dir + "/torchvision.f32";
  std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_resnet.py' --features 50 '" +
                        weights + "' '" + dir + "/out/train.csv' 32 4 '" + oracle + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  // Relative to the features' scale (pooled ResNet-50 features reach ~10): LibTorch's C++ and Python sides may
  // run different convolution kernels (thread counts), which sum in other orders.
  const at::Tensor expected = read_f32(oracle, {9, 2048});
  EXPECT_LE(max_difference(features, expected), 1e-4f * std::max(1.0f, expected.abs().max().item<float>()));

  // A named layer: that block's output, pooled (layer2 of a ResNet-50 has 512 channels). Two epochs: the
  // files hold one epoch's rows, not both.
  run = test::run_flowrun({dir + "/features.graph", "--threads", "2", "--set", "feats.layer=layer2", "--set",
                           "feats.path=" + dir + "/out/layer2.safetensors", "--set", "run.epochs=2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(read_safetensors(dir + "/out/layer2.safetensors")[0].second.sizes().vec(),
            (std::vector<int64_t>{9, 512}));
  // Nothing is left beside the outputs but the outputs.
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/out")) left.push_back(entry.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"layer2.csv", "layer2.safetensors", "train.csv", "train.safetensors"}));
}

#include "stages/model/model.h"
#include "stages/model/precision.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>

#include "pipeline/error_text.h"
#include "pipeline/executor.h"
#include "pipeline/graph.h"
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/common/random.h"
#include "stages/dist/job.h"
#include "stages/model/checkpoint_format.h"
#include "stages/tensor/batch_data.h"
#include "stages/tensor/device.h"

namespace flowrun::stages {

namespace {
std::string shape_text(at::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}
}  // namespace

StateDict state_dict(const torch::nn::Module& model) {
  // PyTorch's order (Module.state_dict): each module's own parameters, then
  // its own buffers, then its children's, depth first (bn1.weight, bn1.bias,
  // bn1.running_mean, ...), not all parameters before all buffers.
  StateDict out;
  for (const auto& module : model.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    const std::string prefix = module.key().empty() ? "" : module.key() + ".";
    for (const auto& item : module.value()->named_parameters(/*recurse=*/false))
      out.emplace_back(prefix + item.key(), item.value());
    for (const auto& item : module.value()->named_buffers(/*recurse=*/false))
      out.emplace_back(prefix + item.key(), item.value());
  }
  return out;
}

namespace {
// The prefixes wrappers put before every key: nn.DataParallel and DDP
// (module.), Lightning and EMA wrappers (model.), torch.compile (_orig_mod.).
const char* const kWrapperPrefixes[] = {"module.", "model.", "_orig_mod."};

bool all_start_with(const StateDict& dict, const std::string& prefix) {
  if (dict.empty()) return false;
  for (const auto& [key, tensor] : dict)
    if (key.compare(0, prefix.size(), prefix) != 0) return false;
  return true;
}

// The first dotted component every key shares ("backbone."), or "".
std::string common_prefix(const StateDict& dict) {
  if (dict.empty()) return "";
  const std::string& first = dict.front().first;
  const size_t dot = first.find('.');
  if (dot == std::string::npos) return "";
  const std::string prefix = first.substr(0, dot + 1);
  return all_start_with(dict, prefix) ? prefix : "";
}

// A torchvision ResNet's layout from its keys: "ResNet-50 (blocks 3, 4, 6, 3,
// bottleneck)", or "" for keys of another kind. torchvision's depths by
// their blocks per stage (He et al. 2016, table 1); wide and ResNeXt
// variants share the bottleneck layouts.
std::string resnet_layout(const StateDict& dict) {
  int64_t blocks[4] = {0, 0, 0, 0};
  bool bottleneck = false;
  for (const auto& [key, tensor] : dict) {
    if (key.size() < 9 || key.compare(0, 5, "layer") != 0 || key[5] < '1' || key[5] > '4' || key[6] != '.') continue;
    const size_t dot = key.find('.', 7);
    if (dot == std::string::npos) continue;
    int64_t block = 0;
    try {
      block = std::stoll(key.substr(7, dot - 7));
    } catch (const std::exception&) {
      continue;
    }
    blocks[key[5] - '1'] = std::max(blocks[key[5] - '1'], block + 1);
    bottleneck |= key.compare(dot + 1, 6, "conv3.") == 0;
  }
  if (!blocks[0] || !blocks[1] || !blocks[2] || !blocks[3]) return "";
  const std::vector<int64_t> b(blocks, blocks + 4);
  std::string depth;
  if (!bottleneck && b == std::vector<int64_t>{2, 2, 2, 2}) depth = "ResNet-18";
  if (!bottleneck && b == std::vector<int64_t>{3, 4, 6, 3}) depth = "ResNet-34";
  if (bottleneck && b == std::vector<int64_t>{3, 4, 6, 3}) depth = "ResNet-50";
  if (bottleneck && b == std::vector<int64_t>{3, 4, 23, 3}) depth = "ResNet-101";
  if (bottleneck && b == std::vector<int64_t>{3, 8, 36, 3}) depth = "ResNet-152";
  return (depth.empty() ? std::string("a ResNet") : depth) + " (blocks " + std::to_string(b[0]) + ", " +
         std::to_string(b[1]) + ", " + std::to_string(b[2]) + ", " + std::to_string(b[3]) +
         (bottleneck ? ", bottleneck)" : ", basic)");
}

std::string listed(const std::vector<std::string>& items, size_t most, const std::string& what) {
  std::string text;
  for (size_t i = 0; i < items.size() && i < most; ++i) text += "\n  " + items[i];
  if (items.size() > most) text += "\n  ... and " + std::to_string(items.size() - most) + " more " + what;
  return text;
}
}  // namespace

LoadReport load_state_dict(NetworkImpl& model, const StateDict& file_weights, bool allow_new_head,
                           const std::string& source) {
  LoadReport report;
  StateDict own = state_dict(model);
  // A wrapper's prefix on every key (and none on the model's): stripped, as
  // timm's checkpoint loader does, and said.
  StateDict weights = file_weights;
  for (bool stripped = true; stripped;) {
    stripped = false;
    for (const std::string prefix : kWrapperPrefixes)
      if (all_start_with(weights, prefix) && !all_start_with(own, prefix)) {
        for (auto& [key, tensor] : weights) key.erase(0, prefix.size());
        report.notes.push_back("stripped the prefix '" + prefix + "' every key had");
        stripped = true;
      }
  }
  std::map<std::string, at::Tensor> given;
  for (const auto& [key, tensor] : weights) {
    if (!given.emplace(key, tensor).second) throw std::runtime_error(source + ": key '" + key + "' appears twice");
  }
  // BatchNorm's num_batches_tracked, missing from files saved before PyTorch
  // 0.4.1 and by converters: filled as PyTorch's BatchNorm loading does
  // (with 0; it only counts batches for momentum=None).
  size_t filled = 0;
  const std::string counter = "num_batches_tracked";
  for (const auto& [key, tensor] : own) {
    if (key.size() < counter.size() || key.compare(key.size() - counter.size(), counter.size(), counter) != 0 ||
        given.count(key))
      continue;
    const std::string module = key.substr(0, key.size() - counter.size());
    if (!given.count(module + "running_mean")) continue;  // the whole layer is missing: reported below
    given.emplace(key, torch::zeros({}, torch::kLong));
    ++filled;
  }
  if (filled)
    report.notes.push_back("set " + std::to_string(filled) + " missing BatchNorm num_batches_tracked to 0 (as PyTorch "
                           "does for files saved before 0.4.1)");
  std::map<std::string, at::Tensor> mine(own.begin(), own.end());
  // Strict, as load_state_dict(strict=True): every problem at once, missing
  // and unexpected keys side by side.
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& [key, tensor] : own) {
    auto it = given.find(key);
    if (it == given.end()) {
      // A file without a multi-task model's extra head (a single-task model's,
      // torchvision's): the head starts afresh, as a head of another size does.
      if (allow_new_head && key.rfind("heads.", 0) == 0) report.reinitialised.push_back(key);
      else missing.push_back("missing key '" + key + "' (" + shape_text(tensor.sizes()) + ")");
    } else if (it->second.sizes() != tensor.sizes()) {
      if (allow_new_head && model.is_head(key)) report.reinitialised.push_back(key);
      else misshaped.push_back("key '" + key + "' has shape " + shape_text(it->second.sizes()) + " but the model needs " +
                               shape_text(tensor.sizes()));
    }
  }
  for (const auto& [key, tensor] : weights)
    if (!mine.count(key)) unexpected.push_back("unexpected key '" + key + "' (" + shape_text(tensor.sizes()) + ")");
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::string text = source + ": weights do not fit the model:";
    // The cause first: every key behind a prefix the model's keys lack.
    const std::string prefix = common_prefix(weights);
    if (!prefix.empty() && !all_start_with(own, prefix))
      text += "\n  every key in the file starts with '" + prefix + "', which the model's keys do not (" +
              own.front().first + ", ...): weights of a wrapped model or of a part of one?";
    // A ResNet of another depth: the likeliest cause, said first.
    const std::string file_layout = resnet_layout(weights), model_layout = resnet_layout(own);
    if (!file_layout.empty() && !model_layout.empty() && file_layout != model_layout)
      text += "\n  the file holds " + file_layout + ", the model is " + model_layout +
              ": a model stage of the file's depth (depth=...) loads it";
    // A multi-task model's file into a model without those heads: say how to declare them.
    std::string tasks, sizes;
    for (const auto& [key, tensor] : weights)
      if (key.rfind("heads.", 0) == 0 && key.size() > 7 && key.compare(key.size() - 7, 7, ".weight") == 0 &&
          !mine.count(key) && tensor.dim() == 2) {
        tasks += (tasks.empty() ? "" : ", ") + key.substr(6, key.size() - 13);
        sizes += (sizes.empty() ? "" : ", ") + std::to_string(tensor.size(0));
      }
    if (!tasks.empty())
      text += "\n  the weights are a multi-task model's, with extra heads the model lacks: declare them, tasks=[" + tasks +
              "] task_classes=[" + sizes + "]";
    // Each kind capped on its own: twenty missing keys never hide the unexpected ones.
    text += listed(missing, 10, "missing keys") + listed(unexpected, 10, "unexpected keys") +
            listed(misshaped, 10, "mis-shaped keys");
    throw std::runtime_error(text);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, tensor] : own) {
    if (std::find(report.reinitialised.begin(), report.reinitialised.end(), key) != report.reinitialised.end()) continue;
    const at::Tensor& value = given.at(key);
    at::Tensor target = tensor;
    target.copy_(value.to(target.scalar_type()));
    ++report.loaded;
  }
  report.loaded -= filled;
  return report;
}

Schema ModelStage::common_schema(std::string type, std::string doc) {
  return Schema(std::move(type), std::move(doc))
      .provides("model")
      .param(Int("classes", "outputs of the head").range(1, 1000000))
      .param(StringList("tasks", "a multi-task model's extra heads beside the classes', one per task, each on the "
                                 "backbone's features (keys heads.TASK.*); the data labels them (imagelist tasks=, "
                                 "class_groups)").def(std::vector<std::string>{}))
      .param(IntList("task_classes", "outputs of each extra head, in tasks' order").def(std::vector<int64_t>{})
                 .at_least(1))
      .param(Path("weights", "a torchvision .pth, a safetensors file or a flowrun checkpoint (its model of this "
                            "stage's name); \"\" = random initialisation").def(std::string("")))
      .param(String("weights_entry", "which weights of a checkpoint dict ({'epoch', 'state_dict', ...}) to load: auto "
                                      "takes state_dict_ema, model_ema, state_dict or model, the first present (timm's "
                                      "order)").def(std::string("auto"))
                 .one_of({"auto", "state_dict", "model", "state_dict_ema", "model_ema"}))
      .param(Path("pretrain", "a graph that makes `weights` when the file does not exist yet (run once, then cached)")
                 .def(std::string("")))
      .param(String("device", "auto (CUDA when available), cpu or cuda").def(std::string("auto"))
                 .one_of({"auto", "cpu", "cuda"}))
      .param(Int("index", "CUDA device index; auto = the rank's LOCAL_RANK in a job of several processes, else 0")
                 .def(Auto{}).or_auto().range(0, 63))
      .param(String("precision", "auto (bf16 autocast on CUDA and on a CPU with native bf16, AVX512_BF16 "
                                   "or AMX; fp32 on other CPUs), fp32 or bf16 (emulated, slow, on a CPU without "
                                   "them)").def(std::string("auto"))
                 .one_of({"auto", "fp32", "bf16"}))
      .param(String("channels_last", "NHWC layout: auto = on CUDA").def(std::string("auto")).one_of({"auto", "yes", "no"}))
      // Values alone, so that --check reports them; whether CUDA is there is
      // known only on the machine that runs (the constructor checks that).
      .check([](const Params& p) -> std::string {
        const auto tasks = p.get_string_list("tasks");
        if (tasks.size() != p.get_int_list("task_classes").size())
          return "tasks=[...] names " + std::to_string(tasks.size()) + " heads but task_classes=[...] gives " +
                 std::to_string(p.get_int_list("task_classes").size()) + " sizes";
        for (size_t i = 0; i < tasks.size(); ++i) {
          const std::string& t = tasks[i];
          if (t.empty() || t.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                               std::string::npos)
            return "task '" + t + "': a head's name is letters, digits and _ (it is a key: heads." + t + ".weight)";
          if (std::find(tasks.begin(), tasks.begin() + i, t) != tasks.begin() + i) return "task '" + t + "' is listed twice";
        }
        return "";
      });
}

Schema ModelStage::schema() {
  return common_schema("resnet", "ResNet-18/34/50/101 with torchvision's keys; weights from .pth (torch.save) or "
                                 "safetensors")
      .param(Int("depth", "18, 34, 50 or 101").def(int64_t{50}).range(18, 101))
      .check([](const Params& p) {
        int64_t d = p.get_int("depth");
        return d == 18 || d == 34 || d == 50 || d == 101 ? "" : "depth must be 18, 34, 50 or 101";
      });
}

namespace {
// A weights file, or a flowrun checkpoint: then the weights of the model
// stage of the same name in the run that wrote it. `metadata` gets the
// weights' own (their class names).
StateDict read_model_weights(const std::string& path, const std::string& stage, const std::string& entry,
                             Metadata& metadata, std::string& note) {
  StateDict tensors = read_weights(path, &metadata, entry, &note);
  if (metadata["format"] != checkpoint_format::kFormat) return tensors;
  const std::string key = checkpoint_format::kStagePrefix + stage;
  metadata.clear();
  for (const auto& [name, tensor] : tensors)
    if (name == key && tensor.scalar_type() == at::kByte && tensor.dim() == 1)
      return decode_safetensors(static_cast<const uint8_t*>(tensor.contiguous().data_ptr()),
                                static_cast<size_t>(tensor.numel()), path + " (model '" + stage + "')", &metadata);
  throw std::runtime_error(path + ": a checkpoint without a model stage named '" + stage + "'");
}

// Whether any phase of the graph has a train stage for model `name`.
bool trained_in_graph(const StageDirectory& stages, const std::string& name) {
  const ResolvedGraph* graph = stages.resolved_graph();
  if (!graph) return true;  // not known: do not refuse
  for (const auto& phase : graph->phases)
    for (const auto& stage : phase.stages)
      for (const auto& op : stage.ops)
        if (op.type == "train" && (!op.params.has("model") || op.params.get_string("model").empty() ||
                                   op.params.get_string("model") == name))
          return true;  // (an unset reference takes the phase's one model)
  return false;
}

std::vector<std::string> parse_class_names(const std::string& text, const std::string& source) {
  try {
    return nlohmann::json::parse(text).get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": its metadata 'classes' is not a JSON list of names: " + e.what());
  }
}

std::string names_text(const std::vector<std::string>& names) {
  std::string text = "[";
  for (size_t i = 0; i < names.size(); ++i) text += (i ? ", " : "") + (names[i].empty() ? "#" + std::to_string(i) : names[i]);
  return text + "]";
}

// Runs the graph that makes a missing weights file, in this process.
void make_weights(const std::string& graph_path, const std::string& weights) {
  spdlog::warn("{} does not exist yet: making it with {} (once; later runs reuse it)", weights, graph_path);
  Diagnostics diagnostics;
  GraphSpec spec = parse_graph_file(graph_path, diagnostics);
  if (!diagnostics.empty()) throw std::runtime_error(diagnostics.format());
  ResolvedGraph graph = resolve_graph(spec, Registry::global());
  RunOptions options;
  options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  RunResult result = run_graph(graph, options);
  if (result.interrupted) throw std::runtime_error("interrupted while making " + weights);
  if (!std::filesystem::exists(weights))
    throw std::runtime_error(graph_path + " ran but did not write " + weights + " (add a save_weights stage)");
}
}  // namespace

ModelStage::ModelStage(const StageInit& init)
    : ModelStage(init, [depth = static_cast<int>(init.params.get_int("depth"))](int64_t classes) {
        return Network(ResNet(depth, classes).ptr());
      }) {}

ModelStage::ModelStage(const StageInit& init, const Builder& build)
    : classes_(init.params.get_int("classes")), weights_(init.params.get_string("weights")), name_(init.name) {
  // Initial weights from (run seed, stage name): not from whatever else used
  // LibTorch's generator before (a pretraining run, another model).
  torch::manual_seed(mix64(init.run.seed ^ hash_name(init.name)));
  net_ = build(classes_);
  if (net_.is_empty()) throw std::runtime_error("model stage '" + name_ + "': its builder made no network");
  const std::vector<std::string> tasks = init.params.get_string_list("tasks");
  const std::vector<int64_t> task_classes = init.params.get_int_list("task_classes");
  if (tasks.size() != task_classes.size())
    throw std::runtime_error("tasks=[...] and task_classes=[...] differ in length");
  if (!tasks.empty()) {
    // Registered in the network, so that every path that saves, loads,
    // freezes, optimises or averages the network's parameters has them.
    auto holder = std::make_shared<torch::nn::Module>();
    const int64_t width = feature_size();
    for (size_t t = 0; t < tasks.size(); ++t) {
      TaskHead head{tasks[t], task_classes[t], torch::nn::Linear(width, task_classes[t])};
      holder->register_module(tasks[t], head.linear);
      heads_.push_back(std::move(head));
    }
    net_->register_module("heads", holder);
    head_outputs_.resize(heads_.size());
  }
  const std::string pretrain = init.params.get_string("pretrain");
  Job* job = Job::of(init.run.job);
  if (!weights_.empty() && !pretrain.empty() && !std::filesystem::exists(weights_)) {
    // In a job, rank 0 makes the file; the others wait for it (a pretraining
    // run takes far longer than a collective's timeout).
    const std::string made = "made " + weights_;
    if (!job || job->rank() == 0) make_weights(pretrain, weights_);
    if (job && job->rank() == 0) job->announce(made);
    if (job && job->rank() != 0) job->wait_for(made, 7 * 24 * 3600.0);
  }
  if (!weights_.empty()) {
    Metadata metadata;
    std::string note;
    StateDict weights = read_model_weights(weights_, name_, init.params.get_string("weights_entry"), metadata, note);
    if (!note.empty()) spdlog::info("{}: {}", weights_, note);
    load_ = load_state_dict(*net_, weights, /*allow_new_head=*/true, weights_);
    for (const auto& done : load_.notes) spdlog::info("{}: {}", weights_, done);
    // New extra heads (the file is a single-task model's) are said apart from a new main head.
    std::vector<std::string> new_task_heads;
    for (auto it = load_.reinitialised.begin(); it != load_.reinitialised.end();)
      if (it->rfind("heads.", 0) == 0) {
        const std::string task = it->substr(6, it->find('.', 6) - 6);
        if (std::find(new_task_heads.begin(), new_task_heads.end(), task) == new_task_heads.end())
          new_task_heads.push_back(task);
        it = load_.reinitialised.erase(it);
      } else {
        ++it;
      }
    new_task_heads_ = new_task_heads;
    if (!new_task_heads.empty()) {
      // What the file has for each: no head, or one of another size.
      std::string why;
      for (const std::string& task : new_task_heads) {
        int64_t outputs = -1, wanted = 0;
        for (const auto& [key, tensor] : weights)
          if (key == "heads." + task + ".weight" && tensor.dim() >= 1) outputs = tensor.size(0);
        for (const auto& head : heads_)
          if (head.name == task) wanted = head.classes;
        why += (why.empty() ? "" : "; ") +
               (outputs < 0 ? "no head for task '" + task + "'"
                            : "a head of " + std::to_string(outputs) + " outputs for task '" + task + "', and task_classes "
                              "gives " + std::to_string(wanted));
      }
      if (!trained_in_graph(init.stages, name_))
        throw std::runtime_error(weights_ + " has " + why + " (model '" + name_ + "'), and no train stage trains it in "
                                 "this graph: a new head would predict at random");
      spdlog::warn("{}: {}: model '{}' trains a new head", weights_, why, name_);
    }
    read_task_names(metadata, weights_);
    if (!load_.reinitialised.empty()) {
      const int64_t trained = weights.empty() ? 0 : [&] {
        for (const auto& [key, tensor] : weights)
          if (net_->is_head(key) && tensor.dim() >= 1) return tensor.size(0);
        return int64_t{0};
      }();
      // A new head is random: right when a graph starts a new task, never
      // where the model only evaluates or predicts.
      if (!trained_in_graph(init.stages, name_))
        throw std::runtime_error(weights_ + " has a head of " + std::to_string(trained) + " classes but model '" +
                                 name_ + "' has classes=" + std::to_string(classes_) +
                                 "; no train stage trains it in this graph, so a new head would predict at random "
                                 "(set classes=" + std::to_string(trained) + ")");
      spdlog::info("{}: head re-initialised for {} classes ({}; the weights' head has {})", weights_, classes_,
                   load_.reinitialised.front(), trained);
    } else if (auto names = metadata.find("classes"); names != metadata.end()) {
      outputs_.class_names = parse_class_names(names->second, weights_);
      if (static_cast<int64_t>(outputs_.class_names.size()) != classes_)
        throw std::runtime_error(weights_ + ": its metadata names " + std::to_string(outputs_.class_names.size()) +
                                 " classes but the weights have " + std::to_string(classes_));
    }
  }
  const std::string device = init.params.get_string("device");
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  if (cuda && !cuda_available()) throw std::runtime_error("device=cuda but there is " + no_cuda_device_reason());
  const std::string precision = init.params.get_string("precision");
  std::string why;
  bf16_ = choose_precision(precision, cuda, &why);
  spdlog::info("model '{}': {} {} ({})", name_, bf16_.name(), cuda ? "on CUDA" : "on the CPU", why);
  const std::string layout = init.params.get_string("channels_last");
  channels_last_ = layout == "yes" || (layout == "auto" && cuda);
  if (cuda) {
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(init.params.get_int_or("index", init.run.job.local_rank)));
    net_->to(device_);
    at::globalContext().setBenchmarkCuDNN(true);  // fixed input sizes: let cuDNN pick its fastest kernels
  }
  if (channels_last_) {
    // Modules have no memory-format `to`: convert the 4-D weights one by one.
    torch::NoGradGuard no_grad;
    for (auto& p : net_->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
  if (job) {
    // Every rank starts from rank 0's weights (DDP does the same), whatever
    // each initialised or loaded.
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> tensors;
    for (const auto& [key, tensor] : state_dict(*net_)) tensors.push_back(tensor);
    job->broadcast(tensors, 0, "rank 0's initial weights of '" + name_ + "'");
  }
}

torch::Tensor ModelStage::input(const torch::Tensor& images) const {
  torch::Tensor x = images.device() == device_ ? images : images.to(device_, /*non_blocking=*/true);
  return channels_last_ ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

torch::Tensor ModelStage::labels(const torch::Tensor& labels) const {
  // A dataset with more classes than the head: say so, instead of LibTorch's
  // "Target 8 is out of bounds" from inside the loss. (Checked where the
  // labels are still on the host: no device synchronisation.)
  if (labels.device().is_cpu() && labels.numel() > 0) {
    const int64_t top = labels.max().item<int64_t>();
    if (top >= classes_)
      throw std::runtime_error("a sample has label " + std::to_string(top) + " but model '" + name_ + "' has " +
                               std::to_string(classes_) + " classes (set its classes= to the dataset's, or " +
                               "keep fewer classes with a sampler)");
  }
  return labels.device() == device_ ? labels : labels.to(device_, /*non_blocking=*/true);
}

torch::Tensor ModelStage::infer(const std::function<torch::Tensor(NetworkImpl&, const torch::Tensor&)>& run,
                                const torch::Tensor& images) {
  net_->eval();
  torch::NoGradGuard no_grad;
  AutocastScope autocast(bf16_);
  return run(*net_, input(images)).to(torch::kFloat);
}

std::vector<torch::Tensor> ModelStage::infer_all_logits(const torch::Tensor& images) {
  net_->eval();
  torch::NoGradGuard no_grad;
  AutocastScope autocast(bf16_);
  const torch::Tensor features = net_->features(input(images));
  std::vector<torch::Tensor> out{net_->head(features).to(torch::kFloat)};
  for (auto& head : heads_) out.push_back(head.linear(features).to(torch::kFloat));
  return out;
}

int64_t ModelStage::feature_size() const {
  for (const auto& item : net_->named_parameters(true))
    if (item.key().rfind("heads.", 0) != 0 && net_->is_head(item.key()) && item.value().dim() == 2)
      return item.value().size(1);
  throw std::runtime_error("model '" + name_ + "': its head has no Linear layer to tell the width of the features it "
                           "takes");
}

torch::Tensor ModelStage::infer_logits(const torch::Tensor& images) {
  return infer([](NetworkImpl& net, const torch::Tensor& x) { return net.forward(x); }, images);
}

torch::Tensor ModelStage::infer_features(const torch::Tensor& images, const std::string& layer) {
  return infer([&](NetworkImpl& net, const torch::Tensor& x) { return net.features(x, layer); }, images);
}

void ModelStage::report(Report& report) const {
  report.set("parameters", static_cast<double>([&] {
    int64_t n = 0;
    for (const auto& p : net_->parameters()) n += p.numel();
    return n;
  }()));
  report.set("weights_loaded", static_cast<double>(load_.loaded));
  report.set("head_reinitialised", load_.reinitialised.empty() ? 0 : 1);
  if (!heads_.empty()) report.set("task_heads_new", static_cast<double>(new_task_heads_.size()));
  report.set("bf16", bf16_ ? 1 : 0);  // the stage table's `prec` column
}

bool ModelStage::save_state(std::string& out) const {
  out = encode_safetensors(state_dict(*net_), class_metadata());
  return true;
}

void ModelStage::load_state(const std::string& in) {
  const std::string what = "saved state of model '" + name_ + "'";
  Metadata metadata;
  StateDict weights = decode_safetensors(reinterpret_cast<const uint8_t*>(in.data()), in.size(), what, &metadata);
  load_state_dict(*net_, weights, /*allow_new_head=*/false, what);
  {
    std::lock_guard<std::mutex> lock(names_mutex_);
    auto names = metadata.find("classes");
    outputs_.class_names = names == metadata.end() ? std::vector<std::string>{} : parse_class_names(names->second, what);
    outputs_.mappings.clear();
    for (auto& head : head_outputs_) head = OutputNames();
  }
  read_task_names(metadata, what);
}

void ModelStage::read_task_names(const Metadata& metadata, const std::string& source) {
  auto it = metadata.find("tasks");
  if (it == metadata.end() || heads_.empty()) return;
  nlohmann::json tasks;
  try {
    tasks = nlohmann::json::parse(it->second);
    if (!tasks.is_object()) throw std::runtime_error("not an object");
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": its metadata 'tasks' is not a JSON object of class-name lists: " + e.what());
  }
  std::lock_guard<std::mutex> lock(names_mutex_);
  for (size_t h = 0; h < heads_.size(); ++h) {
    if (!tasks.contains(heads_[h].name)) continue;
    // A head trained afresh here keeps no names from a file whose head was another size.
    if (std::find(new_task_heads_.begin(), new_task_heads_.end(), heads_[h].name) != new_task_heads_.end()) continue;
    auto names = parse_class_names(tasks[heads_[h].name].dump(), source);
    if (static_cast<int64_t>(names.size()) != heads_[h].classes)
      throw std::runtime_error(source + ": its metadata names " + std::to_string(names.size()) + " classes for task '" +
                               heads_[h].name + "' but the head has " + std::to_string(heads_[h].classes));
    head_outputs_[h].class_names = std::move(names);
    head_outputs_[h].mappings.clear();
  }
}

std::vector<std::string> ModelStage::class_names() const {
  std::lock_guard<std::mutex> lock(names_mutex_);
  return outputs_.class_names;
}

std::vector<std::string> ModelStage::task_class_names(size_t head) const {
  std::lock_guard<std::mutex> lock(names_mutex_);
  return head_outputs_.at(head).class_names;
}

Metadata ModelStage::class_metadata() const {
  std::lock_guard<std::mutex> lock(names_mutex_);
  Metadata out;
  if (!outputs_.class_names.empty()) out["classes"] = nlohmann::json(outputs_.class_names).dump();
  nlohmann::json tasks = nlohmann::json::object();
  for (size_t h = 0; h < heads_.size(); ++h)
    if (!head_outputs_[h].class_names.empty()) tasks[heads_[h].name] = head_outputs_[h].class_names;
  if (!tasks.empty()) out["tasks"] = tasks.dump();
  return out;
}

std::string ModelStage::output_name(int64_t c, const Batch& batch) const {
  {
    std::lock_guard<std::mutex> lock(names_mutex_);
    const auto& names = outputs_.class_names;
    if (c >= 0 && c < static_cast<int64_t>(names.size()) && !names[c].empty()) return names[c];
    if (!names.empty()) return std::to_string(c);
  }
  if (batch.dataset && c >= 0 && c < static_cast<int64_t>(batch.dataset->class_names.size()))
    return batch.dataset->class_names[c];
  return std::to_string(c);
}

std::string ModelStage::task_output_name(size_t head, int64_t c, const Batch& batch) const {
  {
    std::lock_guard<std::mutex> lock(names_mutex_);
    const auto& names = head_outputs_.at(head).class_names;
    if (c >= 0 && c < static_cast<int64_t>(names.size()) && !names[c].empty()) return names[c];
    if (!names.empty()) return std::to_string(c);
  }
  if (batch.dataset)
    for (const auto& task : batch.dataset->tasks)
      if (task.name == heads_.at(head).name && c >= 0 && c < static_cast<int64_t>(task.class_names.size()))
        return task.class_names[c];
  return std::to_string(c);
}

const std::vector<int64_t>& ModelStage::mapping(OutputNames& names, int64_t classes, const std::string& head,
                                                const std::vector<std::string>& source, const std::string& dataset,
                                                bool training) {
  std::lock_guard<std::mutex> lock(names_mutex_);
  std::vector<std::string>& class_names = names.class_names;
  auto known = names.mappings.find(source);
  if (known != names.mappings.end()) return known->second;
  auto unknown_of = [&] {
    std::vector<std::string> unknown;
    for (const auto& name : source)
      if (std::find(class_names.begin(), class_names.end(), name) == class_names.end()) unknown.push_back(name);
    return unknown;
  };
  if (training && static_cast<int64_t>(source.size()) <= classes && (class_names.empty() || !unknown_of().empty())) {
    // The training source names the outputs (a larger head keeps the rest unnamed).
    if (!class_names.empty())
      spdlog::warn("{}: trains on the classes {} of {}; its weights were for {}", head, names_text(source), dataset,
                   names_text(class_names));
    class_names = source;
    class_names.resize(static_cast<size_t>(classes));
    names.mappings.clear();
  }
  std::vector<int64_t> map(source.size());
  if (class_names.empty()) {
    // No names to match: positions, which only agree when the counts do
    // (a training source with more classes than outputs: labels() names the
    // first sample out of range).
    if (!training && static_cast<int64_t>(source.size()) != classes)
      throw std::runtime_error(dataset + " has " + std::to_string(source.size()) + " classes " + names_text(source) +
                               " but " + head + " has " + std::to_string(classes) +
                               " outputs and no class names to match them by (its weights carry none: train it in " +
                               "this graph, or load weights flowrun saved)");
    for (size_t i = 0; i < map.size(); ++i) map[i] = static_cast<int64_t>(i);
  } else {
    if (const auto unknown = unknown_of(); !unknown.empty())
      throw std::runtime_error(dataset + " has the class(es) " + names_text(unknown) + " that " + head +
                               " does not know: the source's classes are " + names_text(source) + ", the model's " +
                               names_text(class_names));
    for (size_t i = 0; i < map.size(); ++i)
      map[i] = std::find(class_names.begin(), class_names.end(), source[i]) - class_names.begin();
  }
  return names.mappings.emplace(source, std::move(map)).first->second;
}

torch::Tensor ModelStage::map_labels(const torch::Tensor& labels, const std::vector<int64_t>& map) const {
  torch::Tensor source = labels.to(torch::kCPU, torch::kLong).contiguous();
  torch::Tensor out = torch::empty_like(source);
  const int64_t* in = source.data_ptr<int64_t>();
  int64_t* to = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < source.numel(); ++i) {
    if (in[i] < 0 || in[i] >= static_cast<int64_t>(map.size()))
      to[i] = in[i];  // unlabelled (-1), or out of range: labels() says so
    else
      to[i] = map[static_cast<size_t>(in[i])];
  }
  return out;
}

torch::Tensor ModelStage::labels(const Batch& batch, bool training) {
  if (!batch.dataset || batch.dataset->class_names.empty() || !batch.labels.defined() || batch.labels.numel() == 0)
    return labels(batch.labels);  // a source without class names: its labels are the outputs
  const std::vector<int64_t>& map = mapping(outputs_, classes_, "model '" + name_ + "'", batch.dataset->class_names,
                                            batch.dataset->name, training);
  return labels(map_labels(batch.labels, map));
}

bool ModelStage::has_task(const Batch& batch, const std::string& task) { return batch.task_column(task) >= 0; }

torch::Tensor ModelStage::task_labels(const Batch& batch, size_t h, bool training) {
  const TaskHead& head = heads_.at(h);
  const std::string what = "head '" + head.name + "' of model '" + name_ + "'";
  const std::vector<TaskClasses> none;
  const std::vector<TaskClasses>& tasks = batch.dataset ? batch.dataset->tasks : none;
  const int64_t column = batch.task_column(head.name);
  if (column < 0) {
    std::string have;
    for (const auto& t : tasks) have += (have.empty() ? "" : ", ") + t.name;
    throw std::runtime_error((batch.dataset ? batch.dataset->name : std::string("the batch")) + " gives no labels for " +
                             what + " (its samples are labelled for " +
                             (have.empty() ? std::string("no extra task") : "the task(s) [" + have + "]") +
                             "): label them with an imagelist's tasks=[" + head.name + "] column or a class_groups "
                             "task=" + head.name + " sampler op");
  }
  const std::vector<std::string>& source = tasks[static_cast<size_t>(column)].class_names;
  if (static_cast<int64_t>(source.size()) > head.classes)
    throw std::runtime_error(batch.dataset->name + " labels task '" + head.name + "' with " +
                             std::to_string(source.size()) + " classes " + names_text(source) + " but " + what +
                             " has " + std::to_string(head.classes) + " outputs (set its task_classes)");
  if (training && static_cast<int64_t>(source.size()) < head.classes) {
    std::lock_guard<std::mutex> lock(names_mutex_);
    if (warned_small_tasks_.insert(head.name).second)
      spdlog::warn("{}: {} has {} outputs but {} labels its task with {} classes {}: the other outputs stay unnamed",
                   name_, what, head.classes, batch.dataset->name, source.size(), names_text(source));
  }
  const std::vector<int64_t>& map = mapping(head_outputs_[h], head.classes, what, source, batch.dataset->name, training);
  torch::Tensor out = map_labels(batch.task_labels.select(1, column), map);
  return out.device() == device_ ? out : out.to(device_, /*non_blocking=*/true);
}

std::string libtorch_error_text(const std::exception& e) {
  // c10::Error::what() carries LibTorch's C++ stack trace: its first line only.
  if (const auto* error = dynamic_cast<const c10::Error*>(&e)) {
    std::string text = error->what_without_backtrace();
    return text.substr(0, text.find('\n'));
  }
  return "";
}

namespace {
// Every stage's LibTorch error reaches the user as one line (the engine
// adds the stage, and where in the run an item's processing failed).
[[maybe_unused]] const bool error_text_hooked = (set_error_text_hook(&libtorch_error_text), true);
}  // namespace

ModelStage& find_model(const StageDirectory& stages, const std::string& name) {
  return stages.require<ModelStage>(name, "model");
}

FLOWRUN_REGISTER_STAGE(ModelStage);

}  // namespace flowrun::stages

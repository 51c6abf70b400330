#include "stages/model/weights.h"

#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <zip.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <variant>

#include "pipeline/atomic_file.h"

namespace flowrun::stages {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw std::runtime_error(path + ": " + why);
}

// ---- The restricted unpickler ------------------------------------------

struct PValue;
using PRef = std::shared_ptr<PValue>;

// The few kinds of value a state dict's pickle builds. A checkpoint dict
// holds more (epochs, optimizer states, hyper-parameters of any class): what
// is not a tensor or a container becomes an Object, never constructed or
// called, only named (by its global) in errors.
struct PValue {
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tuple, List, Dict, Global, Object, Storage, Tensor, Mark }
      kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                 // String, Bytes; Global, Object: "module.name"
  std::vector<PRef> items;                       // Tuple, List
  std::vector<std::pair<PRef, PRef>> entries;    // Dict, in insertion order
  at::ScalarType storage_type = at::kFloat;      // Storage
  std::string storage_key;                       // Storage
  int64_t storage_numel = 0;                     // Storage
  // Tensor: a view of a storage, read from the archive only when taken
  // (an optimizer's moments in a checkpoint dict are never read).
  std::shared_ptr<PValue> view_storage;
  int64_t view_offset = 0;
  std::vector<int64_t> view_size, view_stride;
};

PRef make(PValue::Kind kind) {
  auto v = std::make_shared<PValue>();
  v->kind = kind;
  return v;
}

// The globals a state dict may name; anything else is refused.
const std::map<std::string, at::ScalarType>& storage_types() {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  return types;
}
// What the unpickler interprets; any other global becomes an inert Object.
bool tensor_global(const std::string& name) {
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || storage_types().count(name);
}

class Unpickler {
 public:
  Unpickler(const std::string& path, const uint8_t* data, size_t size, caffe2::serialize::PyTorchStreamReader& zip)
      : path_(path), data_(data), size_(size), zip_(zip) {}

  PRef run() {
    while (true) {
      uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                       // PROTO
        case 0x95: bytes(8); break;                     // FRAME
        case '.': return pop();                         // STOP
        case '(': push(make(PValue::Kind::Mark)); break;  // MARK
        case 'N': push(make(PValue::Kind::None)); break;
        case 0x88: push(boolean(true)); break;          // NEWTRUE
        case 0x89: push(boolean(false)); break;         // NEWFALSE
        case 'J': push(integer(static_cast<int32_t>(le(4)))); break;  // BININT
        case 'K': push(integer(byte())); break;         // BININT1
        case 'M': push(integer(static_cast<int64_t>(le(2)))); break;  // BININT2
        case 0x8a: {                                    // LONG1
          size_t n = byte();
          if (n > 8) {  // beyond int64: kept as an Object (no tensor metadata is that large)
            bytes(n);
            push(object("int"));
            break;
          }
          uint64_t v = le(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
          push(integer(static_cast<int64_t>(v)));
          break;
        }
        case 'G': {                                     // BINFLOAT (big-endian double)
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | byte();
          auto v = make(PValue::Kind::Float);
          std::memcpy(&v->f, &bits, 8);
          push(v);
          break;
        }
        case 0x8b: {                                    // LONG4: a big integer, kept as an Object
          uint64_t n = le(4);
          if (n > size_) error("integer longer than the file");
          bytes(static_cast<size_t>(n));
          push(object("int"));
          break;
        }
        case 'X': push(string(le(4))); break;           // BINUNICODE
        case 0x8d: push(string(le(8))); break;          // BINUNICODE8
        case 'B': push(bytes_value(le(4))); break;      // BINBYTES
        case 'C': push(bytes_value(byte())); break;     // SHORT_BINBYTES
        case 0x8e: push(bytes_value(le(8))); break;     // BINBYTES8
        case 0x96: push(bytes_value(le(8))); break;     // BYTEARRAY8
        case 0x8f: push(object("builtins.set")); break;  // EMPTY_SET
        case 0x90: pop_to_mark(); break;                // ADDITEMS (to a set: not kept)
        case 0x91: pop_to_mark(); push(object("builtins.frozenset")); break;  // FROZENSET
        case '0': pop_any(); break;                     // POP
        case '1': pop_to_mark(); break;                 // POP_MARK
        case '2': push(top()); break;                   // DUP
        case 0x8c: push(string(byte())); break;         // SHORT_BINUNICODE
        case 'T': push(string(le(4))); break;           // BINSTRING
        case 'U': push(string(byte())); break;          // SHORT_BINSTRING
        case ')': push(make(PValue::Kind::Tuple)); break;  // EMPTY_TUPLE
        case 0x85: tuple_of(1); break;                  // TUPLE1
        case 0x86: tuple_of(2); break;                  // TUPLE2
        case 0x87: tuple_of(3); break;                  // TUPLE3
        case 't': {                                     // TUPLE
          auto t = make(PValue::Kind::Tuple);
          t->items = pop_to_mark();
          push(t);
          break;
        }
        case ']': push(make(PValue::Kind::List)); break;  // EMPTY_LIST
        case '}': push(make(PValue::Kind::Dict)); break;  // EMPTY_DICT
        case 'a': {                                     // APPEND
          PRef v = pop();
          expect(top(), PValue::Kind::List, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {                                     // APPENDS
          auto values = pop_to_mark();
          auto& list = expect(top(), PValue::Kind::List, "APPENDS")->items;
          list.insert(list.end(), values.begin(), values.end());
          break;
        }
        case 's': {                                     // SETITEM
          PRef value = pop(), key = pop();
          expect(top(), PValue::Kind::Dict, "SETITEM")->entries.emplace_back(key, value);
          break;
        }
        case 'u': {                                     // SETITEMS
          auto values = pop_to_mark();
          if (values.size() % 2) error("odd SETITEMS");
          auto& dict = expect(top(), PValue::Kind::Dict, "SETITEMS")->entries;
          for (size_t k = 0; k < values.size(); k += 2) dict.emplace_back(values[k], values[k + 1]);
          break;
        }
        case 'q': memo_put(byte()); break;              // BINPUT
        case 'r': memo_put(le(4)); break;               // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;       // MEMOIZE
        case 'h': push(memo_get(byte())); break;        // BINGET
        case 'j': push(memo_get(le(4))); break;         // LONG_BINGET
        case 'c': {                                     // GLOBAL "module\nname\n"
          std::string module = line(), name = line();
          push(global(module + "." + name));
          break;
        }
        case 0x93: {                                    // STACK_GLOBAL
          PRef name = pop(), module = pop();
          if (name->kind != PValue::Kind::String || module->kind != PValue::Kind::String) error("bad STACK_GLOBAL");
          push(global(module->s + "." + name->s));
          break;
        }
        case 'Q': push(persistent(pop())); break;       // BINPERSID
        case 'R': {                                     // REDUCE
          PRef args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 0x81: {                                    // NEWOBJ
          PRef args = pop(), cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 0x92: {                                    // NEWOBJ_EX
          PRef kwargs = pop(), args = pop(), cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': pop(); break;                         // BUILD: object state (an OrderedDict's _metadata): ignored
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          error(std::string("unsupported pickle opcode ") + hex + " (not a plain state dict)");
        }
      }
    }
  }

 private:
  [[noreturn]] void error(const std::string& why) {
    fail(path_, "data.pkl at byte " + std::to_string(pos_) + ": " + why);
  }
  uint8_t byte() {
    if (pos_ >= size_) error("unexpected end of pickle");
    return data_[pos_++];
  }
  const uint8_t* bytes(size_t n) {
    if (n > size_ - pos_) error("unexpected end of pickle");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t le(size_t n) {
    const uint8_t* p = bytes(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * k);
    return v;
  }
  std::string line() {
    std::string text;
    while (true) {
      char c = static_cast<char>(byte());
      if (c == '\n') return text;
      if (text.size() > 256) error("over-long global name");
      text += c;
    }
  }
  PRef string(uint64_t n, PValue::Kind kind = PValue::Kind::String) {
    if (n > size_) error("string longer than the file");
    const uint8_t* p = bytes(static_cast<size_t>(n));
    auto v = make(kind);
    v->s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    return v;
  }
  PRef bytes_value(uint64_t n) { return string(n, PValue::Kind::Bytes); }
  static PRef object(const std::string& global) {
    auto v = make(PValue::Kind::Object);
    v->s = global;
    return v;
  }
  // A global the pickle names. Nothing is ever imported or run: a state
  // dict's globals are interpreted, any other only named.
  PRef global(const std::string& full) {
    auto g = make(PValue::Kind::Global);
    g->s = full;
    return g;
  }
  static PRef boolean(bool b) {
    auto v = make(PValue::Kind::Bool);
    v->b = b;
    return v;
  }
  static PRef integer(int64_t i) {
    auto v = make(PValue::Kind::Int);
    v->i = i;
    return v;
  }
  void push(PRef v) {
    if (stack_.size() > 1'000'000) error("pickle stack too deep");
    stack_.push_back(std::move(v));
  }
  PRef pop() {
    if (stack_.empty()) error("pickle stack underflow");
    PRef v = stack_.back();
    stack_.pop_back();
    if (v->kind == PValue::Kind::Mark) error("unexpected MARK");
    return v;
  }
  void pop_any() {
    if (stack_.empty()) error("pickle stack underflow");
    stack_.pop_back();
  }
  PRef top() {
    if (stack_.empty()) error("pickle stack underflow");
    return stack_.back();
  }
  std::vector<PRef> pop_to_mark() {
    std::vector<PRef> values;
    while (true) {
      if (stack_.empty()) error("MARK not found");
      PRef v = stack_.back();
      stack_.pop_back();
      if (v->kind == PValue::Kind::Mark) break;
      values.push_back(v);
    }
    return {values.rbegin(), values.rend()};
  }
  void tuple_of(size_t n) {
    auto t = make(PValue::Kind::Tuple);
    t->items.resize(n);
    for (size_t k = n; k > 0; --k) t->items[k - 1] = pop();
    push(t);
  }
  // An Object (a dict or list subclass: Lightning's AttributeDict, ...)
  // takes items as its base class would; they are kept but never used.
  PRef expect(PRef v, PValue::Kind kind, const char* op) {
    if (v->kind != kind && v->kind != PValue::Kind::Object) error(std::string(op) + " on the wrong kind of value");
    return v;
  }
  void memo_put(uint64_t index) {
    if (index > 10'000'000) error("memo index too large");
    if (memo_.size() <= index) memo_.resize(index + 1);
    memo_[index] = top();
  }
  PRef memo_get(uint64_t index) {
    if (index >= memo_.size() || !memo_[index]) error("memo entry " + std::to_string(index) + " missing");
    return memo_[index];
  }

  // ('storage', torch.FloatStorage, key, location, numel)
  PRef persistent(PRef id) {
    if (id->kind != PValue::Kind::Tuple || id->items.size() != 5 || id->items[0]->kind != PValue::Kind::String ||
        id->items[0]->s != "storage" || id->items[1]->kind != PValue::Kind::Global ||
        id->items[2]->kind != PValue::Kind::String || id->items[4]->kind != PValue::Kind::Int)
      error("unsupported persistent id (not a tensor storage)");
    auto type = storage_types().find(id->items[1]->s);
    if (type == storage_types().end()) error("unknown storage type '" + id->items[1]->s + "'");
    if (id->items[2]->s.empty() || id->items[2]->s.find('/') != std::string::npos)
      error("bad storage key '" + id->items[2]->s + "'");
    auto v = make(PValue::Kind::Storage);
    v->storage_type = type->second;
    v->storage_key = id->items[2]->s;
    v->storage_numel = id->items[4]->i;
    return v;
  }

  static std::vector<int64_t> ints(const PRef& t, const char* what, Unpickler& self) {
    if (t->kind != PValue::Kind::Tuple) self.error(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& item : t->items) {
      if (item->kind != PValue::Kind::Int || item->i < 0) self.error(std::string(what) + " holds a bad value");
      out.push_back(item->i);
    }
    return out;
  }

  PRef reduce(const PRef& callable, const PRef& args) {
    if (callable->kind == PValue::Kind::Object) return object(callable->s);  // an object's method or class: inert
    if (callable->kind != PValue::Kind::Global || args->kind != PValue::Kind::Tuple) error("bad REDUCE");
    const std::string& name = callable->s;
    if (!tensor_global(name)) return object(name);  // never called: an inert value naming it
    if (name == "collections.OrderedDict") return make(PValue::Kind::Dict);
    if (name == "torch._utils._rebuild_parameter") {  // (tensor, requires_grad, backward_hooks)
      if (args->items.empty() || args->items[0]->kind != PValue::Kind::Tensor) error("bad _rebuild_parameter");
      return args->items[0];
    }
    if (name == "torch._utils._rebuild_tensor_v2") {  // (storage, offset, size, stride, requires_grad, hooks[, metadata])
      if (args->items.size() < 4 || args->items[0]->kind != PValue::Kind::Storage ||
          args->items[1]->kind != PValue::Kind::Int)
        error("bad _rebuild_tensor_v2 arguments");
      return tensor(args->items[0], args->items[1]->i, ints(args->items[2], "size", *this),
                    ints(args->items[3], "stride", *this));
    }
    error("cannot call '" + name + "'");
  }

  PRef tensor(const PRef& storage, int64_t offset, const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    if (size.size() != stride.size()) error("size and stride differ in length");
    if (storage->storage_numel < 0) error("storage '" + storage->storage_key + "' has a negative size");
    // Every element the view reaches must lie inside the storage.
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] == 0) empty = true;
      if (size[d] > 0 && stride[d] > 0 && (size[d] - 1) > (INT64_MAX / 4) / stride[d]) error("absurd tensor shape");
      if (size[d] > 0) last += (size[d] - 1) * stride[d];
      if (last > INT64_MAX / 4) error("absurd tensor shape");
    }
    if (!empty && (offset < 0 || last >= storage->storage_numel))
      error("tensor view reaches past its storage '" + storage->storage_key + "'");
    auto v = make(PValue::Kind::Tensor);
    v->view_storage = storage;
    v->view_offset = offset;
    v->view_size = size;
    v->view_stride = stride;
    return v;
  }

 public:
  // A tensor the pickle described, read from its storage's record now.
  at::Tensor materialise(const PValue& v) {
    const PValue& storage = *v.view_storage;
    auto cached = storages_.find(storage.storage_key);
    at::Tensor flat;
    if (cached != storages_.end()) {
      flat = cached->second;
    } else {
      std::string record = "data/" + storage.storage_key;
      if (storage.storage_key.find('/') != std::string::npos || !zip_.hasRecord(record))
        error("tensor data '" + record + "' is missing");
      const size_t item = at::elementSize(storage.storage_type);
      size_t record_size = 0;
      at::DataPtr data;
      std::tie(data, record_size) = zip_.getRecord(record);
      if (static_cast<uint64_t>(storage.storage_numel) * item > record_size)
        error("storage '" + storage.storage_key + "' claims " + std::to_string(storage.storage_numel) +
              " elements but its record holds " + std::to_string(record_size) + " bytes");
      flat = at::empty({storage.storage_numel}, at::TensorOptions().dtype(storage.storage_type));
      if (storage.storage_numel) std::memcpy(flat.data_ptr(), data.get(), storage.storage_numel * item);
      storages_[storage.storage_key] = flat;
    }
    bool empty = false;
    for (int64_t d : v.view_size) empty = empty || d == 0;
    return empty ? at::empty(v.view_size, flat.options())
                 : flat.as_strided(v.view_size, v.view_stride, v.view_offset).clone();
  }

 private:

  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::vector<PRef> stack_;
  std::vector<PRef> memo_;
  std::map<std::string, at::Tensor> storages_;
};

std::vector<uint8_t> read_all(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, "cannot open weight file");
  std::streamoff size = in.tellg();
  if (size < 0 || static_cast<size_t>(size) > limit) fail(path, "unreadable or too large");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size && !in.read(reinterpret_cast<char*>(bytes.data()), size)) fail(path, "read failed");
  return bytes;
}

// LibTorch's zip reader allocates the size a record declares before reading
// it: a 300-byte file declaring a 4 GB record would get 4 GB (found by
// fuzzing). torch.save stores records uncompressed, so no record of a real
// one is larger than the file; libzip reads the sizes without extracting.
void check_record_sizes(const std::string& path) {
  int code = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> archive(zip_open(path.c_str(), ZIP_RDONLY, &code), &zip_discard);
  if (!archive) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    fail(path, "not a readable torch.save zip archive (" + why + ")");
  }
  std::error_code ec;
  const uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read its size: " + ec.message());
  const zip_int64_t records = zip_get_num_entries(archive.get(), 0);
  for (zip_int64_t i = 0; i < records; ++i) {
    zip_stat_t record;
    zip_stat_init(&record);
    if (zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &record) != 0)
      fail(path, "corrupt torch.save archive (record " + std::to_string(i) + ": " +
                     zip_strerror(archive.get()) + ")");
    if ((record.valid & ZIP_STAT_SIZE) && record.size > file_size)
      fail(path, "corrupt torch.save archive (record '" + std::string(record.name ? record.name : "?") +
                     "' declares " + std::to_string(record.size) + " bytes, more than the whole file's " +
                     std::to_string(file_size) + ")");
  }
}

}  // namespace

namespace {

std::string describe(const PValue& v) {
  switch (v.kind) {
    case PValue::Kind::Tensor: return "a tensor";
    case PValue::Kind::Dict: return "a dict";
    case PValue::Kind::List: return "a list";
    case PValue::Kind::Tuple: return "a tuple";
    case PValue::Kind::Int: return "an int";
    case PValue::Kind::Float: return "a float";
    case PValue::Kind::String: return "a string";
    case PValue::Kind::Bool: return "a bool";
    case PValue::Kind::None: return "None";
    case PValue::Kind::Object: case PValue::Kind::Global: return "an object of " + v.s;
    default: return "another value";
  }
}

bool all_tensors(const PValue& dict) {
  for (const auto& [key, value] : dict.entries)
    if (key->kind != PValue::Kind::String || value->kind != PValue::Kind::Tensor) return false;
  return true;
}

const PValue* entry(const PValue& dict, const std::string& name) {
  for (const auto& [key, value] : dict.entries)
    if (key->kind == PValue::Kind::String && key->s == name) return value.get();
  return nullptr;
}

std::string entry_list(const PValue& dict) {
  std::string text = "[";
  size_t n = 0;
  for (const auto& [key, value] : dict.entries) {
    if (n++) text += ", ";
    if (n > 12) {
      text += "... " + std::to_string(dict.entries.size() - 12) + " more";
      break;
    }
    text += (key->kind == PValue::Kind::String ? "'" + key->s + "'" : "(" + describe(*key) + ")");
    if (value->kind != PValue::Kind::Dict && value->kind != PValue::Kind::Tensor) text += ": " + describe(*value);
  }
  return text + "]";
}

}  // namespace

const std::vector<std::string>& checkpoint_entries() {
  // timm's load_state_dict(use_ema=True): the EMA weights when kept, else the model's.
  static const std::vector<std::string> entries = {"state_dict_ema", "model_ema", "state_dict", "model"};
  return entries;
}

StateDict read_torch_state_dict(const std::string& path, const std::string& wanted, std::string* note) {
  check_record_sizes(path);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::exception& e) {
    std::string why = e.what();
    fail(path, "not a readable torch.save zip archive (" + why.substr(0, why.find('\n')) + ")");
  }
  try {
    if (!zip->hasRecord("data.pkl")) fail(path, "no data.pkl in the archive (not a torch.save file)");
    at::DataPtr pickle;
    size_t size = 0;
    std::tie(pickle, size) = zip->getRecord("data.pkl");
    Unpickler unpickler(path, static_cast<const uint8_t*>(pickle.get()), size, *zip);
    PRef root = unpickler.run();
    if (root->kind != PValue::Kind::Dict)
      fail(path, "holds " + describe(*root) + ", not a state dict (a dict of tensors) or a checkpoint dict");
    // A state dict, or a checkpoint dict holding one (as timm, Lightning and
    // the ImageNet example write them): take the weights, read nothing else.
    const PValue* weights = root.get();
    const bool plain = all_tensors(*root) && !root->entries.empty();
    if (wanted != "auto" || !plain) {
      std::string taken;
      if (wanted != "auto") {
        weights = entry(*root, wanted);
        if (!weights)
          fail(path, plain ? "weights_entry='" + wanted + "', but the file is a plain state dict (use weights_entry=auto)"
                           : "weights_entry='" + wanted + "', but the checkpoint dict has no such entry: its entries are " +
                                 entry_list(*root));
        taken = wanted;
      } else {
        weights = nullptr;
        for (const auto& name : checkpoint_entries())
          if (const PValue* e = entry(*root, name); e && e->kind == PValue::Kind::Dict) {
            weights = e;
            taken = name;
            break;
          }
        if (!weights)
          fail(path, "a checkpoint dict with entries " + entry_list(*root) +
                         ": none of 'state_dict_ema', 'model_ema', 'state_dict', 'model' holds the weights (nothing "
                         "in the file is run)");
      }
      if (weights->kind != PValue::Kind::Dict)
        fail(path, "the checkpoint entry '" + taken + "' holds " + describe(*weights) + ", not a state dict");
      if (note) {
        *note = "took the weights under '" + taken + "' of a checkpoint dict with entries " + entry_list(*root);
        if (wanted == "auto") {
          std::string others;
          for (const auto& name : checkpoint_entries())
            if (name != taken && entry(*root, name)) others += (others.empty() ? "'" : ", '") + name + "'";
          if (!others.empty()) *note += " (also holds " + others + ": choose with weights_entry=)";
        }
      }
    }
    StateDict out;
    for (const auto& [key, value] : weights->entries) {
      if (key->kind != PValue::Kind::String) fail(path, "a state dict key is " + describe(*key) + ", not a string");
      if (value->kind != PValue::Kind::Tensor)
        fail(path, "'" + key->s + "' is " + describe(*value) + ", not a tensor (nothing in the file is run)");
      out.emplace_back(key->s, unpickler.materialise(*value));
    }
    return out;
  } catch (const c10::Error& e) {
    // LibTorch's zip reader refusing a damaged record (found by fuzzing).
    std::string why = e.what_without_backtrace();
    fail(path, "corrupt torch.save archive (" + why.substr(0, why.find('\n')) + ")");
  }
}

StateDict read_torch_state_dict(const std::string& path) { return read_torch_state_dict(path, "auto", nullptr); }

namespace {
const std::map<std::string, at::ScalarType>& safetensors_types() {
  static const std::map<std::string, at::ScalarType> types = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool}};
  return types;
}
}  // namespace

StateDict decode_safetensors(const uint8_t* bytes, size_t size, const std::string& path, Metadata* metadata) {
  if (size < 8) fail(path, "too short for safetensors");
  uint64_t header_size = 0;
  for (int k = 0; k < 8; ++k) header_size |= static_cast<uint64_t>(bytes[k]) << (8 * k);
  if (header_size > size - 8 || header_size > (100u << 20)) fail(path, "safetensors header size is out of range");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_size);
  } catch (const std::exception& e) {
    fail(path, std::string("safetensors header is not JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "safetensors header is not an object");
  const uint8_t* data = bytes + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  std::vector<std::pair<uint64_t, std::string>> order;  // by offset: the file's order
  StateDict out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "safetensors __metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(path, "safetensors __metadata__ '" + key + "' is not a string");
        if (metadata) (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    try {
      if (!entry.is_object()) fail(path, "'" + name + "' has a malformed header entry");
      auto type = safetensors_types().find(entry.at("dtype").get<std::string>());
      if (type == safetensors_types().end()) fail(path, "'" + name + "' has an unsupported dtype");
      std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
      auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > data_size)
        fail(path, "'" + name + "' has data offsets outside the file");
      uint64_t numel = 1;
      for (int64_t d : shape) {
        if (d < 0 || (d > 0 && numel > (uint64_t{1} << 50) / static_cast<uint64_t>(d))) fail(path, "'" + name + "' has an absurd shape");
        numel *= static_cast<uint64_t>(d);
      }
      if (numel * at::elementSize(type->second) != offsets[1] - offsets[0])
        fail(path, "'" + name + "' shape does not match its byte size");
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type->second));
      if (numel) std::memcpy(t.data_ptr(), data + offsets[0], offsets[1] - offsets[0]);
      order.emplace_back(offsets[0], name);
      out.emplace_back(name, t);
    } catch (const nlohmann::json::exception& e) {
      fail(path, "'" + name + "' has a malformed header entry: " + e.what());
    }
  }
  std::vector<size_t> index(out.size());
  for (size_t k = 0; k < index.size(); ++k) index[k] = k;
  std::sort(index.begin(), index.end(), [&](size_t a, size_t b) { return order[a] < order[b]; });
  StateDict sorted;
  for (size_t k : index) sorted.push_back(out[k]);
  return sorted;
}

StateDict read_safetensors(const std::string& path, Metadata* metadata) {
  std::vector<uint8_t> file = read_all(path, size_t{1} << 40);
  return decode_safetensors(file.data(), file.size(), path, metadata);
}

StateDict read_safetensors(const std::string& path) { return read_safetensors(path, nullptr); }

std::string encode_safetensors(const StateDict& tensors, const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    std::string dtype;
    for (const auto& [code, type] : safetensors_types())
      if (type == t.scalar_type()) dtype = code;
    if (dtype.empty()) throw std::runtime_error("cannot store '" + name + "' as safetensors (unsupported dtype)");
    uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<char>((n >> (8 * k)) & 255));
  out += text;
  for (const auto& t : contiguous) out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

void write_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata) {
  std::string bytes;
  try {
    bytes = encode_safetensors(tensors, metadata);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  write_file_atomically(path, bytes);
}

StateDict read_weights(const std::string& path, Metadata* metadata, const std::string& entry, std::string* note) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error))
    fail(path, "a directory, not a weight file: name the .pth or .safetensors file in it");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open weight file");
  // What the file is, from its first bytes: a zip (torch.save since PyTorch
  // 1.6), safetensors (an 8-byte header length, then the JSON header's '{'),
  // the legacy torch.save pickle, or none of them.
  unsigned char magic[9] = {};
  in.read(reinterpret_cast<char*>(magic), 9);
  const std::streamsize got = in.gcount();
  if (got >= 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0) return read_torch_state_dict(path, entry, note);
  if (got == 9 && magic[8] == '{') return read_safetensors(path, metadata);
  if (got >= 2 && magic[0] == 0x80 && magic[1] >= 2 && magic[1] <= 5)
    fail(path, "a torch.save file in the legacy (pre-1.6, not zip) format: load it in PyTorch and save it again "
               "with torch.save(state_dict, path), or as safetensors");
  fail(path, got ? "not a PyTorch .pth (zip) or safetensors file" : "empty: not a PyTorch .pth (zip) or safetensors file");
}

}  // namespace flowrun::stages

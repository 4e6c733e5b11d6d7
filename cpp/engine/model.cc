#include "model.h"

#include "huge_pages.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <sys/stat.h>

namespace spindle {

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = ffi::GetDataSize(*t);
    size_t rounded = (bytes + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

ffi::Function Global(const char* name) { return ffi::Function::GetGlobalRequired(name); }

ffi::Shape ToShape(const std::vector<int64_t>& v) { return ffi::Shape(v); }

constexpr int kDeviceCPU = 1;
constexpr int kPooledAllocator = 2;

}  // namespace

ffi::Tensor NewCPUTensor(const std::vector<int64_t>& shape, DLDataType dtype) {
  return ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                  DLDevice{kDLCPU, 0});
}

std::unique_ptr<Model> Model::Load(const std::string& dir, Status* status) {
  const std::string config_path = dir + "/spindle-config.json";
  const std::string lib_path = dir + "/model.so";
  const std::string params_path = dir + "/params";
  if (!FileExists(dir)) {
    *status = Status::Invalid("model", "artifact directory '" + dir + "' does not exist");
    return nullptr;
  }
  for (const std::string& p : {config_path, lib_path, params_path + "/tensor-cache.json"}) {
    if (!FileExists(p)) {
      *status = Status::Invalid("model", "the artifact is missing " + p);
      return nullptr;
    }
  }
  std::ifstream in(config_path);
  std::stringstream text;
  text << in.rdbuf();
  std::unique_ptr<Model> m(new Model());
  *status = ParseModelInfo(text.str(), &m->info_);
  if (!status->ok()) {
    status->message = config_path + ": " + status->field + " " + status->message;
    status->field = "model";
    return nullptr;
  }
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(lib_path);
    auto load_exec = lib->GetFunction("vm_load_executable");
    if (!load_exec.has_value()) TVM_FFI_THROW(ValueError) << "model.so is not a Relax VM executable";
    ffi::Module vm = (*load_exec)().cast<ffi::Module>();
    m->lib_ = lib;
    m->vm_ = vm;
    vm->GetFunction("vm_initialization")
        .value()(kDeviceCPU, 0, kPooledAllocator, kDeviceCPU, 0, kPooledAllocator);
    // The tensor cache is process-wide: load, take the weights and clear it as one step.
    static std::mutex cache_mutex;
    std::lock_guard<std::mutex> lock(cache_mutex);
    Global("vm.builtin.tensor_cache.load")(params_path, kDeviceCPU, 0);
    ffi::Array<ffi::String> names;
    for (const std::string& n : m->info_.param_names) names.push_back(n);
    auto params = Global("vm.builtin.param_array_from_cache_by_name")(names).cast<ffi::Array<ffi::Tensor>>();
    Global("vm.builtin.tensor_cache.clear")();
    PackedWeights packed = PackWeights(params);
    params = packed.tensors;
    m->info_.weight_huge_page_bytes = packed.huge_page_bytes;
    for (const ffi::Tensor& t : params) m->info_.weight_bytes += static_cast<int64_t>(ffi::GetDataSize(t));
    m->params_ = params;
    auto get = [&](const char* name) {
      auto f = vm->GetFunction(name);
      if (!f.has_value()) TVM_FFI_THROW(ValueError) << "model.so has no function '" << name << "'";
      return *f;
    };
    m->f_embed_ = get("embed");
    m->f_prefill_ = get("batch_prefill");
    m->f_decode_ = get("batch_decode");
    m->f_create_kv_ = get("create_paged_kv_cache");
    m->f_reshape_ = Global("vm.builtin.reshape");
    m->f_add_seq_ = Global("vm.builtin.kv_state_add_sequence");
    m->f_remove_seq_ = Global("vm.builtin.kv_state_remove_sequence");
    m->f_fork_seq_ = Global("vm.builtin.kv_state_fork_sequence");
    m->f_begin_ = Global("vm.builtin.kv_state_begin_forward");
    m->f_end_ = Global("vm.builtin.kv_state_end_forward");
    m->f_clear_ = Global("vm.builtin.kv_state_clear");
    m->f_avail_pages_ = Global("vm.builtin.attention_kv_cache_get_num_available_pages");
  } catch (const ffi::Error& e) {
    *status = Status::Invalid("model", "cannot load the artifact in '" + dir + "': " + e.kind() + ": " + e.message());
    return nullptr;
  }
  *status = Status::OK();
  return m;
}

Model::~Model() {
  // Drop the KV cache and weights before the VM that allocated them.
  kv_cache_ = nullptr;
  params_ = nullptr;
}

int64_t Model::CreateKVCache(int64_t max_num_sequence, int64_t max_total_sequence_length, int64_t prefill_chunk_size,
                             int64_t page_size) {
  kv_cache_ = f_create_kv_(ffi::Shape({max_num_sequence}), ffi::Shape({max_total_sequence_length}),
                           ffi::Shape({prefill_chunk_size}), ffi::Shape({page_size}), ffi::Shape({0}));
  return AvailablePages();
}

int64_t Model::AvailablePages() const { return f_avail_pages_(kv_cache_).cast<int64_t>(); }
void Model::AddSequence(int64_t seq_id) { f_add_seq_(kv_cache_, seq_id); }
void Model::RemoveSequence(int64_t seq_id) { f_remove_seq_(kv_cache_, seq_id); }
void Model::ForkSequence(int64_t parent, int64_t child) { f_fork_seq_(kv_cache_, parent, child, -1); }
void Model::ClearKV() { f_clear_(kv_cache_); }

ffi::Tensor Model::Embed(const std::vector<int32_t>& tokens) {
  ffi::Tensor ids = NewCPUTensor({static_cast<int64_t>(tokens.size())}, DLDataType{kDLInt, 32, 1});
  std::memcpy(ids.data_ptr(), tokens.data(), tokens.size() * sizeof(int32_t));
  return f_embed_(ids, params_).cast<ffi::Tensor>();
}

void Model::BeginForward(const std::vector<int64_t>& seq_ids, const std::vector<int64_t>& lengths) {
  f_begin_(kv_cache_, ToShape(seq_ids), ToShape(lengths));
}

ffi::Tensor Model::Prefill(const std::vector<int64_t>& seq_ids, const std::vector<int64_t>& lengths,
                           const std::vector<int32_t>& tokens) {
  const int64_t total = static_cast<int64_t>(tokens.size());
  ffi::Tensor embeds = f_reshape_(Embed(tokens), ffi::Shape({1, total, info_.hidden_size})).cast<ffi::Tensor>();
  ffi::Tensor positions = NewCPUTensor({static_cast<int64_t>(lengths.size())}, DLDataType{kDLInt, 32, 1});
  int32_t* pos = static_cast<int32_t*>(positions.data_ptr());
  int64_t acc = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    acc += lengths[i];
    pos[i] = static_cast<int32_t>(acc - 1);
  }
  BeginForward(seq_ids, lengths);
  ffi::Any out;
  try {
    out = f_prefill_(embeds, positions, kv_cache_, params_);
  } catch (...) {
    f_end_(kv_cache_);
    throw;
  }
  f_end_(kv_cache_);
  return out.cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Tensor>();
}

ffi::Tensor Model::Decode(const std::vector<int64_t>& seq_ids, const std::vector<int32_t>& tokens) {
  const int64_t batch = static_cast<int64_t>(tokens.size());
  ffi::Tensor embeds = f_reshape_(Embed(tokens), ffi::Shape({batch, 1, info_.hidden_size})).cast<ffi::Tensor>();
  BeginForward(seq_ids, std::vector<int64_t>(seq_ids.size(), 1));
  ffi::Any out;
  try {
    out = f_decode_(embeds, kv_cache_, params_);
  } catch (...) {
    f_end_(kv_cache_);
    throw;
  }
  f_end_(kv_cache_);
  return out.cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Tensor>();
}

}  // namespace spindle

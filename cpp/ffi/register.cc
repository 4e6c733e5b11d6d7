// The FFI surface of libspindle_engine: two constructors registered as global functions, each
// returning a Module whose functions drive an Engine or a ThreadedEngine, and the weight packing that
// the engine's model loading uses (for Python code that runs a model without the engine). User errors come back
// as values ([code, field, message]); only broken invariants raise.
#include <tvm/ffi/any.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "../engine/engine.h"
#include "../engine/huge_pages.h"
#include "../engine/threaded_engine.h"
#include "convert.h"

namespace spindle {

namespace {

using ffi::Any;
using ffi::Function;
using ffi::Optional;
using ffi::String;

// `seed`, when not None, replaces the config's seed: a caller that adds many requests with one config
// (converted once, e.g. spindle.engine.PreparedConfig) gives each its own seed.
Status MakeRequest(const String& id, const Any& token_ids, const AnyMap& generation, const Any& seed,
                   RequestPtr* out) {
  std::vector<int32_t> tokens;
  Status s = TokenIdsFromAny(token_ids, &tokens);
  if (!s.ok()) return s;
  GenerationConfig g;
  s = GenerationConfigFromMap(generation, &g);
  if (!s.ok()) return s;
  if (seed.type_index() != ffi::TypeIndex::kTVMFFINone) {
    if (seed.type_index() != ffi::TypeIndex::kTVMFFIInt) return Status::Invalid("seed", "expected an integer");
    g.seed = seed.cast<int64_t>();
  }
  *out = std::make_shared<const Request>(std::string(id), std::move(tokens), std::move(g));
  return Status::OK();
}

AnyMap ModelInfoToMap(const ModelInfo& info, const EngineConfig& c) {
  AnyMap m;
  m.Set("vocab_size", info.vocab_size);
  m.Set("context_window_size", info.context_window_size);
  m.Set("weight_bytes", info.weight_bytes);
  m.Set("weight_huge_page_bytes", info.weight_huge_page_bytes);
  m.Set("max_num_sequence", c.max_num_sequence);
  m.Set("max_total_sequence_length", c.max_total_sequence_length);
  m.Set("max_single_sequence_length", c.max_single_sequence_length);
  m.Set("prefill_chunk_size", c.prefill_chunk_size);
  m.Set("admission_window_us", c.admission_window_us);
  m.Set("output_interval_us", c.output_interval_us);
  m.Set("output_budget_per_s", c.output_budget_per_s);
  m.Set("kv_cache_page_size", c.kv_cache_page_size);
  m.Set("mode", String(c.mode));
  return m;
}

// The verbs both engine modules expose the same way; `self` keeps the module alive in the closure.
template <typename E, typename Self>
Optional<Function> SharedVerb(const String& name, const Self& self, E* e) {
  if (name == "add_request") {
    return Function::FromTyped([self, e](String id, Any token_ids, AnyMap generation, Any seed) -> Any {
      RequestPtr request;
      Status s = MakeRequest(id, token_ids, generation, seed, &request);
      if (s.ok()) s = e->AddRequest(std::move(request));
      return StatusToAny(s);
    });
  }
  if (name == "abort_request") {
    return Function::FromTyped([self, e](String id) { e->AbortRequest(std::string(id)); });
  }
  if (name == "reset") return Function::FromTyped([self, e]() { e->Reset(); });
  if (name == "metrics") return Function::FromTyped([self, e]() { return MetricsToMap(e->Metrics()); });
  return std::nullopt;
}

class EngineModule : public ffi::ModuleObj {
 public:
  explicit EngineModule(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}
  const char* kind() const final { return "spindle.Engine"; }

  Optional<Function> GetFunction(const String& name) final {
    auto self = ffi::GetObjectPtr<EngineModule>(this);
    Engine* e = engine_.get();
    if (auto verb = SharedVerb(name, self, e)) return verb;
    if (name == "step") return Function::FromTyped([self, e]() { return OutputsToPacked(e->Step()); });
    if (name == "empty") return Function::FromTyped([self, e]() { return e->Empty(); });
    if (name == "info") {
      return Function::FromTyped([self, e]() { return ModelInfoToMap(e->model_info(), e->config()); });
    }
    return std::nullopt;
  }

 private:
  std::unique_ptr<Engine> engine_;
};

class ThreadedEngineModule : public ffi::ModuleObj {
 public:
  explicit ThreadedEngineModule(std::unique_ptr<ThreadedEngine> engine) : engine_(std::move(engine)) {}
  const char* kind() const final { return "spindle.ThreadedEngine"; }

  Optional<Function> GetFunction(const String& name) final {
    auto self = ffi::GetObjectPtr<ThreadedEngineModule>(this);
    ThreadedEngine* e = engine_.get();
    if (auto verb = SharedVerb(name, self, e)) return verb;
    if (name == "run_background_loop") return Function::FromTyped([self, e]() { e->RunBackgroundLoop(); });
    if (name == "run_background_stream_back_loop") {
      return Function::FromTyped([self, e]() { e->RunBackgroundStreamBackLoop(); });
    }
    if (name == "exit_background_loop") return Function::FromTyped([self, e]() { e->ExitBackgroundLoop(); });
    if (name == "stop_accepting") return Function::FromTyped([self, e]() { e->StopAccepting(); });
    if (name == "wait_idle") return Function::FromTyped([self, e](double timeout_s) { return e->WaitIdle(timeout_s); });
    if (name == "num_active") return Function::FromTyped([self, e]() { return e->NumActive(); });
    if (name == "info") {
      return Function::FromTyped([self, e]() -> Any {
        auto limits = e->limits();
        if (!limits) return Any(nullptr);
        return ModelInfoToMap(limits->model, limits->config);
      });
    }
    if (name == "reload") {
      return Function::FromTyped([self, e](AnyMap config_map) -> Any {
        EngineConfig config;
        Status s = EngineConfigFromMap(config_map, &config);
        if (s.ok()) s = e->Reload(config);
        return StatusToAny(s);
      });
    }
    if (name == "unload") return Function::FromTyped([self, e]() { return StatusToAny(e->Unload()); });
    return std::nullopt;
  }

 private:
  std::unique_ptr<ThreadedEngine> engine_;
};

Any CreateEngine(AnyMap config_map) {
  EngineConfig config;
  Status s = EngineConfigFromMap(config_map, &config);
  if (!s.ok()) return StatusToAny(s);
  std::unique_ptr<Engine> engine = Engine::Create(config, &s);
  if (!s.ok()) return StatusToAny(s);
  return ffi::Module(ffi::make_object<EngineModule>(std::move(engine)));
}

Any CreateThreadedEngine(AnyMap config_map, Function callback) {
  EngineConfig config;
  Status s = EngineConfigFromMap(config_map, &config);
  if (!s.ok()) return StatusToAny(s);
  ThreadedEngine::Callback cb = [callback](std::vector<RequestOutput> outputs) {
    try {
      callback(OutputsToPacked(outputs));
    } catch (const ffi::Error& err) {
      std::fprintf(stderr, "spindle: the output callback raised %s: %s\n", err.kind().c_str(), err.message().c_str());
    }
  };
  std::unique_ptr<ThreadedEngine> engine = ThreadedEngine::Create(config, std::move(cb), &s);
  if (!s.ok()) return StatusToAny(s);
  return ffi::Module(ffi::make_object<ThreadedEngineModule>(std::move(engine)));
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("spindle.engine.create", CreateEngine)
      .def("spindle.engine.create_threaded", CreateThreadedEngine)
      .def("spindle.engine.pack_weights",
           [](ffi::Array<ffi::Tensor> tensors) {
             PackedWeights p = PackWeights(tensors);
             return ffi::Array<Any>{p.tensors, p.block_bytes, p.huge_page_bytes};
           })
      .def("spindle.engine.version", []() { return String("0.1.0"); });
}

}  // namespace spindle

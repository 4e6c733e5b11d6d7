#include "config.h"

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace spindle {

namespace ffi = tvm::ffi;

namespace {

using JsonMap = ffi::Map<ffi::String, ffi::Any>;

Status ReadInt(const JsonMap& obj, const char* key, bool required, int64_t* out) {
  auto it = obj.find(key);
  if (it == obj.end() || (*it).second == nullptr) {
    if (required) return Status::Invalid(key, "missing from spindle-config.json");
    return Status::OK();
  }
  auto v = (*it).second.try_cast<int64_t>();
  if (!v.has_value() || (*it).second.type_index() == ffi::TypeIndex::kTVMFFIBool) {
    return Status::Invalid(key, "expected an integer in spindle-config.json");
  }
  *out = *v;
  return Status::OK();
}

Status ReadString(const JsonMap& obj, const char* key, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Invalid(key, "missing from spindle-config.json");
  auto v = (*it).second.try_cast<ffi::String>();
  if (!v.has_value()) return Status::Invalid(key, "expected a string in spindle-config.json");
  *out = std::string(*v);
  return Status::OK();
}

Status ReadArray(const JsonMap& obj, const char* key, ffi::Array<ffi::Any>* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Invalid(key, "missing from spindle-config.json");
  auto v = (*it).second.try_cast<ffi::Array<ffi::Any>>();
  if (!v.has_value()) return Status::Invalid(key, "expected a list in spindle-config.json");
  *out = *v;
  return Status::OK();
}

#define SPINDLE_RETURN_IF_ERROR(expr) \
  do {                                \
    Status _s = (expr);               \
    if (!_s.ok()) return _s;          \
  } while (0)

}  // namespace

Status ParseModelInfo(const std::string& json_text, ModelInfo* out) {
  ffi::String error;
  ffi::Any value;
  try {
    value = ffi::json::Parse(json_text, &error);
  } catch (const ffi::Error& e) {
    return Status::Invalid("spindle-config.json", std::string("not valid JSON: ") + e.message());
  }
  if (!error.empty()) return Status::Invalid("spindle-config.json", "not valid JSON: " + std::string(error));
  auto obj = value.try_cast<JsonMap>();
  if (!obj.has_value()) return Status::Invalid("spindle-config.json", "expected a JSON object");
  ModelInfo info;
  SPINDLE_RETURN_IF_ERROR(ReadString(*obj, "model_type", &info.model_type));
  SPINDLE_RETURN_IF_ERROR(ReadString(*obj, "dtype", &info.dtype));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "hidden_size", true, &info.hidden_size));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "num_hidden_layers", true, &info.num_hidden_layers));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "num_attention_heads", true, &info.num_attention_heads));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "num_key_value_heads", true, &info.num_key_value_heads));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "head_dim", true, &info.head_dim));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "vocab_size", true, &info.vocab_size));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "context_window_size", true, &info.context_window_size));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "prefill_chunk_size", true, &info.prefill_chunk_size));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "max_batch_size", true, &info.max_batch_size));
  SPINDLE_RETURN_IF_ERROR(ReadInt(*obj, "bos_token_id", false, &info.bos_token_id));
  for (const char* key : {"hidden_size", "vocab_size", "context_window_size", "prefill_chunk_size", "max_batch_size"}) {
    int64_t v = 0;
    ReadInt(*obj, key, true, &v);
    if (v <= 0) return Status::Invalid(key, "must be positive in spindle-config.json");
  }
  ffi::Array<ffi::Any> names;
  SPINDLE_RETURN_IF_ERROR(ReadArray(*obj, "param_names", &names));
  for (const ffi::Any& n : names) {
    auto s = n.try_cast<ffi::String>();
    if (!s.has_value()) return Status::Invalid("param_names", "expected a list of strings");
    info.param_names.emplace_back(*s);
  }
  ffi::Array<ffi::Any> eos;
  SPINDLE_RETURN_IF_ERROR(ReadArray(*obj, "eos_token_ids", &eos));
  for (const ffi::Any& e : eos) {
    auto v = e.try_cast<int64_t>();
    if (!v.has_value() || *v < 0 || *v >= info.vocab_size) {
      return Status::Invalid("eos_token_ids", "expected token ids inside the vocabulary");
    }
    info.eos_token_ids.push_back(static_cast<int32_t>(*v));
  }
  *out = std::move(info);
  return Status::OK();
}

Status ValidateEngineConfig(const EngineConfig& c) {
  if (c.model.empty()) return Status::Invalid("model", "the model artifact directory is required");
  if (c.device != "cpu") {
    return Status::Invalid("device", "unsupported device '" + c.device + "' (this build runs on: cpu)");
  }
  if (c.mode != "local" && c.mode != "interactive" && c.mode != "server") {
    return Status::Invalid("mode", "expected one of local, interactive, server; got '" + c.mode + "'");
  }
  const std::pair<const char*, int64_t> optional_sizes[] = {
      {"max_num_sequence", c.max_num_sequence},
      {"max_total_sequence_length", c.max_total_sequence_length},
      {"max_single_sequence_length", c.max_single_sequence_length},
      {"prefill_chunk_size", c.prefill_chunk_size},
  };
  for (const auto& [name, value] : optional_sizes) {
    if (value != -1 && value <= 0) {
      return Status::Invalid(name, "must be a positive integer (or unset), got " + std::to_string(value));
    }
  }
  if (c.kv_cache_page_size != 16) {
    return Status::Invalid("kv_cache_page_size", "only 16-token pages are supported, got " +
                                                     std::to_string(c.kv_cache_page_size));
  }
  if (c.num_threads < 0) return Status::Invalid("num_threads", "must be >= 0 (0 = every core)");
  if (c.admission_window_us < -1 || c.admission_window_us > 10'000'000) {
    return Status::Invalid("admission_window_us", "must be between 0 and 10000000 microseconds (or unset), got " +
                                                      std::to_string(c.admission_window_us));
  }
  if (c.output_interval_us < 0 || c.output_interval_us > 10'000'000) {
    return Status::Invalid("output_interval_us", "must be between 0 and 10000000 microseconds, got " +
                                                     std::to_string(c.output_interval_us));
  }
  if (c.output_budget_per_s < 0 || c.output_budget_per_s > 1'000'000) {
    return Status::Invalid("output_budget_per_s", "must be between 0 and 1000000 outputs per second, got " +
                                                      std::to_string(c.output_budget_per_s));
  }
  return Status::OK();
}

Status ResolveEngineConfig(const EngineConfig& config, const ModelInfo& model, EngineConfig* out) {
  SPINDLE_RETURN_IF_ERROR(ValidateEngineConfig(config));
  EngineConfig c = config;
  const int64_t ctx = model.context_window_size;
  int64_t preset_seqs = 0, preset_total = 0, preset_window_us = 0;
  if (c.mode == "interactive") {
    preset_seqs = 1;
    preset_total = ctx;
  } else if (c.mode == "local") {
    preset_seqs = std::min<int64_t>(4, model.max_batch_size);
    preset_total = ctx;
  } else {  // server
    preset_seqs = model.max_batch_size;
    preset_total = std::max<int64_t>(ctx, std::min<int64_t>(ctx * preset_seqs, 32768));
    preset_window_us = 8000;
  }
  if (c.admission_window_us == -1) c.admission_window_us = preset_window_us;
  if (c.max_num_sequence == -1) c.max_num_sequence = preset_seqs;
  if (c.max_total_sequence_length == -1) c.max_total_sequence_length = preset_total;
  if (c.max_single_sequence_length == -1) c.max_single_sequence_length = std::min(ctx, c.max_total_sequence_length);
  if (c.prefill_chunk_size == -1) c.prefill_chunk_size = model.prefill_chunk_size;

  if (c.max_num_sequence > model.max_batch_size) {
    return Status::Invalid("max_num_sequence", "the model was compiled for at most " +
                                                   std::to_string(model.max_batch_size) + " sequences, got " +
                                                   std::to_string(c.max_num_sequence));
  }
  if (c.max_single_sequence_length > ctx) {
    return Status::Invalid("max_single_sequence_length", "exceeds the model's context window of " +
                                                             std::to_string(ctx) + " tokens");
  }
  if (c.max_single_sequence_length > c.max_total_sequence_length) {
    return Status::Invalid("max_single_sequence_length",
                           "exceeds max_total_sequence_length (" + std::to_string(c.max_total_sequence_length) + ")");
  }
  if (c.max_single_sequence_length < 2) {
    return Status::Invalid("max_single_sequence_length", "must allow at least one prompt and one generated token");
  }
  if (c.prefill_chunk_size > model.prefill_chunk_size) {
    return Status::Invalid("prefill_chunk_size", "the model was compiled for chunks of at most " +
                                                     std::to_string(model.prefill_chunk_size) + " tokens");
  }
  *out = std::move(c);
  return Status::OK();
}

Status ValidateGenerationConfig(const GenerationConfig& g, const ModelInfo& model, const EngineConfig& engine) {
  auto finite = [](double v) { return std::isfinite(v); };
  if (g.n < 1 || g.n > kMaxN) return Status::Invalid("n", "must be between 1 and " + std::to_string(kMaxN));
  int64_t seqs_needed = g.n == 1 ? 1 : g.n + 1;
  if (seqs_needed > engine.max_num_sequence) {
    return Status::Invalid("n", std::to_string(g.n) + " branches need " + std::to_string(seqs_needed) +
                                    " sequences; the engine holds at most " + std::to_string(engine.max_num_sequence));
  }
  if (!finite(g.temperature) || g.temperature < 0) return Status::Invalid("temperature", "must be a finite number >= 0");
  if (!finite(g.top_p) || g.top_p <= 0 || g.top_p > 1) return Status::Invalid("top_p", "must be in (0, 1]");
  if (g.top_k < 0) return Status::Invalid("top_k", "must be >= 0 (0 disables it)");
  if (!finite(g.min_p) || g.min_p < 0 || g.min_p > 1) return Status::Invalid("min_p", "must be in [0, 1]");
  if (!finite(g.repetition_penalty) || g.repetition_penalty <= 0) {
    return Status::Invalid("repetition_penalty", "must be a finite number > 0");
  }
  if (!finite(g.frequency_penalty) || std::fabs(g.frequency_penalty) > 2) {
    return Status::Invalid("frequency_penalty", "must be in [-2, 2]");
  }
  if (!finite(g.presence_penalty) || std::fabs(g.presence_penalty) > 2) {
    return Status::Invalid("presence_penalty", "must be in [-2, 2]");
  }
  for (const auto& [token, bias] : g.logit_bias) {
    if (token < 0 || token >= model.vocab_size) {
      return Status::Invalid("logit_bias", "token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                                               std::to_string(model.vocab_size) + ")");
    }
    if (!std::isfinite(bias) || std::fabs(bias) > 100) {
      return Status::Invalid("logit_bias", "bias of token " + std::to_string(token) + " must be in [-100, 100]");
    }
  }
  if (g.max_tokens.has_value() && *g.max_tokens < 1) return Status::Invalid("max_tokens", "must be >= 1");
  for (int32_t t : g.stop_token_ids) {
    if (t < 0 || t >= model.vocab_size) {
      return Status::Invalid("stop_token_ids", "token id " + std::to_string(t) + " is outside the vocabulary");
    }
  }
  if (g.top_logprobs < 0 || g.top_logprobs > kMaxTopLogprobs) {
    return Status::Invalid("top_logprobs", "must be between 0 and " + std::to_string(kMaxTopLogprobs));
  }
  if (g.top_logprobs > 0 && !g.logprobs) return Status::Invalid("top_logprobs", "needs logprobs=true");
  return Status::OK();
}

}  // namespace spindle

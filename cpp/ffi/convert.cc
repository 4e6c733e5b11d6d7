#include "convert.h"

#include <tvm/ffi/container/shape.h>

#include <set>
#include <string>

namespace spindle {

namespace {

bool IsInt(const ffi::Any& v) { return v.type_index() == ffi::TypeIndex::kTVMFFIInt; }
bool IsNumber(const ffi::Any& v) { return IsInt(v) || v.type_index() == ffi::TypeIndex::kTVMFFIFloat; }
bool IsNone(const ffi::Any& v) { return v.type_index() == ffi::TypeIndex::kTVMFFINone; }

Status GetInt(const ffi::Any& v, const std::string& field, int64_t* out) {
  if (!IsInt(v)) return Status::Invalid(field, "expected an integer");
  *out = v.cast<int64_t>();
  return Status::OK();
}

Status GetDouble(const ffi::Any& v, const std::string& field, double* out) {
  if (!IsNumber(v)) return Status::Invalid(field, "expected a number");
  *out = IsInt(v) ? static_cast<double>(v.cast<int64_t>()) : v.cast<double>();
  return Status::OK();
}

Status GetBool(const ffi::Any& v, const std::string& field, bool* out) {
  if (v.type_index() != ffi::TypeIndex::kTVMFFIBool) return Status::Invalid(field, "expected a boolean");
  *out = v.cast<bool>();
  return Status::OK();
}

Status GetString(const ffi::Any& v, const std::string& field, std::string* out) {
  auto s = v.try_cast<ffi::String>();
  if (!s.has_value()) return Status::Invalid(field, "expected a string");
  *out = std::string(*s);
  return Status::OK();
}

Status GetIntList(const ffi::Any& v, const std::string& field, std::vector<int64_t>* out) {
  out->clear();
  if (auto shape = v.try_cast<ffi::Shape>(); shape.has_value() && v.type_index() == ffi::TypeIndex::kTVMFFIShape) {
    out->assign(shape->begin(), shape->end());
    return Status::OK();
  }
  if (v.type_index() != ffi::TypeIndex::kTVMFFIArray) return Status::Invalid(field, "expected a list of integers");
  for (const ffi::Any& e : v.cast<ffi::Array<ffi::Any>>()) {
    if (!IsInt(e)) return Status::Invalid(field, "expected a list of integers");
    out->push_back(e.cast<int64_t>());
  }
  return Status::OK();
}

#define RETURN_IF_ERROR(expr)  \
  do {                         \
    Status _s = (expr);        \
    if (!_s.ok()) return _s;   \
  } while (0)

}  // namespace

Status EngineConfigFromMap(const AnyMap& map, EngineConfig* out) {
  EngineConfig c;
  for (const auto& [key_ref, value] : map) {
    std::string key(key_ref);
    if (key == "model") {
      RETURN_IF_ERROR(GetString(value, key, &c.model));
    } else if (key == "device") {
      RETURN_IF_ERROR(GetString(value, key, &c.device));
    } else if (key == "mode") {
      RETURN_IF_ERROR(GetString(value, key, &c.mode));
    } else if (key == "max_num_sequence" || key == "max_total_sequence_length" ||
               key == "max_single_sequence_length" || key == "prefill_chunk_size") {
      int64_t v = -1;
      if (!IsNone(value)) RETURN_IF_ERROR(GetInt(value, key, &v));
      if (!IsNone(value) && v <= 0) return Status::Invalid(key, "must be a positive integer (or unset)");
      if (key == "max_num_sequence") c.max_num_sequence = v;
      if (key == "max_total_sequence_length") c.max_total_sequence_length = v;
      if (key == "max_single_sequence_length") c.max_single_sequence_length = v;
      if (key == "prefill_chunk_size") c.prefill_chunk_size = v;
    } else if (key == "kv_cache_page_size") {
      RETURN_IF_ERROR(GetInt(value, key, &c.kv_cache_page_size));
    } else if (key == "num_threads") {
      RETURN_IF_ERROR(GetInt(value, key, &c.num_threads));
    } else if (key == "admission_window_us") {
      if (!IsNone(value)) RETURN_IF_ERROR(GetInt(value, key, &c.admission_window_us));
      if (!IsNone(value) && c.admission_window_us < 0) {
        return Status::Invalid(key, "must be >= 0 microseconds (or unset)");
      }
    } else if (key == "output_interval_us") {
      RETURN_IF_ERROR(GetInt(value, key, &c.output_interval_us));
    } else if (key == "output_budget_per_s") {
      RETURN_IF_ERROR(GetInt(value, key, &c.output_budget_per_s));
    } else {
      return Status::Invalid(key, "unknown engine config field");
    }
  }
  *out = std::move(c);
  return Status::OK();
}

Status GenerationConfigFromMap(const AnyMap& map, GenerationConfig* out) {
  GenerationConfig g;
  for (const auto& [key_ref, value] : map) {
    std::string key(key_ref);
    if (key == "n") {
      RETURN_IF_ERROR(GetInt(value, key, &g.n));
    } else if (key == "temperature") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.temperature));
    } else if (key == "top_p") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.top_p));
    } else if (key == "top_k") {
      RETURN_IF_ERROR(GetInt(value, key, &g.top_k));
    } else if (key == "min_p") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.min_p));
    } else if (key == "repetition_penalty") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.repetition_penalty));
    } else if (key == "frequency_penalty") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.frequency_penalty));
    } else if (key == "presence_penalty") {
      RETURN_IF_ERROR(GetDouble(value, key, &g.presence_penalty));
    } else if (key == "logit_bias") {
      auto m = value.try_cast<ffi::Map<ffi::Any, ffi::Any>>();
      if (!m.has_value() || value.type_index() != ffi::TypeIndex::kTVMFFIMap) {
        return Status::Invalid(key, "expected a mapping of token id to bias");
      }
      for (const auto& [tok, bias] : *m) {
        int64_t t = 0;
        double b = 0;
        RETURN_IF_ERROR(GetInt(tok, key, &t));
        RETURN_IF_ERROR(GetDouble(bias, key, &b));
        if (t < INT32_MIN || t > INT32_MAX) return Status::Invalid(key, "token id out of range");
        g.logit_bias.emplace_back(static_cast<int32_t>(t), static_cast<float>(b));
      }
    } else if (key == "seed") {
      if (!IsNone(value)) {
        int64_t v = 0;
        RETURN_IF_ERROR(GetInt(value, key, &v));
        g.seed = v;
      }
    } else if (key == "max_tokens") {
      if (!IsNone(value)) {
        int64_t v = 0;
        RETURN_IF_ERROR(GetInt(value, key, &v));
        g.max_tokens = v;
      }
    } else if (key == "stop_token_ids") {
      std::vector<int64_t> ids;
      RETURN_IF_ERROR(GetIntList(value, key, &ids));
      for (int64_t t : ids) {
        if (t < INT32_MIN || t > INT32_MAX) return Status::Invalid(key, "token id out of range");
        g.stop_token_ids.push_back(static_cast<int32_t>(t));
      }
    } else if (key == "ignore_eos") {
      RETURN_IF_ERROR(GetBool(value, key, &g.ignore_eos));
    } else if (key == "logprobs") {
      RETURN_IF_ERROR(GetBool(value, key, &g.logprobs));
    } else if (key == "top_logprobs") {
      RETURN_IF_ERROR(GetInt(value, key, &g.top_logprobs));
    } else {
      return Status::Invalid(key, "unknown generation config field");
    }
  }
  *out = std::move(g);
  return Status::OK();
}

Status TokenIdsFromAny(const ffi::Any& value, std::vector<int32_t>* out) {
  std::vector<int64_t> ids;
  RETURN_IF_ERROR(GetIntList(value, "token_ids", &ids));
  out->clear();
  out->reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > INT32_MAX) {
      return Status::Invalid("token_ids", "token " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                              " is not a valid token id");
    }
    out->push_back(static_cast<int32_t>(ids[i]));
  }
  return Status::OK();
}

ffi::Any StatusToAny(const Status& s) {
  if (s.ok()) return ffi::Any(nullptr);
  return ffi::Array<ffi::Any>{static_cast<int64_t>(s.code), ffi::String(s.field), ffi::String(s.message)};
}

ffi::Array<ffi::Any> OutputsToPacked(const std::vector<RequestOutput>& outputs) {
  ffi::Array<ffi::Any> ids;
  ffi::Array<ffi::Any> extras;
  ids.reserve(outputs.size());
  extras.reserve(outputs.size());
  std::vector<int64_t> ints;
  for (const RequestOutput& o : outputs) {
    ids.push_back(ffi::String(o.request_id));
    ints.push_back(o.finished ? 1 : 0);
    ints.push_back(static_cast<int64_t>(o.branches.size()));
    for (const BranchDelta& d : o.branches) {
      ints.push_back(d.index);
      ints.push_back(static_cast<int64_t>(d.finish_reason));
      ints.push_back(d.stop_token_id);
      ints.push_back(static_cast<int64_t>(d.token_ids.size()));
      ints.insert(ints.end(), d.token_ids.begin(), d.token_ids.end());
    }
    if (!o.usage.has_value() && o.error.empty() && !o.want_logprobs) {
      extras.push_back(ffi::Any(nullptr));
      continue;
    }
    ffi::Any usage(nullptr);
    if (o.usage.has_value()) {
      const Usage& u = *o.usage;
      usage = ffi::Array<ffi::Any>{u.prompt_tokens, u.completion_tokens, u.time_to_first_token_s,
                                   u.prefill_time_s, u.decode_time_s, u.end_to_end_s};
    }
    ffi::Any logprobs(nullptr);
    if (o.want_logprobs) {
      ffi::Array<ffi::Any> per_branch;
      for (const BranchDelta& d : o.branches) {
        ffi::Array<ffi::Any> lps;
        for (const TokenLogprob& lp : d.logprobs) {
          ffi::Array<ffi::Any> top;
          for (const auto& [tok, val] : lp.top) {
            top.push_back(ffi::Array<ffi::Any>{static_cast<int64_t>(tok), static_cast<double>(val)});
          }
          lps.push_back(ffi::Array<ffi::Any>{static_cast<int64_t>(lp.token_id), static_cast<double>(lp.logprob), top});
        }
        per_branch.push_back(lps);
      }
      logprobs = per_branch;
    }
    extras.push_back(ffi::Array<ffi::Any>{usage, ffi::String(o.error), logprobs});
  }
  return ffi::Array<ffi::Any>{ids, ffi::Shape(ints), extras};
}

AnyMap MetricsToMap(const EngineMetrics& m) {
  AnyMap map;
  auto put_i = [&](const char* k, int64_t v) { map.Set(k, v); };
  auto put_f = [&](const char* k, double v) { map.Set(k, v); };
  put_i("running", m.running);
  put_i("waiting", m.waiting);
  put_i("finished", m.finished);
  put_i("aborted", m.aborted);
  put_i("preempted", m.preempted);
  put_i("prefill_tokens", m.prefill_tokens);
  put_i("decode_tokens", m.decode_tokens);
  put_i("prompt_tokens", m.prompt_tokens);
  put_i("completion_tokens", m.completion_tokens);
  put_i("steps", m.steps);
  put_i("prefill_steps", m.prefill_steps);
  put_i("decode_steps", m.decode_steps);
  put_f("prefill_time_s", m.prefill_time_s);
  put_f("decode_time_s", m.decode_time_s);
  put_f("step_time_s", m.step_time_s);
  put_f("sample_time_s", m.sample_time_s);
  put_i("kv_pages_total", m.kv_pages_total);
  put_i("kv_pages_used", m.kv_pages_used);
  put_i("kv_page_size", m.kv_page_size);
  put_i("max_num_sequence", m.max_num_sequence);
  put_i("max_total_sequence_length", m.max_total_sequence_length);
  put_i("max_single_sequence_length", m.max_single_sequence_length);
  put_i("prefill_chunk_size", m.prefill_chunk_size);
  return map;
}

}  // namespace spindle

#include "request_state.h"

#include <algorithm>

namespace spindle {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

FinishReason CheckStop(int32_t token, int64_t completion_tokens, int64_t total_len, const GenerationConfig& config,
                       const std::vector<int32_t>& eos_token_ids, int64_t max_single_sequence_length,
                       bool* is_stop_token) {
  auto contains = [](const std::vector<int32_t>& v, int32_t t) { return std::find(v.begin(), v.end(), t) != v.end(); };
  *is_stop_token = contains(config.stop_token_ids, token) || (!config.ignore_eos && contains(eos_token_ids, token));
  if (*is_stop_token) return FinishReason::kStop;
  if (config.max_tokens.has_value() && completion_tokens >= *config.max_tokens) return FinishReason::kLength;
  if (total_len >= max_single_sequence_length) return FinishReason::kLength;
  return FinishReason::kNone;
}

Status ValidateRequest(const Request& r, const ModelInfo& model, const EngineConfig& engine, int64_t kv_pages_total) {
  if (r.id().empty()) return Status::Invalid("request_id", "must not be empty");
  if (r.prompt().empty()) return Status::Invalid("token_ids", "the prompt must hold at least one token");
  const int64_t len = static_cast<int64_t>(r.prompt().size());
  if (len >= engine.max_single_sequence_length) {
    return Status::Invalid("token_ids", "the prompt has " + std::to_string(len) +
                                            " tokens; the context limit is " +
                                            std::to_string(engine.max_single_sequence_length) +
                                            " tokens, prompt and at least one generated token");
  }
  for (size_t i = 0; i < r.prompt().size(); ++i) {
    int32_t t = r.prompt()[i];
    if (t < 0 || t >= model.vocab_size) {
      return Status::Invalid("token_ids", "token " + std::to_string(t) + " at position " + std::to_string(i) +
                                              " is outside the vocabulary [0, " + std::to_string(model.vocab_size) +
                                              ")");
    }
  }
  Status s = ValidateGenerationConfig(r.config(), model, engine);
  if (!s.ok() || kv_pages_total <= 0) return s;
  // The prompt's pages plus, for n > 1, a page per forked branch must fit in an empty cache.
  const int64_t n = r.config().n;
  const int64_t needed = PagesToAdd(0, len, engine.kv_cache_page_size) + (n > 1 ? n : 0);
  if (needed > kv_pages_total) {
    return Status::Invalid(n > 1 ? "n" : "token_ids",
                           "the prompt and its " + std::to_string(n) + " branch(es) need " + std::to_string(needed) +
                               " KV pages; the cache holds " + std::to_string(kv_pages_total) +
                               " (raise max_total_sequence_length)");
  }
  return Status::OK();
}

}  // namespace spindle

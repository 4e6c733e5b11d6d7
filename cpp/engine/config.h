// EngineConfig, GenerationConfig and the model facts read from spindle-config.json:
// parsed into typed values and validated into a Status that names the offending field.
#ifndef SPINDLE_ENGINE_CONFIG_H_
#define SPINDLE_ENGINE_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace spindle {

enum class ErrorCode : int { kOk = 0, kInvalidArgument = 1, kAlreadyExists = 2, kUnavailable = 3, kInternal = 4 };

/*! \brief The outcome of an operation on user input: ok, or an error code with the field at fault. */
struct Status {
  ErrorCode code = ErrorCode::kOk;
  std::string field;
  std::string message;

  bool ok() const { return code == ErrorCode::kOk; }
  static Status OK() { return Status(); }
  static Status Invalid(std::string field, std::string message) {
    return Status{ErrorCode::kInvalidArgument, std::move(field), std::move(message)};
  }
  static Status Duplicate(std::string id) {
    return Status{ErrorCode::kAlreadyExists, "request_id", "a request with id '" + id + "' is already active"};
  }
  static Status Unavailable(std::string message) { return Status{ErrorCode::kUnavailable, "", std::move(message)}; }
  static Status Internal(std::string message) { return Status{ErrorCode::kInternal, "", std::move(message)}; }
};

/*! \brief The model facts the engine needs, from the artifact's spindle-config.json. */
struct ModelInfo {
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t context_window_size = 0;
  int64_t prefill_chunk_size = 0;
  int64_t max_batch_size = 0;
  std::string dtype;
  std::vector<std::string> param_names;
  std::vector<int32_t> eos_token_ids;
  int64_t bos_token_id = -1;
  // Filled when the weights are loaded (not part of the file):
  int64_t weight_bytes = 0;
  int64_t weight_huge_page_bytes = 0;  // of weight_bytes, held in 2 MB pages (SPINDLE_HUGE_PAGES=0: none)
};

/*! \brief Parse the text of spindle-config.json. */
Status ParseModelInfo(const std::string& json_text, ModelInfo* out);

/*! \brief Engine settings. A value of -1 means "take it from the mode preset". */
struct EngineConfig {
  std::string model;  // artifact directory
  std::string device = "cpu";
  std::string mode = "local";  // local | interactive | server
  int64_t max_num_sequence = -1;
  int64_t max_total_sequence_length = -1;
  int64_t max_single_sequence_length = -1;
  // Most prompt tokens one step prefills (over all requests; longer prompts take several steps). -1 = the
  // compiled model's chunk.
  int64_t prefill_chunk_size = -1;
  int64_t kv_cache_page_size = 16;
  int64_t num_threads = 0;  // TVM worker threads; 0 = every core
  // ThreadedEngine: when a request wakes the idle engine, how long (at most, microseconds) the loop keeps
  // collecting requests that arrive in a burst before its first step, so that they share one prefill.
  // It stops early once no request has come for an eighth of the window, or once the queued prompts fill a
  // step's prefill_chunk_size. 0 = step at once; -1 = the preset's (server: 8000, local and interactive: 0).
  int64_t admission_window_us = -1;
  // ThreadedEngine: the least time (microseconds) between two deliveries of the stream-back loop. Outputs
  // that come sooner wait and are merged per request (a stream then gets several tokens in one delta),
  // except that a request's first tokens and every finish go at once, taking whatever waits with them.
  // 0 = every step's outputs as soon as they are there.
  int64_t output_interval_us = 0;
  // ThreadedEngine: the most request outputs per second the stream-back loop delivers over all requests
  // whose tokens it paces (those with tokens delivered and no finish). With n of them, two deliveries are
  // at least n / output_budget_per_s seconds apart (and at least output_interval_us), so the work a
  // delivery causes downstream (a message per request) stays bounded however many requests stream; first
  // tokens and finishes still go at once. 0 = no budget.
  int64_t output_budget_per_s = 0;
};

/*! \brief Validate the user-facing fields that do not need the model (mode, signs, device). */
Status ValidateEngineConfig(const EngineConfig& config);

/*! \brief Fill the preset values of `config.mode` and check every limit against the model. */
Status ResolveEngineConfig(const EngineConfig& config, const ModelInfo& model, EngineConfig* out);

/*! \brief Sampling and stopping parameters of one request. */
struct GenerationConfig {
  int64_t n = 1;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<int64_t> seed;
  std::optional<int64_t> max_tokens;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool logprobs = false;
  int64_t top_logprobs = 0;
};

constexpr int64_t kMaxTopLogprobs = 20;
constexpr int64_t kMaxN = 16;

/*! \brief Range checks of a GenerationConfig against the model and the resolved engine limits. */
Status ValidateGenerationConfig(const GenerationConfig& config, const ModelInfo& model, const EngineConfig& engine);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_CONFIG_H_

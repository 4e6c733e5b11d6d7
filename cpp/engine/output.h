// What the engine hands back: per-step deltas per request, usage on finish, and metrics.
#ifndef SPINDLE_ENGINE_OUTPUT_H_
#define SPINDLE_ENGINE_OUTPUT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace spindle {

enum class FinishReason : int { kNone = 0, kStop = 1, kLength = 2, kAbort = 3, kError = 4 };

const char* FinishReasonName(FinishReason r);

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct BranchDelta {
  int64_t index = 0;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;  // one per token when the request asked for logprobs
  FinishReason finish_reason = FinishReason::kNone;
  int32_t stop_token_id = -1;  // with kStop: the stop / end-of-sequence token that matched (not in token_ids); else -1
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double time_to_first_token_s = 0;
  double prefill_time_s = 0;
  double decode_time_s = 0;
  double end_to_end_s = 0;
};

struct RequestOutput {
  std::string request_id;
  std::vector<BranchDelta> branches;
  bool finished = false;
  std::optional<Usage> usage;
  std::string error;
  bool want_logprobs = false;
};

/*!
 * \brief Merge the outputs of one request that follow each other in `outputs` into its first one (tokens
 * and logprobs appended per branch; the later finish, usage and error win). Outputs after a finish are
 * not merged into it: an id added again after finishing stays a request of its own. Requests keep the
 * order of their first output.
 */
void CoalesceOutputs(std::vector<RequestOutput>* outputs);

struct EngineMetrics {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t finished = 0;
  int64_t aborted = 0;
  int64_t preempted = 0;
  int64_t prefill_tokens = 0;  // tokens run through batch_prefill (recomputation included)
  int64_t decode_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t steps = 0;
  int64_t prefill_steps = 0;
  int64_t decode_steps = 0;
  double prefill_time_s = 0;   // time inside the model for prefill
  double decode_time_s = 0;    // time inside the model for decode
  double step_time_s = 0;      // whole Step() time, scheduling and sampling included
  double sample_time_s = 0;
  int64_t kv_pages_total = 0;
  int64_t kv_pages_used = 0;
  int64_t kv_page_size = 0;
  int64_t max_num_sequence = 0;
  int64_t max_total_sequence_length = 0;
  int64_t max_single_sequence_length = 0;
  int64_t prefill_chunk_size = 0;
};

}  // namespace spindle

#endif  // SPINDLE_ENGINE_OUTPUT_H_

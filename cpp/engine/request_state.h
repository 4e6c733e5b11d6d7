// Mutable per-request progress: KV sequences, prefill position, generated tokens per branch,
// sampler streams, undelivered deltas and timings. Also the pure page / stop arithmetic.
#ifndef SPINDLE_ENGINE_REQUEST_STATE_H_
#define SPINDLE_ENGINE_REQUEST_STATE_H_

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "output.h"
#include "request.h"
#include "sampler/sampler.h"

namespace spindle {

enum class RequestStatus { kWaiting, kPrefilling, kRunning };

struct BranchState {
  int64_t index = 0;
  int64_t seq_id = -1;   // KV sequence, -1 when none
  int64_t kv_len = 0;    // tokens of prompt + generated already in the KV cache
  std::vector<int32_t> tokens;  // generated tokens (a final stop token is not kept)
  size_t delivered = 0;          // tokens already handed out in deltas
  std::vector<TokenLogprob> pending_logprobs;
  std::unordered_map<int32_t, int32_t> counts;  // generated token -> occurrences (penalties)
  int64_t completion_tokens = 0;                 // sampled tokens, a final stop token included
  Rng rng;
  FinishReason finish = FinishReason::kNone;
  int32_t stop_token_id = -1;  // the stop / end-of-sequence token that finished it, -1 when none
  bool finish_delivered = false;

  bool finished() const { return finish != FinishReason::kNone; }
};

struct RequestState {
  RequestPtr request;
  RequestStatus status = RequestStatus::kWaiting;
  uint64_t order = 0;          // admission order; the newest is preempted first
  int64_t prompt_seq = -1;     // n > 1: the sequence holding the shared prompt
  int64_t prompt_kv_len = 0;   // n > 1: prompt tokens in prompt_seq
  bool forked = false;         // n > 1: branches forked from prompt_seq
  std::vector<BranchState> branches;
  Clock::time_point prefill_start{};
  Clock::time_point first_token{};
  bool has_first_token = false;
  bool touched = false;  // has output to hand out at the end of the step

  int64_t prompt_len() const { return static_cast<int64_t>(request->prompt().size()); }
  bool shared_prompt() const { return branches.size() > 1; }
  bool all_finished() const {
    for (const auto& b : branches)
      if (!b.finished()) return false;
    return true;
  }
  int64_t unfinished() const {
    int64_t k = 0;
    for (const auto& b : branches) k += b.finished() ? 0 : 1;
    return k;
  }
  /*! \brief KV sequences this request holds (or needs) while active. */
  int64_t sequences_needed() const { return shared_prompt() ? 1 + unfinished() : 1; }
  /*! \brief Token at `pos` of branch `b`'s full sequence (prompt then generated tokens). */
  int32_t token_at(const BranchState& b, int64_t pos) const {
    int64_t p = prompt_len();
    return pos < p ? request->prompt()[pos] : b.tokens[pos - p];
  }
};

/*! \brief Pages a sequence of `kv_len` tokens must add to hold `add` more. */
inline int64_t PagesToAdd(int64_t kv_len, int64_t add, int64_t page_size) {
  auto pages = [&](int64_t n) { return (n + page_size - 1) / page_size; };
  return pages(kv_len + add) - pages(kv_len);
}

/*! \brief The most tokens a sequence of `kv_len` tokens can add with `free_pages` new pages. */
inline int64_t TokensThatFit(int64_t kv_len, int64_t free_pages, int64_t page_size) {
  if (free_pages < 0) return 0;
  int64_t held = (kv_len + page_size - 1) / page_size;
  return (held + free_pages) * page_size - kv_len;
}

/*!
 * \brief Why a branch stops after sampling `token` as its `completion_tokens`-th token, or kNone.
 * \param total_len prompt + generated tokens once `token` is appended.
 */
FinishReason CheckStop(int32_t token, int64_t completion_tokens, int64_t total_len, const GenerationConfig& config,
                       const std::vector<int32_t>& eos_token_ids, int64_t max_single_sequence_length,
                       bool* is_stop_token);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_REQUEST_STATE_H_

// The prefill action: admit waiting requests and run the next prompt chunks of several requests
// packed into one batch_prefill call, bounded by prefill_chunk_size tokens, free KV pages and
// free sequence slots. Recomputation after preemption goes through here too.
#include <algorithm>
#include <cstring>

#include "../engine.h"
#include "../scheduler.h"

namespace spindle {

bool Engine::PrefillAction() {
  if (waiting_.empty()) {
    bool any_prefilling = false;
    for (RequestState* st : active_) any_prefilling |= st->status == RequestStatus::kPrefilling;
    if (!any_prefilling) return false;
  }
  PrefillPlan plan = PlanPrefill(active_, waiting_, config_, model_->AvailablePages());
  std::vector<PrefillSegment>& segments = plan.segments;
  std::vector<RequestState*>& admitted = plan.admitted;
  if (segments.empty()) return false;
  for (RequestState* st : admitted) Admit(st);

  // Build the packed batch; sequences of newly admitted requests are created here.
  std::vector<int64_t> seq_ids, lengths;
  std::vector<int32_t> tokens;
  for (PrefillSegment& s : segments) {
    RequestState* st = s.st;
    if (s.branch == nullptr) {
      if (st->prompt_seq < 0) st->prompt_seq = NewSequence();
      for (int64_t i = 0; i < s.len; ++i) tokens.push_back(st->request->prompt()[s.start + i]);
    } else {
      if (s.branch->seq_id < 0) s.branch->seq_id = NewSequence();
      for (int64_t i = 0; i < s.len; ++i) tokens.push_back(st->token_at(*s.branch, s.start + i));
    }
    seq_ids.push_back(s.branch == nullptr ? st->prompt_seq : s.branch->seq_id);
    lengths.push_back(s.len);
  }
  const Clock::time_point t0 = Clock::now();
  ffi::Tensor logits = model_->Prefill(seq_ids, lengths, tokens);
  const Clock::time_point t1 = Clock::now();
  metrics_.prefill_time_s += std::chrono::duration<double>(t1 - t0).count();
  metrics_.prefill_tokens += static_cast<int64_t>(tokens.size());
  metrics_.prefill_steps += 1;

  const int64_t vocab = model_->info().vocab_size;
  const float* rows = static_cast<const float*>(logits.data_ptr());
  for (size_t i = 0; i < segments.size(); ++i) {
    PrefillSegment& s = segments[i];
    RequestState* st = s.st;
    const int64_t p = st->prompt_len();
    const float* row = rows + i * vocab;
    if (s.branch != nullptr) {
      s.branch->kv_len += s.len;
      // The first token of an n == 1 request comes from its last prompt position.
      if (!st->shared_prompt() && s.branch->tokens.empty() && s.branch->kv_len == p) SampleBranch(st, s.branch, row);
    } else {
      st->prompt_kv_len += s.len;
      if (st->prompt_kv_len == p && !st->forked) {
        bool first = true;
        for (const BranchState& b : st->branches) first &= b.tokens.empty();
        for (BranchState& b : st->branches) {
          if (b.finished()) continue;
          b.seq_id = next_seq_++;
          model_->ForkSequence(st->prompt_seq, b.seq_id);
          b.kv_len = p;
        }
        st->forked = true;
        if (first) {
          for (BranchState& b : st->branches) {
            if (!b.finished()) SampleBranch(st, &b, row);
          }
        }
      }
    }
    UpdateStatus(st);
  }
  metrics_.sample_time_s += std::chrono::duration<double>(Clock::now() - t1).count();
  return true;
}

}  // namespace spindle

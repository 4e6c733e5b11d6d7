// The decode action: one batch_decode over every running branch, after preempting the newest
// requests until the KV pages for this step are there.
#include <algorithm>

#include "../engine.h"
#include "../scheduler.h"

namespace spindle {

bool Engine::DecodeAction() {
  const int64_t page = config_.kv_cache_page_size;
  std::vector<std::pair<RequestState*, BranchState*>> batch;
  while (true) {
    batch.clear();
    for (RequestState* st : active_) {
      if (st->status != RequestStatus::kRunning) continue;
      for (BranchState& b : st->branches) {
        if (!b.finished()) batch.emplace_back(st, &b);
      }
    }
    if (batch.empty()) return false;
    if (DecodePagesNeeded(active_, page) <= model_->AvailablePages()) break;
    RequestState* victim = PreemptionVictim(active_);
    if (active_.size() == 1) {
      // One request alone outgrows the cache (its n branches together): end the branches that need a page.
      for (BranchState& b : victim->branches) {
        if (!b.finished() && b.kv_len % page == 0) FinishBranch(victim, &b, FinishReason::kLength);
      }
      continue;
    }
    Preempt(victim);
  }

  std::vector<int64_t> seq_ids;
  std::vector<int32_t> tokens;
  seq_ids.reserve(batch.size());
  tokens.reserve(batch.size());
  for (auto& [st, b] : batch) {
    seq_ids.push_back(b->seq_id);
    tokens.push_back(b->tokens.back());
  }
  const Clock::time_point t0 = Clock::now();
  ffi::Tensor logits = model_->Decode(seq_ids, tokens);
  const Clock::time_point t1 = Clock::now();
  metrics_.decode_time_s += std::chrono::duration<double>(t1 - t0).count();
  metrics_.decode_tokens += static_cast<int64_t>(batch.size());
  metrics_.decode_steps += 1;

  const int64_t vocab = model_->info().vocab_size;
  const float* rows = static_cast<const float*>(logits.data_ptr());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto [st, b] = batch[i];
    b->kv_len += 1;
    SampleBranch(st, b, rows + i * vocab);
  }
  metrics_.sample_time_s += std::chrono::duration<double>(Clock::now() - t1).count();
  return true;
}

}  // namespace spindle

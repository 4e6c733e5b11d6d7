#include "scheduler.h"

#include <algorithm>

namespace spindle {

PrefillPlan PlanPrefill(const std::deque<RequestState*>& active, const std::deque<RequestState*>& waiting,
                        const EngineConfig& config, int64_t free_pages) {
  PrefillPlan plan;
  const int64_t page = config.kv_cache_page_size;
  int64_t budget = config.prefill_chunk_size;
  int64_t live_seqs = 0;
  for (RequestState* st : active) {
    live_seqs += st->sequences_needed();
    if (st->status != RequestStatus::kRunning) continue;
    for (const BranchState& b : st->branches) {
      if (!b.finished() && b.kv_len % page == 0) free_pages -= 1;
    }
  }
  bool full = false;

  // Schedule up to `target - kv` tokens of one sequence; `fork_pages` are needed on completion.
  auto schedule = [&](RequestState* st, BranchState* b, int64_t kv, int64_t target, int64_t fork_pages) {
    if (full || kv >= target) return false;
    if (static_cast<int64_t>(plan.segments.size()) >= config.max_num_sequence) {
      full = true;
      return false;
    }
    int64_t len = std::min(budget, target - kv);
    len = std::min(len, TokensThatFit(kv, free_pages, page));
    if (kv + len == target && fork_pages > 0 && PagesToAdd(kv, len, page) + fork_pages > free_pages) {
      len = std::min(target - kv - 1, TokensThatFit(kv, free_pages - fork_pages, page));
    }
    if (len <= 0) {
      full = true;
      return false;
    }
    free_pages -= PagesToAdd(kv, len, page) + (kv + len == target ? fork_pages : 0);
    budget -= len;
    if (budget == 0) full = true;
    plan.segments.push_back(PrefillSegment{st, b, kv, len});
    return true;
  };

  auto plan_request = [&](RequestState* st) {
    const int64_t p = st->prompt_len();
    bool any = false;
    if (!st->shared_prompt()) {
      BranchState& b = st->branches[0];
      int64_t target = p + std::max<int64_t>(0, static_cast<int64_t>(b.tokens.size()) - 1);
      any = schedule(st, &b, b.kv_len, target, 0);
    } else if (st->prompt_kv_len < p) {
      any = schedule(st, nullptr, st->prompt_kv_len, p, st->unfinished());
    } else if (st->forked) {
      for (BranchState& b : st->branches) {
        if (b.finished()) continue;
        any |= schedule(st, &b, b.kv_len, p + static_cast<int64_t>(b.tokens.size()) - 1, 0);
      }
    }
    return any;
  };

  for (RequestState* st : active) {
    if (full) break;
    if (st->status == RequestStatus::kPrefilling) plan_request(st);
  }
  for (RequestState* st : waiting) {
    if (full) break;
    if (live_seqs + st->sequences_needed() > config.max_num_sequence) break;
    if (!plan_request(st)) break;
    live_seqs += st->sequences_needed();
    plan.admitted.push_back(st);
  }
  return plan;
}

int64_t DecodePagesNeeded(const std::deque<RequestState*>& active, int64_t page_size) {
  int64_t pages = 0;
  for (const RequestState* st : active) {
    if (st->status != RequestStatus::kRunning) continue;
    for (const BranchState& b : st->branches) {
      if (!b.finished() && b.kv_len % page_size == 0) pages += 1;
    }
  }
  return pages;
}

RequestState* PreemptionVictim(const std::deque<RequestState*>& active) {
  return active.empty() ? nullptr : active.back();
}

}  // namespace spindle

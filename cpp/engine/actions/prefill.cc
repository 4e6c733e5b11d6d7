// The prefill action: admit waiting requests and run the next prompt chunks of several requests
// packed into one batch_prefill call, bounded by prefill_chunk_size tokens, free KV pages and
// free sequence slots. Recomputation after preemption goes through here too.
#include <algorithm>
#include <cstring>

#include "../engine.h"

namespace spindle {

namespace {

struct Segment {
  RequestState* st;
  BranchState* branch;  // nullptr: the shared prompt sequence of an n > 1 request
  int64_t seq_id;
  int64_t start;        // KV length before this segment
  int64_t len;
};

}  // namespace

bool Engine::PrefillAction() {
  if (waiting_.empty()) {
    bool any_prefilling = false;
    for (RequestState* st : active_) any_prefilling |= st->status == RequestStatus::kPrefilling;
    if (!any_prefilling) return false;
  }
  const int64_t page = config_.kv_cache_page_size;
  int64_t budget = config_.prefill_chunk_size;
  int64_t free_pages = model_->AvailablePages();
  int64_t live_seqs = 0;
  for (RequestState* st : active_) {
    live_seqs += st->sequences_needed();
    if (st->status != RequestStatus::kRunning) continue;
    // Keep the pages that the running branches need for their next decode.
    for (const BranchState& b : st->branches) {
      if (!b.finished() && b.kv_len % page == 0) free_pages -= 1;
    }
  }
  std::vector<Segment> segments;
  bool full = false;

  // Schedule up to `target - kv` tokens of one sequence; `fork_pages` are needed on completion.
  auto schedule = [&](RequestState* st, BranchState* b, int64_t kv, int64_t target, int64_t fork_pages) {
    if (full || kv >= target) return false;
    if (static_cast<int64_t>(segments.size()) >= config_.max_num_sequence) {
      full = true;
      return false;
    }
    int64_t len = std::min(budget, target - kv);
    len = std::min(len, TokensThatFit(kv, free_pages, page));
    if (kv + len == target && fork_pages > 0 &&
        PagesToAdd(kv, len, page) + fork_pages > free_pages) {
      len = std::min(target - kv - 1, TokensThatFit(kv, free_pages - fork_pages, page));
    }
    if (len <= 0) {
      full = true;
      return false;
    }
    free_pages -= PagesToAdd(kv, len, page) + (kv + len == target ? fork_pages : 0);
    budget -= len;
    if (budget == 0) full = true;
    segments.push_back(Segment{st, b, -1, kv, len});
    return true;
  };

  auto plan = [&](RequestState* st) {
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

  for (RequestState* st : active_) {
    if (full) break;
    if (st->status == RequestStatus::kPrefilling) plan(st);
  }
  std::vector<RequestState*> admitted;
  for (RequestState* st : waiting_) {
    if (full) break;
    if (live_seqs + st->sequences_needed() > config_.max_num_sequence) break;  // first come, first served
    if (!plan(st)) break;
    live_seqs += st->sequences_needed();
    admitted.push_back(st);
  }
  if (segments.empty()) return false;
  for (RequestState* st : admitted) Admit(st);

  // Build the packed batch; sequences of newly admitted requests are created here.
  std::vector<int64_t> seq_ids, lengths;
  std::vector<int32_t> tokens;
  for (Segment& s : segments) {
    RequestState* st = s.st;
    if (s.branch == nullptr) {
      if (st->prompt_seq < 0) st->prompt_seq = NewSequence();
      s.seq_id = st->prompt_seq;
      for (int64_t i = 0; i < s.len; ++i) tokens.push_back(st->request->prompt()[s.start + i]);
    } else {
      if (s.branch->seq_id < 0) s.branch->seq_id = NewSequence();
      s.seq_id = s.branch->seq_id;
      for (int64_t i = 0; i < s.len; ++i) tokens.push_back(st->token_at(*s.branch, s.start + i));
    }
    seq_ids.push_back(s.seq_id);
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
    Segment& s = segments[i];
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

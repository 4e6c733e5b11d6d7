// Pure scheduling decisions (no model): which prompt chunks go into the next batch_prefill, how
// many KV pages a decode step needs, and which request is preempted first.
#ifndef SPINDLE_ENGINE_SCHEDULER_H_
#define SPINDLE_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "config.h"
#include "request_state.h"

namespace spindle {

struct PrefillSegment {
  RequestState* st;
  BranchState* branch;  // nullptr: the shared prompt sequence of an n > 1 request
  int64_t start;        // KV length of the sequence before this segment
  int64_t len;          // tokens to run
};

struct PrefillPlan {
  std::vector<PrefillSegment> segments;
  std::vector<RequestState*> admitted;  // waiting requests that the plan starts
};

/*!
 * \brief Plan one packed prefill: requests already prefilling first, then waiting requests in
 * arrival order (first come, first served: a request that does not fit stops admission). Bounded
 * by `config.prefill_chunk_size` tokens, `config.max_num_sequence` sequences and `free_pages`
 * (after keeping one page for each running branch whose next decode starts a page).
 */
PrefillPlan PlanPrefill(const std::deque<RequestState*>& active, const std::deque<RequestState*>& waiting,
                        const EngineConfig& config, int64_t free_pages);

/*! \brief New KV pages the next decode step needs (one per running branch at a page boundary). */
int64_t DecodePagesNeeded(const std::deque<RequestState*>& active, int64_t page_size);

/*! \brief The request to preempt when pages run out: the newest active one (nullptr if none). */
RequestState* PreemptionVictim(const std::deque<RequestState*>& active);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_SCHEDULER_H_

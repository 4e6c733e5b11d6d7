#include "output.h"

#include <unordered_map>

namespace spindle {

namespace {

void MergeInto(RequestOutput* into, RequestOutput&& more) {
  for (BranchDelta& d : more.branches) {
    BranchDelta* same = nullptr;
    for (BranchDelta& b : into->branches) {
      if (b.index == d.index) {
        same = &b;
        break;
      }
    }
    if (same == nullptr) {
      into->branches.push_back(std::move(d));
      continue;
    }
    same->token_ids.insert(same->token_ids.end(), d.token_ids.begin(), d.token_ids.end());
    for (TokenLogprob& lp : d.logprobs) same->logprobs.push_back(std::move(lp));
    if (d.finish_reason != FinishReason::kNone) {
      same->finish_reason = d.finish_reason;
      same->stop_token_id = d.stop_token_id;
    }
  }
  into->finished = into->finished || more.finished;
  if (more.usage.has_value()) into->usage = more.usage;
  if (!more.error.empty()) into->error = std::move(more.error);
  into->want_logprobs = into->want_logprobs || more.want_logprobs;
}

}  // namespace

void CoalesceOutputs(std::vector<RequestOutput>* outputs) {
  if (outputs->size() < 2) return;
  std::vector<RequestOutput> merged;
  merged.reserve(outputs->size());
  std::unordered_map<std::string, size_t> open;  // request id -> its unfinished entry in `merged`
  for (RequestOutput& o : *outputs) {
    auto it = open.find(o.request_id);
    if (it == open.end()) {
      if (!o.finished) open.emplace(o.request_id, merged.size());
      merged.push_back(std::move(o));
      continue;
    }
    RequestOutput& into = merged[it->second];
    MergeInto(&into, std::move(o));
    if (into.finished) open.erase(it);
  }
  outputs->swap(merged);
}

}  // namespace spindle

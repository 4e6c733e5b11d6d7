#include "engine.h"

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

namespace spindle {

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

std::unique_ptr<Engine> Engine::Create(const EngineConfig& config, Status* status) {
  *status = ValidateEngineConfig(config);
  if (!status->ok()) return nullptr;
  // TVM sizes each thread's worker pool from TVM_NUM_THREADS when the pool is first used (its default
  // is half the cores on x86): ask for every core unless the user chose.
  int64_t threads = config.num_threads > 0 ? config.num_threads
                                           : static_cast<int64_t>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  if (config.num_threads > 0 || std::getenv("TVM_NUM_THREADS") == nullptr) {
    setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), 1);
  }
  std::unique_ptr<Engine> engine(new Engine());
  engine->model_ = Model::Load(config.model, status);
  if (!status->ok()) return nullptr;
  *status = ResolveEngineConfig(config, engine->model_->info(), &engine->config_);
  if (!status->ok()) return nullptr;
  const EngineConfig& c = engine->config_;
  try {
    engine->metrics_.kv_pages_total = engine->model_->CreateKVCache(c.max_num_sequence, c.max_total_sequence_length,
                                                                    c.prefill_chunk_size, c.kv_cache_page_size);
  } catch (const ffi::Error& e) {
    *status = Status::Invalid("max_total_sequence_length", std::string("cannot create the KV cache: ") + e.message());
    return nullptr;
  }
  engine->metrics_.kv_page_size = c.kv_cache_page_size;
  engine->metrics_.max_num_sequence = c.max_num_sequence;
  engine->metrics_.max_total_sequence_length = c.max_total_sequence_length;
  engine->metrics_.max_single_sequence_length = c.max_single_sequence_length;
  engine->metrics_.prefill_chunk_size = c.prefill_chunk_size;
  return engine;
}

Status Engine::Validate(const Request& request) const {
  return ValidateRequest(request, model_->info(), config_, metrics_.kv_pages_total);
}

Status Engine::AddRequest(RequestPtr request) {
  Status s = Validate(*request);
  if (!s.ok()) return s;
  if (states_.count(request->id())) return Status::Duplicate(request->id());
  auto st = std::make_unique<RequestState>();
  st->request = request;
  st->order = next_order_++;
  const GenerationConfig& g = request->config();
  uint64_t seed = g.seed.has_value() ? static_cast<uint64_t>(*g.seed) : std::random_device{}() * 0x100000001ULL;
  st->branches.resize(g.n);
  for (int64_t i = 0; i < g.n; ++i) {
    st->branches[i].index = i;
    st->branches[i].rng = Rng::ForBranch(seed, i);
  }
  metrics_.prompt_tokens += static_cast<int64_t>(request->prompt().size());
  RequestState* raw = st.get();
  states_.emplace(request->id(), std::move(st));
  InsertSorted(&waiting_, raw);
  return Status::OK();
}

void Engine::InsertSorted(std::deque<RequestState*>* q, RequestState* st) {
  auto it = std::upper_bound(q->begin(), q->end(), st,
                             [](const RequestState* a, const RequestState* b) { return a->order < b->order; });
  q->insert(it, st);
}

void Engine::RemoveFrom(std::deque<RequestState*>* q, RequestState* st) {
  auto it = std::find(q->begin(), q->end(), st);
  if (it != q->end()) q->erase(it);
}

int64_t Engine::NewSequence() {
  int64_t id = next_seq_++;
  model_->AddSequence(id);
  return id;
}

void Engine::Admit(RequestState* st) {
  RemoveFrom(&waiting_, st);
  InsertSorted(&active_, st);
  st->status = RequestStatus::kPrefilling;
  if (st->prefill_start == Clock::time_point{}) st->prefill_start = Clock::now();
}

void Engine::ReleaseSequences(RequestState* st) {
  for (BranchState& b : st->branches) {
    if (b.seq_id >= 0) model_->RemoveSequence(b.seq_id);
    b.seq_id = -1;
    b.kv_len = 0;
  }
  if (st->prompt_seq >= 0) model_->RemoveSequence(st->prompt_seq);
  st->prompt_seq = -1;
  st->prompt_kv_len = 0;
  st->forked = false;
}

void Engine::Preempt(RequestState* st) {
  ReleaseSequences(st);
  RemoveFrom(&active_, st);
  st->status = RequestStatus::kWaiting;
  InsertSorted(&waiting_, st);
  metrics_.preempted += 1;
}

void Engine::MarkTouched(RequestState* st) {
  if (!st->touched) {
    st->touched = true;
    touched_.push_back(st);
  }
}

void Engine::FinishBranch(RequestState* st, BranchState* b, FinishReason reason) {
  b->finish = reason;
  if (b->seq_id >= 0) model_->RemoveSequence(b->seq_id);
  b->seq_id = -1;
  MarkTouched(st);
  if (st->all_finished()) {
    ReleaseSequences(st);
    RemoveFrom(&active_, st);
    RemoveFrom(&waiting_, st);
  }
}

void Engine::FinishRequest(RequestState* st, FinishReason reason, const std::string& error) {
  for (BranchState& b : st->branches) {
    if (!b.finished()) b.finish = reason;
  }
  if (!error.empty()) {
    for (BranchState& b : st->branches) b.pending_logprobs.clear();
  }
  ReleaseSequences(st);
  RemoveFrom(&active_, st);
  RemoveFrom(&waiting_, st);
  MarkTouched(st);
}

void Engine::SampleBranch(RequestState* st, BranchState* b, const float* logits) {
  const Request& r = *st->request;
  const GenerationConfig& g = r.config();
  SamplerHistory history{&r.prompt_unique(), &b->counts};
  SampleResult res = SampleToken(logits, model_->info().vocab_size, g, history, &b->rng, &scratch_);
  b->completion_tokens += 1;
  metrics_.completion_tokens += 1;
  if (!st->has_first_token) {
    st->has_first_token = true;
    st->first_token = Clock::now();
  }
  bool is_stop = false;
  const int64_t total_len = st->prompt_len() + static_cast<int64_t>(b->tokens.size()) + 1;
  FinishReason reason = CheckStop(res.token, b->completion_tokens, total_len, g, model_->info().eos_token_ids,
                                  config_.max_single_sequence_length, &is_stop);
  if (is_stop) {
    b->stop_token_id = res.token;
  } else {
    b->tokens.push_back(res.token);
    b->counts[res.token] += 1;
    if (g.logprobs) b->pending_logprobs.push_back(TokenLogprob{res.token, res.logprob, std::move(res.top)});
  }
  MarkTouched(st);
  if (reason != FinishReason::kNone) FinishBranch(st, b, reason);
}

void Engine::UpdateStatus(RequestState* st) {
  if (st->all_finished() || st->status == RequestStatus::kWaiting) return;
  const int64_t p = st->prompt_len();
  bool ready = !st->shared_prompt() || st->forked;
  for (const BranchState& b : st->branches) {
    if (b.finished()) continue;
    if (b.seq_id < 0 || b.tokens.empty() || b.kv_len != p + static_cast<int64_t>(b.tokens.size()) - 1) ready = false;
  }
  st->status = ready ? RequestStatus::kRunning : RequestStatus::kPrefilling;
}

void Engine::AbortRequest(const std::string& request_id) {
  auto it = states_.find(request_id);
  if (it == states_.end()) return;
  RequestState* st = it->second.get();
  FinishRequest(st, FinishReason::kAbort, "");
  metrics_.aborted += 1;
  CollectOutputs(&pending_outputs_);
}

void Engine::Reset() {
  std::vector<RequestState*> all;
  for (auto& kv : states_) all.push_back(kv.second.get());
  std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->order < b->order; });
  for (RequestState* st : all) {
    FinishRequest(st, FinishReason::kAbort, "");
    metrics_.aborted += 1;
  }
  CollectOutputs(&pending_outputs_);
  model_->ClearKV();
}

void Engine::FailActive(const std::string& message) {
  std::vector<RequestState*> failed(active_.begin(), active_.end());
  for (RequestState* st : failed) {
    try {
      FinishRequest(st, FinishReason::kError, message);
    } catch (const std::exception&) {
      st->prompt_seq = -1;
      for (BranchState& b : st->branches) b.seq_id = -1;
      RemoveFrom(&active_, st);
    }
    metrics_.finished += 1;
    for (BranchState& b : st->branches) b.pending_logprobs.clear();
    MarkTouched(st);
  }
  last_error_ = message;
}

void Engine::CollectOutputs(std::vector<RequestOutput>* out) {
  const Clock::time_point now = Clock::now();
  for (RequestState* st : touched_) {
    st->touched = false;
    RequestOutput o;
    o.request_id = st->request->id();
    o.want_logprobs = st->request->config().logprobs;
    for (BranchState& b : st->branches) {
      bool new_finish = b.finished() && !b.finish_delivered;
      if (b.delivered == b.tokens.size() && !new_finish) continue;
      BranchDelta d;
      d.index = b.index;
      d.token_ids.assign(b.tokens.begin() + b.delivered, b.tokens.end());
      b.delivered = b.tokens.size();
      d.logprobs = std::move(b.pending_logprobs);
      b.pending_logprobs.clear();
      if (new_finish) {
        d.finish_reason = b.finish;
        if (b.finish == FinishReason::kStop) d.stop_token_id = b.stop_token_id;
        b.finish_delivered = true;
      }
      o.branches.push_back(std::move(d));
    }
    if (st->all_finished()) {
      o.finished = true;
      Usage u;
      u.prompt_tokens = st->prompt_len();
      for (const BranchState& b : st->branches) u.completion_tokens += b.completion_tokens;
      const Clock::time_point arrival = st->request->arrival();
      if (st->has_first_token) {
        u.time_to_first_token_s = Seconds(arrival, st->first_token);
        u.prefill_time_s = Seconds(st->prefill_start, st->first_token);
        u.decode_time_s = Seconds(st->first_token, now);
      }
      u.end_to_end_s = Seconds(arrival, now);
      o.usage = u;
      bool errored = false, aborted = false;
      for (const BranchState& b : st->branches) {
        errored |= b.finish == FinishReason::kError;
        aborted |= b.finish == FinishReason::kAbort;
      }
      if (errored) o.error = last_error_.empty() ? "the model failed" : last_error_;
      if (!errored && !aborted) metrics_.finished += 1;  // aborts and errors are counted where they happen
    }
    out->push_back(std::move(o));
    if (out->back().finished) states_.erase(out->back().request_id);
  }
  touched_.clear();
}

std::vector<RequestOutput> Engine::Step() {
  const Clock::time_point start = Clock::now();
  std::vector<RequestOutput> out = std::move(pending_outputs_);
  pending_outputs_.clear();
  bool acted = false;
  try {
    acted = PrefillAction();
    if (!acted) acted = DecodeAction();
    if (!acted && active_.size() == 1) {
      // The only request holding pages cannot grow into the rest of the cache (its n branches
      // cannot fork): it never will.
      RequestState* st = active_.front();
      last_error_ = "the request does not fit in the KV cache (max_total_sequence_length " +
                    std::to_string(config_.max_total_sequence_length) + ")";
      FinishRequest(st, FinishReason::kError, last_error_);
      metrics_.finished += 1;
    } else if (!acted && active_.empty() && !waiting_.empty()) {
      // Nothing holds a page, yet the oldest waiting request cannot start: it never will.
      RequestState* st = waiting_.front();
      last_error_ = "the request does not fit in the KV cache (max_total_sequence_length " +
                    std::to_string(config_.max_total_sequence_length) + ")";
      FinishRequest(st, FinishReason::kError, last_error_);
      metrics_.finished += 1;
    } else if (!acted && !active_.empty()) {
      // Prefilling requests hold pages that none of them can grow into: free the newest.
      Preempt(active_.back());
    }
  } catch (const std::exception& e) {
    FailActive(std::string("the model failed: ") + e.what());
  }
  CollectOutputs(&out);
  metrics_.steps += acted ? 1 : 0;
  metrics_.step_time_s += Seconds(start, Clock::now());
  return out;
}

EngineMetrics Engine::Metrics() const {
  EngineMetrics m = metrics_;
  m.waiting = static_cast<int64_t>(waiting_.size());
  m.running = static_cast<int64_t>(active_.size());
  m.kv_pages_used = m.kv_pages_total - model_->AvailablePages();
  return m;
}

}  // namespace spindle

#include "threaded_engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>
#include <utility>

namespace spindle {

std::unique_ptr<ThreadedEngine> ThreadedEngine::Create(const EngineConfig& config, Callback callback,
                                                       Status* status) {
  if (!callback) {
    *status = Status::Invalid("callback", "a callback is required");
    return nullptr;
  }
  std::unique_ptr<ThreadedEngine> te(new ThreadedEngine());
  te->engine_ = Engine::Create(config, status);
  if (!status->ok()) return nullptr;
  te->callback_ = std::move(callback);
  te->metrics_ = te->engine_->Metrics();
  te->SetLimitsLocked();
  return te;
}

void ThreadedEngine::SetLimitsLocked() {
  if (engine_) {
    output_interval_us_.store(engine_->config().output_interval_us, std::memory_order_relaxed);
    output_budget_per_s_.store(engine_->config().output_budget_per_s, std::memory_order_relaxed);
    limits_ = std::make_shared<const Limits>(Limits{engine_->model_info(), engine_->config(), engine_->Metrics().kv_pages_total});
  } else {
    limits_ = nullptr;
  }
}

std::shared_ptr<const ThreadedEngine::Limits> ThreadedEngine::limits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limits_;
}

void ThreadedEngine::Push(Instruction ins) {
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(ins));
    notify = loop_waiting_;
  }
  if (notify) cv_.notify_one();
}

Status ThreadedEngine::AddRequest(RequestPtr request) {
  std::shared_ptr<const Limits> limits = this->limits();
  if (!limits) return Status::Unavailable("no model is loaded");
  // The limits are an immutable snapshot; the step loop validates again in case of a reload since.
  Status s = ValidateRequest(*request, limits->model, limits->config, limits->kv_pages_total);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return Status::Unavailable("the engine is shutting down");
    if (!live_ids_.insert(request->id()).second) return Status::Duplicate(request->id());
  }
  Push(Instruction{Kind::kAdd, std::move(request), "", {}, nullptr});
  return Status::OK();
}

void ThreadedEngine::AbortRequest(const std::string& request_id) {
  Push(Instruction{Kind::kAbort, nullptr, request_id, {}, nullptr});
}

void ThreadedEngine::Reset() {
  // Returns once the loop has aborted everything and published the metrics of the empty engine.
  PushAndWait(Instruction{Kind::kReset, nullptr, "", {}, nullptr});
}

Status ThreadedEngine::PushAndWait(Instruction ins) {
  ins.done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = ins.done->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (exit_) return Status::Unavailable("the engine loops have stopped");
    queue_.push_back(std::move(ins));
  }
  cv_.notify_one();
  return result.get();
}

Status ThreadedEngine::Reload(const EngineConfig& config) {
  return PushAndWait(Instruction{Kind::kReload, nullptr, "", config, nullptr});
}

Status ThreadedEngine::Unload() { return PushAndWait(Instruction{Kind::kUnload, nullptr, "", {}, nullptr}); }

namespace {

RequestOutput ErrorFinish(const Request& request, const std::string& message) {
  RequestOutput o;
  o.request_id = request.id();
  o.finished = true;
  o.usage = Usage{};
  o.usage->prompt_tokens = static_cast<int64_t>(request.prompt().size());
  o.error = message;
  for (int64_t i = 0; i < request.config().n; ++i) {
    BranchDelta d;
    d.index = i;
    d.finish_reason = FinishReason::kError;
    o.branches.push_back(std::move(d));
  }
  return o;
}

void Append(std::vector<RequestOutput>* out, std::vector<RequestOutput> more) {
  for (RequestOutput& o : more) out->push_back(std::move(o));
}

}  // namespace

void ThreadedEngine::Apply(Instruction& ins, std::vector<RequestOutput>* out) {
  switch (ins.kind) {
    case Kind::kAdd: {
      // Validated at the edge; only a reload in between (or a broken invariant) fails here.
      Status s = engine_ ? engine_->AddRequest(ins.request) : Status::Unavailable("no model is loaded");
      if (!s.ok()) out->push_back(ErrorFinish(*ins.request, s.message));
      break;
    }
    case Kind::kAbort:
      if (engine_) engine_->AbortRequest(ins.request_id);
      break;
    case Kind::kReset:
      if (engine_) engine_->Reset();
      break;
    case Kind::kReload: {
      Status s;
      std::unique_ptr<Engine> fresh = Engine::Create(ins.config, &s);
      if (s.ok()) {
        if (engine_) {
          engine_->Reset();
          Append(out, engine_->Step());  // the ABORT finishes of what was active
        }
        engine_ = std::move(fresh);
        std::lock_guard<std::mutex> lock(mu_);
        SetLimitsLocked();
      }
      ins.done->set_value(s);
      break;
    }
    case Kind::kUnload: {
      if (engine_) {
        engine_->Reset();
        Append(out, engine_->Step());
        engine_.reset();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        SetLimitsLocked();
      }
      ins.done->set_value(Status::OK());
      break;
    }
  }
}

EngineMetrics ThreadedEngine::Metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

int64_t ThreadedEngine::NumActive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(live_ids_.size());
}

void ThreadedEngine::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void ThreadedEngine::CollectBurstLocked(std::unique_lock<std::mutex>& lock) {
  // The engine is idle and something woke it. If it is a request, more may be on the way (a client
  // opening several streams at once): wait while they keep coming, so they share the first prefill
  // instead of the first one starting a step alone and the others queueing behind it.
  const int64_t window_us = engine_ ? engine_->config().admission_window_us : 0;
  if (window_us <= 0) return;
  auto holdable = [&] {
    for (const Instruction& ins : queue_) {
      if (ins.kind != Kind::kAdd && ins.kind != Kind::kAbort) return false;  // a caller blocks on it
    }
    return true;
  };
  if (!holdable()) return;
  const auto quiet = std::chrono::microseconds(std::max<int64_t>(1, window_us / 8));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(window_us);
  // Waiting longer cannot make the first step larger once the queued requests fill its sequences or its
  // prefill budget: start then.
  const size_t full = static_cast<size_t>(engine_->config().max_num_sequence);
  const int64_t chunk = engine_->config().prefill_chunk_size;
  int64_t prompt_tokens = 0;
  size_t seen = 0;
  auto count = [&] {
    for (; seen < queue_.size(); ++seen) {
      if (queue_[seen].kind == Kind::kAdd) prompt_tokens += static_cast<int64_t>(queue_[seen].request->prompt().size());
    }
    return seen < full && prompt_tokens < chunk;
  };
  while (!exit_ && count()) {
    auto until = std::min(deadline, std::chrono::steady_clock::now() + quiet);
    if (!cv_.wait_until(lock, until, [&] { return exit_ || queue_.size() != seen; })) break;  // quiet
    if (!holdable() || std::chrono::steady_clock::now() >= deadline) break;
  }
}

void ThreadedEngine::RunBackgroundLoop() {
  std::vector<Instruction> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      loop_waiting_ = true;
      cv_.wait(lock, [&] { return exit_ || !queue_.empty() || has_work_; });
      if (!has_work_ && !exit_) CollectBurstLocked(lock);
      loop_waiting_ = false;
      if (exit_) {
        for (Instruction& ins : queue_) {
          if (ins.done) ins.done->set_value(Status::Unavailable("the engine loops have stopped"));
        }
        queue_.clear();
        break;
      }
      batch.swap(queue_);
    }
    std::vector<RequestOutput> out;
    std::vector<std::shared_ptr<std::promise<Status>>> settled;  // resets, answered after publishing
    for (Instruction& ins : batch) {
      Apply(ins, &out);
      if (ins.kind == Kind::kReset && ins.done) settled.push_back(std::move(ins.done));
    }
    batch.clear();
    if (engine_) Append(&out, engine_->Step());
    EngineMetrics m = engine_ ? engine_->Metrics() : EngineMetrics();
    const bool has_output = !out.empty();
    bool wake_stream = false;
    {
      // Both locks (always mu_ then out_mu_): a finished id leaves live_ids_ in the same critical
      // section that queues its finish, so WaitIdle never sees neither.
      std::lock_guard<std::mutex> lock(mu_);
      metrics_ = m;
      has_work_ = engine_ && !engine_->Empty();
      for (const RequestOutput& o : out) {
        if (o.finished) live_ids_.erase(o.request_id);
      }
      if (has_output) {
        std::lock_guard<std::mutex> out_lock(out_mu_);
        // A stream-back loop that sleeps until its next paced delivery is woken only for output that
        // may not wait (see RunBackgroundStreamBackLoop); otherwise every step would wake it.
        wake_stream = stream_wait_ != StreamWait::kPaced;
        for (RequestOutput& o : out) {
          if (!wake_stream && UrgentLocked(o)) wake_stream = true;
          outputs_.push_back(std::move(o));
        }
      }
    }
    if (wake_stream) out_cv_.notify_one();
    for (auto& done : settled) done->set_value(Status::OK());
  }
}

void ThreadedEngine::RunBackgroundStreamBackLoop() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point last_delivery{};
  while (true) {
    std::vector<RequestOutput> batch;
    bool paced = false;
    {
      std::unique_lock<std::mutex> lock(out_mu_);
      size_t scanned = 0;  // outputs_ only grows until the swap below
      auto urgent = [&] {
        for (; scanned < outputs_.size(); ++scanned) {
          if (UrgentLocked(outputs_[scanned])) return true;
        }
        return false;
      };
      // Wait until there is output that may go now. While requests are being paced, sleep until the next
      // delivery is due and let the engine loop wake us early only for urgent output: one wake-up per
      // delivery instead of one per step.
      while (true) {
        const int64_t budget = output_budget_per_s_.load(std::memory_order_relaxed);
        int64_t interval_us = output_interval_us_.load(std::memory_order_relaxed);
        paced = interval_us > 0 || budget > 0;
        if (exit_stream_) break;
        if (!paced) {
          if (!outputs_.empty()) break;
        } else {
          if (budget > 0) {  // n paced requests: one output each per delivery, at most `budget` per second
            interval_us = std::max<int64_t>(interval_us, static_cast<int64_t>(started_.size()) * 1'000'000 / budget);
          }
          const Clock::time_point due = last_delivery + std::chrono::microseconds(interval_us);
          const Clock::time_point now = Clock::now();
          if (!outputs_.empty() && (now >= due || urgent())) break;
          if (now < due && !started_.empty()) {  // (with output queued, all of it is for started requests)
            stream_wait_ = StreamWait::kPaced;
            out_cv_.wait_until(lock, due);
            stream_wait_ = StreamWait::kBusy;
            continue;
          }
        }
        stream_wait_ = StreamWait::kIdle;  // the next output goes at once: wake on any
        out_cv_.wait(lock);
        stream_wait_ = StreamWait::kBusy;
      }
      if (outputs_.empty()) break;  // exiting and nothing left to deliver
      batch.swap(outputs_);
      delivering_ = true;
      if (paced) {
        // Requests that have had tokens delivered and no finish yet: only their further tokens may wait.
        for (const RequestOutput& o : batch) {
          if (o.finished) {
            started_.erase(o.request_id);
            continue;
          }
          for (const BranchDelta& d : o.branches) {
            if (!d.token_ids.empty()) {
              started_.insert(o.request_id);
              break;
            }
          }
        }
      } else {
        started_.clear();  // kept only while outputs are paced
      }
    }
    if (paced) {
      CoalesceOutputs(&batch);
      last_delivery = Clock::now();
    }
    try {
      callback_(std::move(batch));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "spindle: the output callback raised: %s\n", e.what());
    }
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      delivering_ = false;
    }
  }
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    delivering_ = false;
  }
}

void ThreadedEngine::ExitBackgroundLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    exit_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    exit_stream_ = true;
  }
  out_cv_.notify_all();
}

bool ThreadedEngine::WaitIdle(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::lock_guard<std::mutex> out_lock(out_mu_);
      if (live_ids_.empty() && queue_.empty() && outputs_.empty() && !delivering_) return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace spindle

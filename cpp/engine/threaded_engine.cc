#include "threaded_engine.h"

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
  return te;
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
  Status s = engine_->Validate(*request);  // reads only the immutable config and model facts
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return Status::Unavailable("the engine is shutting down");
    if (!live_ids_.insert(request->id()).second) return Status::Duplicate(request->id());
  }
  Push(Instruction{Kind::kAdd, std::move(request), ""});
  return Status::OK();
}

void ThreadedEngine::AbortRequest(const std::string& request_id) { Push(Instruction{Kind::kAbort, nullptr, request_id}); }

void ThreadedEngine::Reset() { Push(Instruction{Kind::kReset, nullptr, ""}); }

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

void ThreadedEngine::RunBackgroundLoop() {
  std::vector<Instruction> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      loop_waiting_ = true;
      cv_.wait(lock, [&] { return exit_ || !queue_.empty() || has_work_; });
      loop_waiting_ = false;
      if (exit_) break;
      batch.swap(queue_);
    }
    std::vector<RequestOutput> out;
    for (Instruction& ins : batch) {
      switch (ins.kind) {
        case Kind::kAdd: {
          Status s = engine_->AddRequest(ins.request);
          if (!s.ok()) {  // validated at the edge, so only a broken invariant gets here
            RequestOutput o;
            o.request_id = ins.request->id();
            o.finished = true;
            o.usage = Usage{};
            o.error = s.message;
            for (int64_t i = 0; i < ins.request->config().n; ++i) {
              BranchDelta d;
              d.index = i;
              d.finish_reason = FinishReason::kError;
              o.branches.push_back(std::move(d));
            }
            out.push_back(std::move(o));
          }
          break;
        }
        case Kind::kAbort: engine_->AbortRequest(ins.request_id); break;
        case Kind::kReset: engine_->Reset(); break;
      }
    }
    batch.clear();
    std::vector<RequestOutput> stepped = engine_->Step();
    if (out.empty()) {
      out = std::move(stepped);
    } else {
      for (RequestOutput& o : stepped) out.push_back(std::move(o));
    }
    EngineMetrics m = engine_->Metrics();
    bool has_output = !out.empty();
    {
      // Both locks (always mu_ then out_mu_): a finished id leaves live_ids_ in the same critical
      // section that queues its finish, so WaitIdle never sees neither.
      std::lock_guard<std::mutex> lock(mu_);
      metrics_ = m;
      has_work_ = !engine_->Empty();
      for (const RequestOutput& o : out) {
        if (o.finished) live_ids_.erase(o.request_id);
      }
      if (has_output) {
        std::lock_guard<std::mutex> out_lock(out_mu_);
        for (RequestOutput& o : out) outputs_.push_back(std::move(o));
      }
    }
    if (has_output) out_cv_.notify_one();
  }
}

void ThreadedEngine::RunBackgroundStreamBackLoop() {
  while (true) {
    std::vector<RequestOutput> batch;
    {
      std::unique_lock<std::mutex> lock(out_mu_);
      out_cv_.wait(lock, [&] { return exit_stream_ || !outputs_.empty(); });
      if (outputs_.empty()) break;  // exiting and nothing left to deliver
      batch.swap(outputs_);
      delivering_ = true;
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

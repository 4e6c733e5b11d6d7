// ThreadedEngine: an Engine driven by a background step loop. Other threads only enqueue
// instructions; outputs go to one callback on a separate stream-back loop, batched, so a slow
// callback never stalls stepping. No model logic lives here.
#ifndef SPINDLE_ENGINE_THREADED_ENGINE_H_
#define SPINDLE_ENGINE_THREADED_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine.h"

namespace spindle {

class ThreadedEngine {
 public:
  using Callback = std::function<void(std::vector<RequestOutput>)>;

  static std::unique_ptr<ThreadedEngine> Create(const EngineConfig& config, Callback callback, Status* status);

  /*! \brief Validate and enqueue; invalid input, a duplicate active id or a closing engine fail here. */
  Status AddRequest(RequestPtr request);
  /*! \brief Idempotent; applied between steps. */
  void AbortRequest(const std::string& request_id);
  /*! \brief Abort every request (each gets its finish) and empty the KV cache; blocks until the loop has
   *  applied it, so the metrics read afterwards show the empty engine. */
  void Reset();
  /*! \brief The metrics after the latest step. */
  EngineMetrics Metrics() const;
  /*!
   * \brief Load another model / config, blocking until done. Active requests end with ABORT. On failure
   * the current engine stays. Returns Unavailable once the loops have exited.
   */
  Status Reload(const EngineConfig& config);
  /*! \brief Drop the model (active requests end with ABORT); adds fail until the next Reload. Blocks. */
  Status Unload();

  /*! \brief The step loop; returns after ExitBackgroundLoop. Run it on a thread of its own. */
  void RunBackgroundLoop();
  /*! \brief The loop delivering outputs to the callback; returns after ExitBackgroundLoop. */
  void RunBackgroundStreamBackLoop();
  /*! \brief Stop both loops after the current step; queued outputs are still delivered. */
  void ExitBackgroundLoop();

  /*! \brief Reject new requests from now on (shutdown, first stage). */
  void StopAccepting();
  /*! \brief Wait until no request is active and every output was delivered; false on timeout. */
  bool WaitIdle(double timeout_s);
  /*! \brief Requests added and not yet finished. */
  int64_t NumActive() const;

  /*! \brief What requests are validated against: the loaded model's facts and the resolved config. */
  struct Limits {
    ModelInfo model;
    EngineConfig config;
    int64_t kv_pages_total;
  };
  /*! \brief The current limits, or nullptr while no model is loaded. */
  std::shared_ptr<const Limits> limits() const;

 private:
  enum class Kind { kAdd, kAbort, kReset, kReload, kUnload };
  struct Instruction {
    Kind kind;
    RequestPtr request;
    std::string request_id;
    EngineConfig config;                          // kReload
    std::shared_ptr<std::promise<Status>> done;   // kReload, kUnload: the blocked caller
  };

  ThreadedEngine() = default;
  void Push(Instruction ins);
  Status PushAndWait(Instruction ins);
  void Apply(Instruction& ins, std::vector<RequestOutput>* out);
  void SetLimitsLocked();
  void CollectBurstLocked(std::unique_lock<std::mutex>& lock);
  // Whether a paced delivery may not wait for `o` (a finish, or a request's first tokens). Needs out_mu_.
  bool UrgentLocked(const RequestOutput& o) const {
    return o.finished || started_.count(o.request_id) == 0;
  }

  std::unique_ptr<Engine> engine_;
  Callback callback_;
  std::atomic<int64_t> output_interval_us_{0};  // the loaded config's; read by the stream-back loop
  std::atomic<int64_t> output_budget_per_s_{0};  // likewise

  // Instruction queue and request bookkeeping, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Instruction> queue_;
  std::unordered_set<std::string> live_ids_;
  bool has_work_ = false;
  bool loop_waiting_ = false;
  bool exit_ = false;
  bool accepting_ = true;
  EngineMetrics metrics_;
  std::shared_ptr<const Limits> limits_;

  // Outputs on their way to the callback, guarded by out_mu_.
  std::mutex out_mu_;
  std::condition_variable out_cv_;
  std::vector<RequestOutput> outputs_;
  bool delivering_ = false;
  bool exit_stream_ = false;
  // How the stream-back loop waits: kIdle for any output, kPaced until its next delivery is due (the
  // engine loop wakes it early only for a first token or a finish), kBusy not at all.
  enum class StreamWait { kBusy, kIdle, kPaced };
  StreamWait stream_wait_ = StreamWait::kBusy;
  // Paced requests that have had tokens delivered and no finish yet (only their tokens may wait).
  std::unordered_set<std::string> started_;
};

}  // namespace spindle

#endif  // SPINDLE_ENGINE_THREADED_ENGINE_H_

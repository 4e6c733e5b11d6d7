// ThreadedEngine: an Engine driven by a background step loop. Other threads only enqueue
// instructions; outputs go to one callback on a separate stream-back loop, batched, so a slow
// callback never stalls stepping. No model logic lives here.
#ifndef SPINDLE_ENGINE_THREADED_ENGINE_H_
#define SPINDLE_ENGINE_THREADED_ENGINE_H_

#include <condition_variable>
#include <functional>
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
  /*! \brief Abort every request (each gets its finish) and empty the KV cache. */
  void Reset();
  /*! \brief The metrics after the latest step. */
  EngineMetrics Metrics() const;

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
  const EngineConfig& config() const { return engine_->config(); }
  const ModelInfo& model_info() const { return engine_->model_info(); }

 private:
  enum class Kind { kAdd, kAbort, kReset };
  struct Instruction {
    Kind kind;
    RequestPtr request;
    std::string request_id;
  };

  ThreadedEngine() = default;
  void Push(Instruction ins);

  std::unique_ptr<Engine> engine_;
  Callback callback_;

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

  // Outputs on their way to the callback, guarded by out_mu_.
  std::mutex out_mu_;
  std::condition_variable out_cv_;
  std::vector<RequestOutput> outputs_;
  bool delivering_ = false;
  bool exit_stream_ = false;
};

}  // namespace spindle

#endif  // SPINDLE_ENGINE_THREADED_ENGINE_H_

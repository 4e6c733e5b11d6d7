// The single-threaded engine core: requests in, per-step output deltas out. It knows nothing of
// threads, Python or gRPC.
#ifndef SPINDLE_ENGINE_ENGINE_H_
#define SPINDLE_ENGINE_ENGINE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.h"
#include "model.h"
#include "output.h"
#include "request.h"
#include "request_state.h"

namespace spindle {

class Engine {
 public:
  /*! \brief Load the model and size the KV cache; nullptr with `status` naming the field on failure. */
  static std::unique_ptr<Engine> Create(const EngineConfig& config, Status* status);

  /*! \brief Check a request without adding it (no state is read: safe from any thread). */
  Status Validate(const Request& request) const;
  /*! \brief Queue a request; fails on invalid input or an id that is already active. */
  Status AddRequest(RequestPtr request);
  /*! \brief Abort a request wherever it is; unknown or finished ids are ignored. Its finish comes out of Step. */
  void AbortRequest(const std::string& request_id);
  /*! \brief Run one action (prefill, else decode) and return the output deltas, finishes included. */
  std::vector<RequestOutput> Step();
  /*! \brief Abort every request (each gets its finish from the next Step) and empty the KV cache. */
  void Reset();
  EngineMetrics Metrics() const;
  /*! \brief No request is active and no output is waiting to be returned. */
  bool Empty() const { return states_.empty() && pending_outputs_.empty(); }
  bool HasActiveRequest(const std::string& id) const { return states_.count(id) != 0; }

  const EngineConfig& config() const { return config_; }
  const ModelInfo& model_info() const { return model_->info(); }

 private:
  Engine() = default;
  // Actions, in the order Step tries them (actions/prefill.cc, actions/decode.cc).
  bool PrefillAction();
  bool DecodeAction();

  void Admit(RequestState* st);
  void Preempt(RequestState* st);
  void ReleaseSequences(RequestState* st);
  void SampleBranch(RequestState* st, BranchState* b, const float* logits);
  void FinishBranch(RequestState* st, BranchState* b, FinishReason reason);
  void FinishRequest(RequestState* st, FinishReason reason, const std::string& error);
  void MarkTouched(RequestState* st);
  void CollectOutputs(std::vector<RequestOutput>* out);
  void UpdateStatus(RequestState* st);
  void FailActive(const std::string& message);
  int64_t NewSequence();
  void InsertSorted(std::deque<RequestState*>* queue, RequestState* st);
  void RemoveFrom(std::deque<RequestState*>* queue, RequestState* st);

  EngineConfig config_;
  std::unique_ptr<Model> model_;
  std::unordered_map<std::string, std::unique_ptr<RequestState>> states_;
  std::deque<RequestState*> waiting_;  // by arrival; preempted requests keep their place
  std::deque<RequestState*> active_;   // prefilling or running, by arrival
  std::vector<RequestState*> touched_;
  std::vector<RequestOutput> pending_outputs_;
  EngineMetrics metrics_;
  uint64_t next_order_ = 0;
  int64_t next_seq_ = 0;
  std::vector<float> scratch_;
  std::string last_error_;
};

}  // namespace spindle

#endif  // SPINDLE_ENGINE_ENGINE_H_

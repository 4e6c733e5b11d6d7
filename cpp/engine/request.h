// The immutable request: id, prompt token ids and generation config. Mutable progress lives in
// RequestState (request_state.h).
#ifndef SPINDLE_ENGINE_REQUEST_H_
#define SPINDLE_ENGINE_REQUEST_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config.h"

namespace spindle {

using Clock = std::chrono::steady_clock;

class Request {
 public:
  Request(std::string id, std::vector<int32_t> prompt, GenerationConfig config)
      : id_(std::move(id)), prompt_(std::move(prompt)), config_(std::move(config)), arrival_(Clock::now()) {
    prompt_unique_ = prompt_;
    std::sort(prompt_unique_.begin(), prompt_unique_.end());
    prompt_unique_.erase(std::unique(prompt_unique_.begin(), prompt_unique_.end()), prompt_unique_.end());
  }

  const std::string& id() const { return id_; }
  const std::vector<int32_t>& prompt() const { return prompt_; }
  /*! \brief The distinct prompt tokens, sorted (for the repetition penalty). */
  const std::vector<int32_t>& prompt_unique() const { return prompt_unique_; }
  const GenerationConfig& config() const { return config_; }
  Clock::time_point arrival() const { return arrival_; }

 private:
  std::string id_;
  std::vector<int32_t> prompt_;
  std::vector<int32_t> prompt_unique_;
  GenerationConfig config_;
  Clock::time_point arrival_;
};

using RequestPtr = std::shared_ptr<const Request>;

/*!
 * \brief Check a request against the model and the resolved engine limits (no state involved).
 * \param kv_pages_total the KV cache size in pages; a request that could not fit in an empty cache is
 *        rejected (0 skips the check).
 */
Status ValidateRequest(const Request& request, const ModelInfo& model, const EngineConfig& engine,
                       int64_t kv_pages_total = 0);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_REQUEST_H_

// Helpers shared by the unit tests.
#ifndef SPINDLE_TESTS_TEST_UTIL_H_
#define SPINDLE_TESTS_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/request.h"
#include "engine/request_state.h"

namespace spindle {
namespace testing {

inline ModelInfo TinyModel() {
  ModelInfo m;
  m.model_type = "llama";
  m.hidden_size = 64;
  m.vocab_size = 100;
  m.context_window_size = 256;
  m.prefill_chunk_size = 64;
  m.max_batch_size = 8;
  m.eos_token_ids = {2};
  return m;
}

inline EngineConfig Resolved(const std::string& mode = "server") {
  EngineConfig c;
  c.model = "/nonexistent";
  c.mode = mode;
  EngineConfig out;
  ResolveEngineConfig(c, TinyModel(), &out);
  return out;
}

inline std::unique_ptr<RequestState> MakeState(const std::string& id, int64_t prompt_len, int64_t n = 1,
                                               uint64_t order = 0) {
  GenerationConfig g;
  g.n = n;
  std::vector<int32_t> prompt(prompt_len);
  for (int64_t i = 0; i < prompt_len; ++i) prompt[i] = static_cast<int32_t>(i % 50 + 3);
  auto st = std::make_unique<RequestState>();
  st->request = std::make_shared<const Request>(id, prompt, g);
  st->order = order;
  st->branches.resize(n);
  for (int64_t i = 0; i < n; ++i) st->branches[i].index = i;
  return st;
}

}  // namespace testing
}  // namespace spindle

#endif  // SPINDLE_TESTS_TEST_UTIL_H_

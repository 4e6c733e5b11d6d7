// CPU sampler: logit bias, repetition / frequency / presence penalties, greedy or temperature sampling
// with top-k, top-p and min-p, per-branch seeded random streams, and logprobs.
#ifndef SPINDLE_ENGINE_SAMPLER_SAMPLER_H_
#define SPINDLE_ENGINE_SAMPLER_SAMPLER_H_

#include <cstdint>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../config.h"
#include "../output.h"

namespace spindle {

/*! \brief A branch's random stream: one uniform per sampled token, whatever else is in the batch. */
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : gen_(seed) {}
  /*! \brief The stream of branch `branch` of a request seeded with `seed`. */
  static Rng ForBranch(uint64_t seed, int64_t branch);
  /*! \brief A uniform double in [0, 1) from 53 random bits (portable, unlike std distributions). */
  double Uniform() { return static_cast<double>(gen_() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  std::mt19937_64 gen_;
};

/*! \brief What the sampler needs to know of the branch's history. */
struct SamplerHistory {
  const std::vector<int32_t>* prompt_unique = nullptr;             // sorted distinct prompt tokens
  const std::unordered_map<int32_t, int32_t>* output_counts = nullptr;  // generated token -> count
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // filled when top_logprobs > 0
};

/*! \brief Index of the largest value (the first of equal maxima), vectorised; 0 when none is above -inf. */
int32_t ArgmaxFirst(const float* x, int64_t n);

/*!
 * \brief Sample one token from `vocab` float logits.
 * Logprobs are those of the distribution after logit bias and penalties, before temperature and
 * truncation. `scratch` is reused between calls to avoid allocation.
 */
SampleResult SampleToken(const float* logits, int64_t vocab, const GenerationConfig& config,
                         const SamplerHistory& history, Rng* rng, std::vector<float>* scratch);

/*! \brief Apply logit bias and penalties in place (exposed for tests). */
void ApplyLogitAdjustments(float* logits, int64_t vocab, const GenerationConfig& config,
                           const SamplerHistory& history);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_SAMPLER_SAMPLER_H_

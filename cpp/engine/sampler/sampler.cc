#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace spindle {

namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Order: higher value first, then lower token id (deterministic on ties).
struct ByValueDesc {
  const float* v;
  bool operator()(int32_t a, int32_t b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

}  // namespace

int32_t ArgmaxFirst(const float* x, int64_t n) {
  // Running maxima in 16 independent lanes (the compiler vectorises this loop), then the first index that
  // holds the maximum: the same token as a scalar scan keeping the first of equal maxima.
  constexpr int kLanes = 16;
  float lanes[kLanes];
  for (float& v : lanes) v = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = x[i + l] > lanes[l] ? x[i + l] : lanes[l];
  }
  float m = -INFINITY;
  for (float v : lanes) m = v > m ? v : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (int64_t j = 0; j < n; ++j) {
    if (x[j] == m) return static_cast<int32_t>(j);
  }
  return 0;  // no value above -inf (or NaNs only)
}

Rng Rng::ForBranch(uint64_t seed, int64_t branch) {
  return Rng(SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(branch + 1) * 0xD1B54A32D192ED03ULL));
}

void ApplyLogitAdjustments(float* x, int64_t vocab, const GenerationConfig& c, const SamplerHistory& h) {
  for (const auto& [token, bias] : c.logit_bias) {
    if (token >= 0 && token < vocab) x[token] += bias;
  }
  const float rep = static_cast<float>(c.repetition_penalty);
  auto penalize = [&](int32_t t) {
    if (t < 0 || t >= vocab) return;
    x[t] = x[t] > 0 ? x[t] / rep : x[t] * rep;
  };
  if (rep != 1.0f) {
    if (h.prompt_unique != nullptr) {
      for (int32_t t : *h.prompt_unique) penalize(t);
    }
    if (h.output_counts != nullptr) {
      for (const auto& [t, count] : *h.output_counts) {
        bool in_prompt = h.prompt_unique != nullptr &&
                         std::binary_search(h.prompt_unique->begin(), h.prompt_unique->end(), t);
        if (!in_prompt) penalize(t);
      }
    }
  }
  if ((c.frequency_penalty != 0 || c.presence_penalty != 0) && h.output_counts != nullptr) {
    for (const auto& [t, count] : *h.output_counts) {
      if (t < 0 || t >= vocab || count <= 0) continue;
      x[t] -= static_cast<float>(c.frequency_penalty * count + c.presence_penalty);
    }
  }
}

SampleResult SampleToken(const float* logits, int64_t vocab, const GenerationConfig& c, const SamplerHistory& h,
                         Rng* rng, std::vector<float>* scratch) {
  // The logits are read in place unless something adjusts them (then a copy in *scratch is adjusted).
  const bool adjust = !c.logit_bias.empty() || c.repetition_penalty != 1.0 ||
                      ((c.frequency_penalty != 0 || c.presence_penalty != 0) && h.output_counts != nullptr &&
                       !h.output_counts->empty());
  const float* x = logits;
  if (adjust) {
    scratch->assign(logits, logits + vocab);
    ApplyLogitAdjustments(scratch->data(), vocab, c, h);
    x = scratch->data();
  }

  SampleResult result;
  // Argmax (first of equal maxima), used by greedy decoding and as the softmax shift.
  const int32_t best = ArgmaxFirst(x, vocab);
  const float max_logit = x[best];

  const bool greedy = c.temperature == 0 || c.top_k == 1;
  if (greedy) {
    result.token = best;
  } else {
    // probs (unnormalised) = exp((x - max) / T), in a second buffer so that x keeps the logits.
    const float inv_t = static_cast<float>(1.0 / c.temperature);
    std::vector<float> p(vocab);
    double total = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      p[i] = std::exp((x[i] - max_logit) * inv_t);
      total += p[i];
    }
    if (c.min_p > 0) {
      const float threshold = static_cast<float>(c.min_p);  // the max prob is exp(0) = 1 before normalising
      total = 0;
      for (int64_t i = 0; i < vocab; ++i) {
        if (p[i] < threshold) p[i] = 0;
        total += p[i];
      }
    }
    const bool truncate = (c.top_k > 0 && c.top_k < vocab) || c.top_p < 1.0;
    if (!truncate) {
      double u = rng->Uniform() * total, acc = 0;
      result.token = best;
      for (int64_t i = 0; i < vocab; ++i) {
        if (p[i] == 0) continue;
        acc += p[i];
        if (u < acc) {
          result.token = static_cast<int32_t>(i);
          break;
        }
      }
    } else {
      // Candidates in descending probability. Sort a growing prefix until it covers what top-k / top-p keep.
      std::vector<int32_t> idx(vocab);
      std::iota(idx.begin(), idx.end(), 0);
      ByValueDesc order{p.data()};
      int64_t limit = c.top_k > 0 ? std::min<int64_t>(c.top_k, vocab) : vocab;
      int64_t sorted = std::min<int64_t>(limit, 64);
      const double mass_needed = c.top_p * total;
      while (true) {
        std::partial_sort(idx.begin(), idx.begin() + sorted, idx.end(), order);
        double mass = 0;
        for (int64_t i = 0; i < sorted; ++i) mass += p[idx[i]];
        if (sorted >= limit || mass >= mass_needed) break;
        sorted = std::min<int64_t>(limit, sorted * 4);
      }
      // Keep the smallest prefix whose mass reaches top_p (at least one token).
      int64_t keep = 0;
      double mass = 0;
      while (keep < sorted && p[idx[keep]] > 0) {
        mass += p[idx[keep]];
        ++keep;
        if (mass >= mass_needed) break;
      }
      if (keep == 0) keep = 1;
      double u = rng->Uniform() * mass, acc = 0;
      result.token = idx[keep - 1];
      for (int64_t i = 0; i < keep; ++i) {
        acc += p[idx[i]];
        if (u < acc) {
          result.token = idx[i];
          break;
        }
      }
    }
  }

  if (c.logprobs) {
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i] - max_logit));
    const double log_z = static_cast<double>(max_logit) + std::log(sum);
    result.logprob = static_cast<float>(x[result.token] - log_z);
    if (c.top_logprobs > 0) {
      int64_t k = std::min<int64_t>(c.top_logprobs, vocab);
      std::vector<int32_t> idx(vocab);
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), ByValueDesc{x});
      result.top.reserve(k);
      for (int64_t i = 0; i < k; ++i) result.top.emplace_back(idx[i], static_cast<float>(x[idx[i]] - log_z));
    }
  }
  return result;
}

}  // namespace spindle

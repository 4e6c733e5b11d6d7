#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "engine/sampler/sampler.h"

namespace spindle {
namespace {

std::vector<float> Logits(std::initializer_list<float> v) { return std::vector<float>(v); }

int32_t Sample(const std::vector<float>& logits, const GenerationConfig& g, Rng* rng,
               const SamplerHistory& h = SamplerHistory()) {
  std::vector<float> scratch;
  return SampleToken(logits.data(), static_cast<int64_t>(logits.size()), g, h, rng, &scratch).token;
}

std::map<int32_t, double> Frequencies(const std::vector<float>& logits, const GenerationConfig& g, int draws,
                                      uint64_t seed = 7) {
  Rng rng(seed);
  std::map<int32_t, double> f;
  for (int i = 0; i < draws; ++i) f[Sample(logits, g, &rng)] += 1.0 / draws;
  return f;
}

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  GenerationConfig g;
  g.temperature = 0;
  Rng rng(1);
  EXPECT_EQ(Sample(Logits({0.1f, 3.0f, -1.0f, 3.0f}), g, &rng), 1);
  g.temperature = 1.0;
  g.top_k = 1;  // top_k = 1 is greedy too
  EXPECT_EQ(Sample(Logits({0.1f, 2.0f, 5.0f, 3.0f}), g, &rng), 2);
}

TEST(Sampler, ArgmaxFirstMatchesAScalarScan) {
  Rng rng(3);
  for (int64_t n : {1, 5, 16, 17, 31, 49152, 49153}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(n);
      for (float& v : x) v = static_cast<float>(static_cast<int>(rng.Uniform() * 50) - 25);  // many ties
      int32_t want = 0;
      for (int64_t i = 1; i < n; ++i) {
        if (x[i] > x[want]) want = static_cast<int32_t>(i);
      }
      EXPECT_EQ(ArgmaxFirst(x.data(), n), want) << "n=" << n;
    }
  }
  std::vector<float> inf(40, -INFINITY);
  EXPECT_EQ(ArgmaxFirst(inf.data(), 40), 0);
  inf[33] = -1e30f;
  EXPECT_EQ(ArgmaxFirst(inf.data(), 40), 33);
}

TEST(Sampler, TemperatureSamplingFollowsTheSoftmax) {
  GenerationConfig g;
  g.temperature = 2.0;
  std::vector<float> logits = Logits({0.0f, 1.0f, 2.0f, 3.0f});
  auto f = Frequencies(logits, g, 40000);
  double z = 0;
  for (float x : logits) z += std::exp(x / 2.0);
  for (int t = 0; t < 4; ++t) {
    double p = std::exp(logits[t] / 2.0) / z;
    EXPECT_NEAR(f[t], p, 0.012) << "token " << t;
  }
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  GenerationConfig g;
  g.top_k = 2;
  auto f = Frequencies(Logits({1.0f, 3.0f, 0.5f, 2.9f, -1.0f}), g, 5000);
  std::set<int32_t> seen;
  for (auto& [t, _] : f) seen.insert(t);
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
  EXPECT_NEAR(f[1], std::exp(3.0) / (std::exp(3.0) + std::exp(2.9)), 0.03);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  GenerationConfig g;
  g.top_p = 0.7;  // probs ~ 0.64, 0.24, 0.09, 0.03: the nucleus is {0, 1}
  std::vector<float> logits = Logits({3.0f, 2.0f, 1.0f, 0.0f});
  auto f = Frequencies(logits, g, 8000);
  EXPECT_EQ(f.count(2) + f.count(3), 0u);
  double p0 = std::exp(3.0), p1 = std::exp(2.0);
  EXPECT_NEAR(f[0], p0 / (p0 + p1), 0.02);
  g.top_p = 0.5;  // the best token alone covers it
  EXPECT_EQ(Frequencies(logits, g, 500).size(), 1u);
}

TEST(Sampler, TopPOnALargeVocabularySortsEnough) {
  // A flat vocabulary of 1000 tokens: the nucleus needs more than the first sorted block.
  std::vector<float> logits(1000, 0.0f);
  GenerationConfig g;
  g.top_p = 0.5;
  auto f = Frequencies(logits, g, 3000);
  int32_t max_token = f.rbegin()->first;
  EXPECT_LT(max_token, 500 + 2);  // ties are ordered by id: only the lower half is kept
  EXPECT_GT(max_token, 400);
  EXPECT_GT(f.size(), 400u);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  GenerationConfig g;
  g.min_p = 0.2;  // keep tokens with p >= 0.2 * p_max: exp(-1) = 0.37 stays, exp(-2) = 0.14 goes
  auto f = Frequencies(Logits({0.0f, -1.0f, -2.0f, -5.0f}), g, 5000);
  EXPECT_EQ(f.count(2) + f.count(3), 0u);
  EXPECT_GT(f[1], 0.15);
}

TEST(Sampler, LogitBiasCanForceAToken) {
  GenerationConfig g;
  g.temperature = 0;
  g.logit_bias = {{3, 100.0f}};
  Rng rng(1);
  EXPECT_EQ(Sample(Logits({5.0f, 1.0f, 0.0f, -10.0f}), g, &rng), 3);
  g.logit_bias = {{0, -100.0f}};
  EXPECT_EQ(Sample(Logits({5.0f, 1.0f, 0.0f, -10.0f}), g, &rng), 1);
}

TEST(Sampler, PenaltiesFollowTheirDefinitions) {
  std::vector<int32_t> prompt = {1};
  std::unordered_map<int32_t, int32_t> counts = {{2, 3}, {3, 1}};
  SamplerHistory h{&prompt, &counts};
  GenerationConfig g;
  g.repetition_penalty = 2.0;
  std::vector<float> x = Logits({1.0f, 4.0f, -2.0f, 6.0f, 1.0f});
  ApplyLogitAdjustments(x.data(), 5, g, h);
  EXPECT_FLOAT_EQ(x[0], 1.0f);   // unseen
  EXPECT_FLOAT_EQ(x[1], 2.0f);   // prompt token, positive: divided
  EXPECT_FLOAT_EQ(x[2], -4.0f);  // generated token, negative: multiplied
  EXPECT_FLOAT_EQ(x[3], 3.0f);
  g = GenerationConfig();
  g.frequency_penalty = 0.5;
  g.presence_penalty = 1.0;
  x = Logits({1.0f, 4.0f, -2.0f, 6.0f, 1.0f});
  ApplyLogitAdjustments(x.data(), 5, g, h);
  EXPECT_FLOAT_EQ(x[1], 4.0f);                // prompt tokens are not counted by these
  EXPECT_FLOAT_EQ(x[2], -2.0f - 1.5f - 1.0f);  // 3 occurrences
  EXPECT_FLOAT_EQ(x[3], 6.0f - 0.5f - 1.0f);
}

TEST(Sampler, SameSeedSameTokensAndBranchesDiffer) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = static_cast<float>(i % 7) * 0.3f;
  GenerationConfig g;
  auto draw = [&](Rng rng) {
    std::vector<int32_t> out;
    for (int i = 0; i < 40; ++i) out.push_back(Sample(logits, g, &rng));
    return out;
  };
  EXPECT_EQ(draw(Rng::ForBranch(42, 0)), draw(Rng::ForBranch(42, 0)));
  EXPECT_NE(draw(Rng::ForBranch(42, 0)), draw(Rng::ForBranch(42, 1)));
  EXPECT_NE(draw(Rng::ForBranch(42, 0)), draw(Rng::ForBranch(43, 0)));
}

TEST(Sampler, GreedyDoesNotConsumeRandomness) {
  GenerationConfig greedy;
  greedy.temperature = 0;
  Rng a = Rng::ForBranch(9, 0), b = Rng::ForBranch(9, 0);
  Sample(Logits({1.0f, 2.0f}), greedy, &a);
  EXPECT_EQ(a.Uniform(), b.Uniform());
}

TEST(Sampler, LogprobsAreNormalisedAndTopIsSorted) {
  GenerationConfig g;
  g.temperature = 0;
  g.logprobs = true;
  g.top_logprobs = 3;
  std::vector<float> logits = Logits({0.5f, 2.0f, -1.0f, 1.5f, 0.0f});
  std::vector<float> scratch;
  Rng rng(0);
  SampleResult r = SampleToken(logits.data(), 5, g, SamplerHistory(), &rng, &scratch);
  double z = 0;
  for (float x : logits) z += std::exp(x);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, 2.0 - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].first, 1);
  EXPECT_EQ(r.top[1].first, 3);
  EXPECT_EQ(r.top[2].first, 0);
  EXPECT_NEAR(r.top[1].second, 1.5 - std::log(z), 1e-5);
  g.top_logprobs = 0;
  r = SampleToken(logits.data(), 5, g, SamplerHistory(), &rng, &scratch);
  EXPECT_TRUE(r.top.empty());
}

TEST(Sampler, UniformIsInTheUnitInterval) {
  Rng rng(123);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

}  // namespace
}  // namespace spindle

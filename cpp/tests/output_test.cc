#include <gtest/gtest.h>

#include "engine/output.h"

namespace spindle {
namespace {

RequestOutput Out(const std::string& id, std::vector<int32_t> tokens, FinishReason finish = FinishReason::kNone,
                  int64_t index = 0) {
  RequestOutput o;
  o.request_id = id;
  BranchDelta d;
  d.index = index;
  d.token_ids = std::move(tokens);
  d.finish_reason = finish;
  o.branches.push_back(std::move(d));
  o.finished = finish != FinishReason::kNone;
  return o;
}

TEST(Coalesce, MergesARequestsStepsInOrder) {
  std::vector<RequestOutput> v;
  v.push_back(Out("a", {1}));
  v.push_back(Out("b", {10}));
  v.push_back(Out("a", {2, 3}));
  v.push_back(Out("b", {11}));
  v.push_back(Out("a", {4}));
  CoalesceOutputs(&v);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].request_id, "a");
  EXPECT_EQ(v[0].branches[0].token_ids, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(v[1].request_id, "b");
  EXPECT_EQ(v[1].branches[0].token_ids, (std::vector<int32_t>{10, 11}));
  EXPECT_FALSE(v[0].finished);
}

TEST(Coalesce, TheFinishUsageAndLogprobsOfLaterStepsAreKept) {
  std::vector<RequestOutput> v;
  v.push_back(Out("a", {1}));
  v[0].branches[0].logprobs.push_back(TokenLogprob{1, -0.5f, {}});
  v[0].want_logprobs = true;
  v.push_back(Out("a", {2}, FinishReason::kNone, 1));  // a second branch appears later
  v.push_back(Out("a", {}, FinishReason::kStop));
  v.back().branches[0].stop_token_id = 7;
  v.back().finished = false;  // branch 1 still runs
  v.push_back(Out("a", {3}, FinishReason::kLength, 1));
  v.back().branches[0].logprobs.push_back(TokenLogprob{3, -1.5f, {}});
  v.back().usage = Usage{5, 3, 0, 0, 0, 0};
  CoalesceOutputs(&v);
  ASSERT_EQ(v.size(), 1u);
  const RequestOutput& o = v[0];
  EXPECT_TRUE(o.finished);
  EXPECT_TRUE(o.want_logprobs);
  ASSERT_EQ(o.branches.size(), 2u);
  EXPECT_EQ(o.branches[0].token_ids, (std::vector<int32_t>{1}));
  EXPECT_EQ(o.branches[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(o.branches[0].stop_token_id, 7);
  EXPECT_EQ(o.branches[1].index, 1);
  EXPECT_EQ(o.branches[1].token_ids, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(o.branches[1].finish_reason, FinishReason::kLength);
  ASSERT_EQ(o.branches[1].logprobs.size(), 1u);
  EXPECT_EQ(o.branches[1].logprobs[0].token_id, 3);
  ASSERT_TRUE(o.usage.has_value());
  EXPECT_EQ(o.usage->completion_tokens, 3);
}

TEST(Coalesce, NothingIsMergedIntoAFinish) {
  // The id finished and was added again: its new output is a request of its own, after the finish.
  std::vector<RequestOutput> v;
  v.push_back(Out("a", {1}));
  v.push_back(Out("a", {2}, FinishReason::kLength));
  v.push_back(Out("a", {9}));
  v.push_back(Out("a", {10}));
  CoalesceOutputs(&v);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_TRUE(v[0].finished);
  EXPECT_EQ(v[0].branches[0].token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(v[1].finished);
  EXPECT_EQ(v[1].branches[0].token_ids, (std::vector<int32_t>{9, 10}));
}

TEST(Coalesce, AnErrorIsKept) {
  std::vector<RequestOutput> v;
  v.push_back(Out("a", {1}));
  v.push_back(Out("a", {}, FinishReason::kError));
  v.back().error = "boom";
  CoalesceOutputs(&v);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].error, "boom");
  EXPECT_EQ(v[0].branches[0].finish_reason, FinishReason::kError);
}

}  // namespace
}  // namespace spindle

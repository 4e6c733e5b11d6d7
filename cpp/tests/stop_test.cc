#include <gtest/gtest.h>

#include "engine/request_state.h"

namespace spindle {
namespace {

FinishReason Check(int32_t token, int64_t count, int64_t total, const GenerationConfig& g, bool* stop_token,
                   int64_t max_len = 100) {
  return CheckStop(token, count, total, g, {2, 7}, max_len, stop_token);
}

TEST(Stop, EosStopsUnlessIgnored) {
  GenerationConfig g;
  bool is_stop = false;
  EXPECT_EQ(Check(7, 1, 10, g, &is_stop), FinishReason::kStop);
  EXPECT_TRUE(is_stop);
  g.ignore_eos = true;
  EXPECT_EQ(Check(7, 1, 10, g, &is_stop), FinishReason::kNone);
  EXPECT_FALSE(is_stop);
}

TEST(Stop, StopTokenIdsStopEvenWithIgnoreEos) {
  GenerationConfig g;
  g.ignore_eos = true;
  g.stop_token_ids = {11};
  bool is_stop = false;
  EXPECT_EQ(Check(11, 3, 10, g, &is_stop), FinishReason::kStop);
  EXPECT_TRUE(is_stop);
  EXPECT_EQ(Check(12, 3, 10, g, &is_stop), FinishReason::kNone);
}

TEST(Stop, MaxTokensAndContextGiveLength) {
  GenerationConfig g;
  g.max_tokens = 4;
  bool is_stop = false;
  EXPECT_EQ(Check(5, 3, 10, g, &is_stop), FinishReason::kNone);
  EXPECT_EQ(Check(5, 4, 10, g, &is_stop), FinishReason::kLength);
  EXPECT_FALSE(is_stop);
  g.max_tokens.reset();
  EXPECT_EQ(Check(5, 50, 99, g, &is_stop), FinishReason::kNone);
  EXPECT_EQ(Check(5, 50, 100, g, &is_stop), FinishReason::kLength);
  // A stop token on the last allowed position is still a stop.
  EXPECT_EQ(Check(2, 4, 100, g, &is_stop), FinishReason::kStop);
}

TEST(FinishReason, Names) {
  EXPECT_STREQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_STREQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_STREQ(FinishReasonName(FinishReason::kAbort), "abort");
  EXPECT_STREQ(FinishReasonName(FinishReason::kError), "error");
}

}  // namespace
}  // namespace spindle

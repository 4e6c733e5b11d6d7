#include <gtest/gtest.h>

#include <tvm/ffi/container/shape.h>

#include "ffi/convert.h"

namespace spindle {
namespace {

TEST(Convert, GenerationConfigFromMap) {
  AnyMap m;
  m.Set("n", int64_t(2));
  m.Set("temperature", 0.5);
  m.Set("top_k", int64_t(4));
  m.Set("seed", int64_t(11));
  m.Set("max_tokens", nullptr);
  m.Set("stop_token_ids", ffi::Array<ffi::Any>{int64_t(3), int64_t(4)});
  m.Set("logprobs", true);
  ffi::Map<ffi::Any, ffi::Any> bias;
  bias.Set(int64_t(5), 2.5);
  m.Set("logit_bias", bias);
  GenerationConfig g;
  Status s = GenerationConfigFromMap(m, &g);
  ASSERT_TRUE(s.ok()) << s.field << " " << s.message;
  EXPECT_EQ(g.n, 2);
  EXPECT_DOUBLE_EQ(g.temperature, 0.5);
  EXPECT_EQ(g.top_k, 4);
  EXPECT_EQ(*g.seed, 11);
  EXPECT_FALSE(g.max_tokens.has_value());
  EXPECT_EQ(g.stop_token_ids, (std::vector<int32_t>{3, 4}));
  EXPECT_TRUE(g.logprobs);
  ASSERT_EQ(g.logit_bias.size(), 1u);
  EXPECT_EQ(g.logit_bias[0].first, 5);
}

TEST(Convert, WrongTypesNameTheField) {
  GenerationConfig g;
  AnyMap m;
  m.Set("n", 1.5);
  EXPECT_EQ(GenerationConfigFromMap(m, &g).field, "n");
  m = AnyMap();
  m.Set("ignore_eos", int64_t(1));
  EXPECT_EQ(GenerationConfigFromMap(m, &g).field, "ignore_eos");
  m = AnyMap();
  m.Set("bogus", int64_t(1));
  EXPECT_EQ(GenerationConfigFromMap(m, &g).field, "bogus");
  m = AnyMap();
  m.Set("temperature", ffi::String("hot"));
  EXPECT_EQ(GenerationConfigFromMap(m, &g).field, "temperature");
  EngineConfig c;
  AnyMap e;
  e.Set("max_num_sequence", ffi::String("4"));
  EXPECT_EQ(EngineConfigFromMap(e, &c).field, "max_num_sequence");
  e = AnyMap();
  e.Set("model", ffi::String("/m"));
  e.Set("max_num_sequence", nullptr);
  ASSERT_TRUE(EngineConfigFromMap(e, &c).ok());
  EXPECT_EQ(c.max_num_sequence, -1);
  EXPECT_EQ(c.model, "/m");
  EXPECT_EQ(c.output_interval_us, 0);
  e.Set("output_interval_us", int64_t(10000));
  ASSERT_TRUE(EngineConfigFromMap(e, &c).ok());
  EXPECT_EQ(c.output_interval_us, 10000);
  EXPECT_EQ(c.output_budget_per_s, 0);
  e.Set("output_budget_per_s", int64_t(400));
  ASSERT_TRUE(EngineConfigFromMap(e, &c).ok());
  EXPECT_EQ(c.output_budget_per_s, 400);
}

TEST(Convert, TokenIds) {
  std::vector<int32_t> ids;
  ASSERT_TRUE(TokenIdsFromAny(ffi::Array<ffi::Any>{int64_t(1), int64_t(2)}, &ids).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2}));
  ASSERT_TRUE(TokenIdsFromAny(ffi::Shape({7, 8, 9}), &ids).ok());
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(TokenIdsFromAny(ffi::Array<ffi::Any>{int64_t(-1)}, &ids).field, "token_ids");
  EXPECT_EQ(TokenIdsFromAny(ffi::String("abc"), &ids).field, "token_ids");
}

TEST(Convert, OutputsAndStatus) {
  RequestOutput o;
  o.request_id = "r";
  o.finished = true;
  o.want_logprobs = true;
  BranchDelta d;
  d.index = 0;
  d.token_ids = {4, 5};
  d.logprobs = {TokenLogprob{4, -0.5f, {{4, -0.5f}}}, TokenLogprob{5, -0.25f, {}}};
  d.finish_reason = FinishReason::kLength;
  o.branches.push_back(d);
  o.usage = Usage{3, 2, 0.1, 0.1, 0.2, 0.3};
  RequestOutput plain;
  plain.request_id = "p";
  BranchDelta pd;
  pd.index = 1;
  pd.token_ids = {9};
  plain.branches.push_back(pd);
  ffi::Array<ffi::Any> packed = OutputsToPacked({o, plain});
  ASSERT_EQ(packed.size(), 3u);
  auto ids = packed[0].cast<ffi::Array<ffi::Any>>();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(std::string(ids[0].cast<ffi::String>()), "r");
  EXPECT_EQ(std::string(ids[1].cast<ffi::String>()), "p");
  auto ints = packed[1].cast<ffi::Shape>();
  const std::vector<int64_t> want = {1, 1, 0, static_cast<int64_t>(FinishReason::kLength), -1, 2, 4, 5,  // o
                                     0, 1, 1, 0, -1, 1, 9};                                               // plain
  ASSERT_EQ(ints.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(ints[i], want[i]) << "ints[" << i << "]";
  auto extras = packed[2].cast<ffi::Array<ffi::Any>>();
  ASSERT_EQ(extras.size(), 2u);
  EXPECT_EQ(extras[1], nullptr);  // nothing beyond the tokens
  auto extra = extras[0].cast<ffi::Array<ffi::Any>>();
  EXPECT_EQ(extra[0].cast<ffi::Array<ffi::Any>>()[1].cast<int64_t>(), 2);  // usage.completion_tokens
  EXPECT_EQ(std::string(extra[1].cast<ffi::String>()), "");
  auto lps = extra[2].cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Array<ffi::Any>>();
  ASSERT_EQ(lps.size(), 2u);
  EXPECT_EQ(lps[0].cast<ffi::Array<ffi::Any>>()[0].cast<int64_t>(), 4);
  EXPECT_EQ(lps[0].cast<ffi::Array<ffi::Any>>()[2].cast<ffi::Array<ffi::Any>>().size(), 1u);

  EXPECT_EQ(StatusToAny(Status::OK()), nullptr);
  auto err = StatusToAny(Status::Invalid("top_p", "bad")).cast<ffi::Array<ffi::Any>>();
  EXPECT_EQ(err[0].cast<int64_t>(), 1);
  EXPECT_EQ(std::string(err[1].cast<ffi::String>()), "top_p");

  RequestOutput stop;
  stop.request_id = "s";
  BranchDelta sd;
  sd.finish_reason = FinishReason::kStop;
  sd.stop_token_id = 7;
  stop.branches.push_back(sd);
  auto sb = OutputsToPacked({stop})[1].cast<ffi::Shape>();
  ASSERT_EQ(sb.size(), 6u);  // finished, 1 branch, then index, finish code, stop token, 0 tokens
  EXPECT_EQ(sb[3], static_cast<int64_t>(FinishReason::kStop));
  EXPECT_EQ(sb[4], 7);
  EXPECT_EQ(sb[5], 0);
}

TEST(Convert, MetricsAreTyped) {
  EngineMetrics m;
  m.running = 3;
  m.decode_time_s = 1.5;
  AnyMap map = MetricsToMap(m);
  EXPECT_EQ(map["running"].cast<int64_t>(), 3);
  EXPECT_EQ(map["running"].type_index(), ffi::TypeIndex::kTVMFFIInt);
  EXPECT_EQ(map["decode_time_s"].type_index(), ffi::TypeIndex::kTVMFFIFloat);
}

}  // namespace
}  // namespace spindle

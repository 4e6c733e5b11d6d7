#include <gtest/gtest.h>

#include "engine/config.h"
#include "engine/request.h"
#include "test_util.h"

namespace spindle {
namespace {

using testing::Resolved;
using testing::TinyModel;

const char* kConfigJson = R"({
  "format_version": 1, "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
  "vocab_size": 384, "context_window_size": 512, "prefill_chunk_size": 128, "max_batch_size": 16,
  "dtype": "float32", "param_names": ["a", "b"], "bos_token_id": null, "eos_token_ids": [0, 2]
})";

TEST(ModelInfo, ParsesTheArtifactConfig) {
  ModelInfo info;
  Status s = ParseModelInfo(kConfigJson, &info);
  ASSERT_TRUE(s.ok()) << s.field << ": " << s.message;
  EXPECT_EQ(info.vocab_size, 384);
  EXPECT_EQ(info.context_window_size, 512);
  EXPECT_EQ(info.prefill_chunk_size, 128);
  EXPECT_EQ(info.param_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(info.eos_token_ids, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(info.bos_token_id, -1);
}

TEST(ModelInfo, NamesTheBadField) {
  ModelInfo info;
  std::string bad = kConfigJson;
  bad.replace(bad.find("\"vocab_size\": 384"), 17, "\"vocab_size\": \"x\"");
  Status s = ParseModelInfo(bad, &info);
  EXPECT_EQ(s.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.field, "vocab_size");
  EXPECT_EQ(ParseModelInfo("{not json", &info).field, "spindle-config.json");
  EXPECT_EQ(ParseModelInfo("[1, 2]", &info).field, "spindle-config.json");
  std::string no_eos = kConfigJson;
  no_eos.replace(no_eos.find("\"eos_token_ids\": [0, 2]"), 23, "\"eos_token_ids\": [999]");
  EXPECT_EQ(ParseModelInfo(no_eos, &info).field, "eos_token_ids");
}

TEST(EngineConfig, ModePresets) {
  const ModelInfo m = TinyModel();
  EngineConfig c, out;
  c.model = "x";
  c.mode = "interactive";
  ASSERT_TRUE(ResolveEngineConfig(c, m, &out).ok());
  EXPECT_EQ(out.max_num_sequence, 1);
  EXPECT_EQ(out.max_single_sequence_length, 256);
  EXPECT_EQ(out.admission_window_us, 0);
  c.mode = "local";
  ASSERT_TRUE(ResolveEngineConfig(c, m, &out).ok());
  EXPECT_EQ(out.max_num_sequence, 4);
  EXPECT_EQ(out.prefill_chunk_size, 64);
  c.mode = "server";
  ASSERT_TRUE(ResolveEngineConfig(c, m, &out).ok());
  EXPECT_EQ(out.max_num_sequence, 8);
  EXPECT_GE(out.max_total_sequence_length, 256);
  EXPECT_EQ(out.admission_window_us, 8000);  // the server preset collects bursts of requests
  c.admission_window_us = 0;
  ASSERT_TRUE(ResolveEngineConfig(c, m, &out).ok());
  EXPECT_EQ(out.admission_window_us, 0);
  c.max_num_sequence = 2;
  c.max_total_sequence_length = 100;
  ASSERT_TRUE(ResolveEngineConfig(c, m, &out).ok());
  EXPECT_EQ(out.max_num_sequence, 2);
  EXPECT_EQ(out.max_single_sequence_length, 100);  // bounded by the total
}

TEST(EngineConfig, ErrorsNameTheField) {
  const ModelInfo m = TinyModel();
  auto field_of = [&](auto mutate) {
    EngineConfig c, out;
    c.model = "x";
    mutate(c);
    Status s = ResolveEngineConfig(c, m, &out);
    EXPECT_EQ(s.code, ErrorCode::kInvalidArgument);
    return s.field;
  };
  EXPECT_EQ(field_of([](EngineConfig& c) { c.model = ""; }), "model");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.mode = "turbo"; }), "mode");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.device = "tpu"; }), "device");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.max_num_sequence = 0; }), "max_num_sequence");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.max_num_sequence = 9; }), "max_num_sequence");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.max_total_sequence_length = -5; }), "max_total_sequence_length");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.max_single_sequence_length = 1000; }), "max_single_sequence_length");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.prefill_chunk_size = 65; }), "prefill_chunk_size");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.kv_cache_page_size = 32; }), "kv_cache_page_size");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.num_threads = -1; }), "num_threads");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.admission_window_us = -2; }), "admission_window_us");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.admission_window_us = 60'000'000; }), "admission_window_us");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.output_interval_us = -1; }), "output_interval_us");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.output_interval_us = 10'000'001; }), "output_interval_us");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.output_budget_per_s = -1; }), "output_budget_per_s");
  EXPECT_EQ(field_of([](EngineConfig& c) { c.output_budget_per_s = 1'000'001; }), "output_budget_per_s");
}

TEST(GenerationConfig, DefaultsAreValid) {
  EXPECT_TRUE(ValidateGenerationConfig(GenerationConfig(), TinyModel(), Resolved()).ok());
}

TEST(GenerationConfig, ErrorsNameTheField) {
  const ModelInfo m = TinyModel();
  const EngineConfig e = Resolved();
  auto field_of = [&](auto mutate) {
    GenerationConfig g;
    mutate(g);
    Status s = ValidateGenerationConfig(g, m, e);
    EXPECT_EQ(s.code, ErrorCode::kInvalidArgument);
    return s.field;
  };
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.n = 0; }), "n");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.n = 8; }), "n");  // 8 branches + the prompt > 8 sequences
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.temperature = -0.1; }), "temperature");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.temperature = std::nan(""); }), "temperature");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.top_p = 0; }), "top_p");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.top_p = 1.5; }), "top_p");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.top_k = -1; }), "top_k");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.min_p = 2; }), "min_p");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.repetition_penalty = 0; }), "repetition_penalty");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.frequency_penalty = 2.5; }), "frequency_penalty");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.presence_penalty = -3; }), "presence_penalty");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.logit_bias = {{100, 1.0f}}; }), "logit_bias");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.logit_bias = {{5, 101.0f}}; }), "logit_bias");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.max_tokens = 0; }), "max_tokens");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.stop_token_ids = {-1}; }), "stop_token_ids");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.top_logprobs = 21; g.logprobs = true; }), "top_logprobs");
  EXPECT_EQ(field_of([](GenerationConfig& g) { g.top_logprobs = 3; }), "top_logprobs");
}

TEST(Request, Validation) {
  const ModelInfo m = TinyModel();
  const EngineConfig e = Resolved();
  EXPECT_TRUE(ValidateRequest(Request("a", {1, 2, 3}, {}), m, e).ok());
  EXPECT_EQ(ValidateRequest(Request("", {1}, {}), m, e).field, "request_id");
  EXPECT_EQ(ValidateRequest(Request("a", {}, {}), m, e).field, "token_ids");
  EXPECT_EQ(ValidateRequest(Request("a", {1, 100}, {}), m, e).field, "token_ids");
  EXPECT_EQ(ValidateRequest(Request("a", std::vector<int32_t>(256, 1), {}), m, e).field, "token_ids");
  EXPECT_TRUE(ValidateRequest(Request("a", std::vector<int32_t>(255, 1), {}), m, e).ok());
  GenerationConfig g;
  g.top_k = -2;
  EXPECT_EQ(ValidateRequest(Request("a", {1}, g), m, e).field, "top_k");
}

TEST(Request, MustFitAnEmptyCache) {
  const ModelInfo m = TinyModel();
  const EngineConfig e = Resolved();
  GenerationConfig g;
  EXPECT_TRUE(ValidateRequest(Request("a", std::vector<int32_t>(32, 1), g), m, e, 2).ok());
  EXPECT_EQ(ValidateRequest(Request("a", std::vector<int32_t>(33, 1), g), m, e, 2).field, "token_ids");
  g.n = 3;  // 1 prompt page + 3 fork pages
  EXPECT_TRUE(ValidateRequest(Request("a", std::vector<int32_t>(10, 1), g), m, e, 4).ok());
  EXPECT_EQ(ValidateRequest(Request("a", std::vector<int32_t>(10, 1), g), m, e, 3).field, "n");
  EXPECT_TRUE(ValidateRequest(Request("a", std::vector<int32_t>(10, 1), g), m, e, 0).ok());  // unchecked
}

TEST(Request, PromptUniqueIsSortedAndDistinct) {
  Request r("a", {5, 3, 5, 9, 3}, {});
  EXPECT_EQ(r.prompt_unique(), (std::vector<int32_t>{3, 5, 9}));
  EXPECT_EQ(r.prompt(), (std::vector<int32_t>{5, 3, 5, 9, 3}));
}

}  // namespace
}  // namespace spindle

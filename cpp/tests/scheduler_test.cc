#include <gtest/gtest.h>

#include "engine/scheduler.h"
#include "test_util.h"

namespace spindle {
namespace {

using testing::MakeState;

EngineConfig Config(int64_t chunk = 64, int64_t max_seqs = 8) {
  EngineConfig c;
  c.kv_cache_page_size = 16;
  c.prefill_chunk_size = chunk;
  c.max_num_sequence = max_seqs;
  c.max_single_sequence_length = 256;
  return c;
}

TEST(PageMath, PagesToAddAndTokensThatFit) {
  EXPECT_EQ(PagesToAdd(0, 1, 16), 1);
  EXPECT_EQ(PagesToAdd(0, 16, 16), 1);
  EXPECT_EQ(PagesToAdd(0, 17, 16), 2);
  EXPECT_EQ(PagesToAdd(15, 1, 16), 0);
  EXPECT_EQ(PagesToAdd(16, 1, 16), 1);
  EXPECT_EQ(TokensThatFit(0, 2, 16), 32);
  EXPECT_EQ(TokensThatFit(10, 0, 16), 6);
  EXPECT_EQ(TokensThatFit(16, 0, 16), 0);
  EXPECT_EQ(TokensThatFit(16, 1, 16), 16);
  EXPECT_EQ(TokensThatFit(5, -1, 16), 0);
}

TEST(PlanPrefill, PacksSeveralRequestsUpToTheChunk) {
  auto a = MakeState("a", 30, 1, 0), b = MakeState("b", 20, 1, 1), c = MakeState("c", 40, 1, 2);
  std::deque<RequestState*> active, waiting = {a.get(), b.get(), c.get()};
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 100);
  ASSERT_EQ(plan.segments.size(), 3u);
  EXPECT_EQ(plan.segments[0].len, 30);
  EXPECT_EQ(plan.segments[1].len, 20);
  EXPECT_EQ(plan.segments[2].len, 14);  // chunked: the rest of c comes next step
  EXPECT_EQ(plan.admitted.size(), 3u);
}

TEST(PlanPrefill, ContinuesPrefillingRequestsFirst) {
  auto a = MakeState("a", 100, 1, 0), b = MakeState("b", 10, 1, 1);
  a->status = RequestStatus::kPrefilling;
  a->branches[0].seq_id = 0;
  a->branches[0].kv_len = 64;
  std::deque<RequestState*> active = {a.get()}, waiting = {b.get()};
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 100);
  ASSERT_EQ(plan.segments.size(), 2u);
  EXPECT_EQ(plan.segments[0].st, a.get());
  EXPECT_EQ(plan.segments[0].start, 64);
  EXPECT_EQ(plan.segments[0].len, 36);
  EXPECT_EQ(plan.segments[1].len, 10);
}

TEST(PlanPrefill, AdmissionIsFirstComeFirstServedOnSequenceSlots) {
  auto a = MakeState("a", 5, 3, 0), b = MakeState("b", 5, 1, 1);  // a needs 4 sequences (prompt + 3 branches)
  auto r = MakeState("r", 5, 1, 2);
  r->status = RequestStatus::kRunning;
  r->branches[0].tokens = {1};
  r->branches[0].kv_len = 5;
  std::deque<RequestState*> active = {r.get(), r.get()}, waiting = {a.get(), b.get()};
  // 2 running sequences + 4 > 5 slots: a waits, and b (behind it) waits too.
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64, 5), 100);
  EXPECT_TRUE(plan.segments.empty());
  active = {r.get()};
  plan = PlanPrefill(active, waiting, Config(64, 5), 100);
  ASSERT_EQ(plan.admitted.size(), 1u);
  EXPECT_EQ(plan.admitted[0], a.get());
  EXPECT_EQ(plan.segments[0].branch, nullptr);  // the shared prompt sequence
}

TEST(PlanPrefill, ShrinksChunksToFreePagesAndKeepsDecodePages) {
  auto r = MakeState("r", 16, 1, 0);
  r->status = RequestStatus::kRunning;
  r->branches[0].tokens = {1};
  r->branches[0].kv_len = 16;  // its next decode opens a page
  auto w = MakeState("w", 60, 1, 1);
  std::deque<RequestState*> active = {r.get()}, waiting = {w.get()};
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 3);  // 3 free - 1 kept = 2 pages = 32 tokens
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_EQ(plan.segments[0].len, 32);
  plan = PlanPrefill(active, waiting, Config(64), 1);
  EXPECT_TRUE(plan.segments.empty());
}

TEST(PlanPrefill, ForkPagesAreReservedWhenThePromptCompletes) {
  auto a = MakeState("a", 32, 3, 0);
  std::deque<RequestState*> active, waiting = {a.get()};
  // 32 prompt tokens take 2 pages; forking 3 branches may take 3 more.
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 5);
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_EQ(plan.segments[0].len, 32);
  plan = PlanPrefill(active, waiting, Config(64), 4);
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_EQ(plan.segments[0].len, 16);  // stops short of completion until the fork fits
}

TEST(PlanPrefill, RecomputesPromptAndGeneratedTokensAfterPreemption) {
  auto a = MakeState("a", 10, 1, 0);
  a->branches[0].tokens = {7, 8, 9};  // generated before preemption
  std::deque<RequestState*> active, waiting = {a.get()};
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 100);
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_EQ(plan.segments[0].len, 12);  // prompt + all but the last token, which the next decode feeds
  EXPECT_EQ(a->token_at(a->branches[0], 11), 8);
}

TEST(PlanPrefill, ForkedBranchesPrefillTheirOwnTokens) {
  auto a = MakeState("a", 10, 2, 0);
  a->status = RequestStatus::kPrefilling;
  a->prompt_seq = 0;
  a->prompt_kv_len = 10;
  a->forked = true;
  a->branches[0].seq_id = 1;
  a->branches[0].kv_len = 10;
  a->branches[0].tokens = {1, 2, 3};
  a->branches[1].index = 1;
  a->branches[1].seq_id = 2;
  a->branches[1].kv_len = 10;
  a->branches[1].tokens = {4};  // ready: nothing to recompute
  std::deque<RequestState*> active = {a.get()}, waiting;
  PrefillPlan plan = PlanPrefill(active, waiting, Config(64), 100);
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_EQ(plan.segments[0].branch, &a->branches[0]);
  EXPECT_EQ(plan.segments[0].len, 2);
}

TEST(Decode, PagesNeededAndVictim) {
  auto a = MakeState("a", 16, 1, 0), b = MakeState("b", 20, 2, 1);
  a->status = RequestStatus::kRunning;
  a->branches[0].kv_len = 32;
  b->status = RequestStatus::kRunning;
  b->branches[0].kv_len = 20;
  b->branches[1].kv_len = 48;
  std::deque<RequestState*> active = {a.get(), b.get()};
  EXPECT_EQ(DecodePagesNeeded(active, 16), 2);
  b->branches[1].finish = FinishReason::kStop;
  EXPECT_EQ(DecodePagesNeeded(active, 16), 1);
  EXPECT_EQ(PreemptionVictim(active), b.get());
  EXPECT_EQ(PreemptionVictim({}), nullptr);
}

}  // namespace
}  // namespace spindle

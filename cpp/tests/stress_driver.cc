// A C++ stress driver of the ThreadedEngine on a real model artifact, for sanitizer builds:
//   spindle_stress <artifact dir> [requests=200] [producer threads=4]
// Producers add requests with random settings and abort some of them at random; the driver checks
// that every request ends exactly once, that nothing follows a finish, that no KV page leaks, and
// that the loops stop cleanly with requests in flight. Deliveries are paced (output_interval_us), so
// outputs are merged per request on their way too. Exit status 0 when every check holds.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/threaded_engine.h"

using namespace spindle;

namespace {

struct Tracker {
  std::mutex mu;
  std::unordered_map<std::string, int> finishes;
  std::unordered_map<std::string, int> after_finish;
  std::unordered_map<std::string, int> adds;  // accepted adds per id (an id may be reused after its finish)
  int64_t tokens = 0;
  int64_t errors = 0;

  void On(std::vector<RequestOutput> outputs) {
    std::lock_guard<std::mutex> lock(mu);
    for (const RequestOutput& o : outputs) {
      if (finishes[o.request_id] > 0) after_finish[o.request_id] += 1;
      for (const BranchDelta& d : o.branches) tokens += static_cast<int64_t>(d.token_ids.size());
      if (o.finished) {
        finishes[o.request_id] += 1;
        if (!o.usage.has_value()) errors += 1;
      }
      if (!o.error.empty()) errors += 1;
    }
  }
};

int Fail(const char* what) {
  std::fprintf(stderr, "spindle_stress: FAILED: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <artifact dir> [requests] [threads]\n", argv[0]);
    return 2;
  }
  const int total = argc > 2 ? std::atoi(argv[2]) : 200;
  const int producers = argc > 3 ? std::atoi(argv[3]) : 4;
  Tracker tracker;
  EngineConfig config;
  config.model = argv[1];
  config.mode = "server";
  config.max_num_sequence = 8;
  config.max_total_sequence_length = 256;  // small: forces preemption
  config.max_single_sequence_length = 128;
  config.prefill_chunk_size = 64;
  config.output_interval_us = 2000;  // outputs wait and are merged per request between deliveries
  Status status;
  auto engine = ThreadedEngine::Create(config, [&](std::vector<RequestOutput> o) { tracker.On(std::move(o)); },
                                       &status);
  if (!engine) {
    std::fprintf(stderr, "spindle_stress: %s: %s\n", status.field.c_str(), status.message.c_str());
    return 2;
  }
  const int64_t vocab = engine->limits()->model.vocab_size;
  std::thread step([&] { engine->RunBackgroundLoop(); });
  std::thread stream([&] { engine->RunBackgroundStreamBackLoop(); });

  std::atomic<int> next{0};
  std::atomic<int> rejected{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937 rng(1234 + p);
      while (true) {
        int i = next.fetch_add(1);
        if (i >= total) break;
        std::string id = "req-" + std::to_string(i);
        std::vector<int32_t> prompt(1 + rng() % 40);
        for (auto& t : prompt) t = static_cast<int32_t>(rng() % vocab);
        GenerationConfig g;
        g.max_tokens = 1 + rng() % 24;
        g.ignore_eos = rng() % 2 == 0;
        g.temperature = (rng() % 3 == 0) ? 0.0 : 0.9;
        g.top_p = (rng() % 2 == 0) ? 1.0 : 0.8;
        g.seed = static_cast<int64_t>(rng());
        g.n = (rng() % 8 == 0) ? 2 : 1;
        g.logprobs = rng() % 4 == 0;
        g.top_logprobs = g.logprobs ? 2 : 0;
        Status s = engine->AddRequest(std::make_shared<const Request>(id, prompt, g));
        if (!s.ok()) {
          rejected.fetch_add(1);
          continue;
        }
        {
          std::lock_guard<std::mutex> lock(tracker.mu);
          tracker.adds[id] += 1;
        }
        if (rng() % 3 == 0) {
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
          engine->AbortRequest(id);
          if (rng() % 2 == 0) engine->AbortRequest(id);  // aborts are idempotent
        }
        // A duplicate id while active is rejected synchronously (or accepted if it already finished).
        if (rng() % 10 == 0) {
          Status dup = engine->AddRequest(std::make_shared<const Request>(id, prompt, g));
          if (dup.ok()) {
            std::lock_guard<std::mutex> lock(tracker.mu);
            tracker.adds[id] += 1;
          }
          if (dup.ok()) engine->AbortRequest(id);
          if (!dup.ok() && dup.code != ErrorCode::kAlreadyExists) rejected.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const bool idle = engine->WaitIdle(120.0);
  EngineMetrics m = engine->Metrics();

  // Shut down with requests in flight: they must not block the exit.
  GenerationConfig late;
  late.max_tokens = 100;
  late.ignore_eos = true;
  for (int i = 0; i < 4; ++i) engine->AddRequest(std::make_shared<const Request>("late-" + std::to_string(i),
                                                                                 std::vector<int32_t>{1, 2, 3}, late));
  engine->ExitBackgroundLoop();
  step.join();
  stream.join();

  std::printf("spindle_stress: %d requests, %lld tokens, finished=%lld aborted=%lld preempted=%lld pages_used=%lld\n",
              total, static_cast<long long>(tracker.tokens), static_cast<long long>(m.finished),
              static_cast<long long>(m.aborted), static_cast<long long>(m.preempted),
              static_cast<long long>(m.kv_pages_used));
  if (!idle) return Fail("the engine did not become idle");
  if (rejected.load() != 0) return Fail("a valid request was rejected");
  if (m.kv_pages_used != 0) return Fail("KV pages leaked");
  for (int i = 0; i < total; ++i) {
    std::string id = "req-" + std::to_string(i);
    int f = tracker.finishes.count(id) ? tracker.finishes[id] : 0;
    if (f != tracker.adds[id]) return Fail(("not exactly one finish per add for " + id).c_str());
    // An id re-added after its finish is a new request whose outputs legitimately follow.
    if (tracker.after_finish[id] > 0 && tracker.adds[id] < 2) return Fail(("output after finish for " + id).c_str());
  }
  if (tracker.errors != 0) return Fail("an output carried an error or a finish lacked usage");
  std::printf("spindle_stress: OK\n");
  return 0;
}

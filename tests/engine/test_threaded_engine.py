"""The ThreadedEngine on the tiny compiled model: synchronous errors, batched callbacks, a
500-request stress run from several threads with random aborts, and clean shutdown."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from spindle.engine import (DuplicateRequestError, EngineConfig, EngineShutdownError, FinishReason,
                            GenerationConfig, InvalidRequestError, ThreadedEngine)

from engine_helpers import Collector


class Sink:
    """A thread-safe callback target."""

    def __init__(self, delay_s: float = 0.0):
        self.lock = threading.Lock()
        self.collector = Collector()
        self.calls = 0
        self.delay_s = delay_s

    def __call__(self, outputs):
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.calls += 1
            self.collector.add(outputs)


@pytest.fixture
def threaded(tiny_model_dir):
    engines = []

    def factory(callback, **overrides):
        overrides.setdefault("mode", "server")
        engine = ThreadedEngine(EngineConfig(model=str(tiny_model_dir), **overrides), callback)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.shutdown()


def test_outputs_arrive_batched_with_one_finish_each(threaded):
    sink = Sink()
    engine = threaded(sink)
    for i in range(6):
        engine.add_request(f"r{i}", [3 + i, 4, 5], GenerationConfig(max_tokens=5 + i, ignore_eos=True,
                                                                    temperature=0.0))
    assert engine.wait_idle(30)
    c = sink.collector
    assert sorted(c.finishes) == [f"r{i}" for i in range(6)]
    assert all(len(v) == 1 for v in c.finishes.values()) and not c.after_finish
    assert all(len(c.tokens[f"r{i}"][0]) == 5 + i for i in range(6))
    m = engine.metrics()
    assert m.finished == 6 and m.kv_pages_used == 0 and m.running == 0


def _burst(engine, spacing_s: float, n: int = 4) -> None:
    for i in range(n):
        engine.add_request(f"b{i}", [3 + i, 4, 5], GenerationConfig(max_tokens=3, ignore_eos=True, temperature=0.0))
        time.sleep(spacing_s)


def test_a_burst_of_requests_shares_the_first_prefill(threaded):
    # 1.6 s window: the loop keeps collecting while requests come less than 200 ms apart
    sink = Sink()
    engine = threaded(sink, admission_window_us=1_600_000)
    assert engine.limits["admission_window_us"] == 1_600_000
    _burst(engine, 0.005)
    assert engine.wait_idle(30)
    m = engine.metrics()
    assert m.prefill_steps == 1 and m.finished == 4 and m.kv_pages_used == 0
    assert sorted(sink.collector.finishes) == [f"b{i}" for i in range(4)]


def test_without_a_window_the_first_request_starts_alone(threaded):
    engine = threaded(Sink(), admission_window_us=0)
    _burst(engine, 0.02)
    assert engine.wait_idle(30)
    assert engine.metrics().prefill_steps >= 2


def test_the_window_is_only_waited_when_the_engine_is_idle(threaded):
    # requests added while the engine is busy join at the next step, whatever the window (here 2 s, so a
    # held request would wait at least its 250 ms quiet gap)
    finished: list[str] = []
    sink = Sink()

    def callback(outputs):
        sink(outputs)
        finished.extend(o.request_id for o in outputs if o.finished)

    engine = threaded(callback, admission_window_us=2_000_000)
    for attempt in range(5):
        long_id, late_id = f"long{attempt}", f"late{attempt}"
        engine.add_request(long_id, [3, 4, 5], GenerationConfig(max_tokens=480, ignore_eos=True, temperature=0.0))
        deadline = time.monotonic() + 10
        while not sink.collector.tokens.get(long_id) and time.monotonic() < deadline:
            time.sleep(0.001)
        t = time.monotonic()
        engine.add_request(late_id, [6, 7], GenerationConfig(max_tokens=1, ignore_eos=True, temperature=0.0))
        while late_id not in finished and time.monotonic() - t < 10:
            time.sleep(0.001)
        waited = time.monotonic() - t
        engine.abort_request(long_id)
        assert engine.wait_idle(30)
        if waited < 0.2:
            return
        # held: that is only right if the long request had ended before the late one arrived
        assert finished.index(long_id) < finished.index(late_id), \
            f"a request added to a busy engine waited {waited:.3f} s for the admission window"
    pytest.fail("the long request ended before the late one arrived in every attempt")


def test_a_burst_that_fills_the_first_prefill_starts_at_once(threaded):
    # 2 s window (250 ms quiet gap): two 4-token prompts fill an 8-token prefill chunk, so waiting for more
    # could not make the first step larger; with a 64-token chunk the same pair waits out the quiet gap
    cfg = GenerationConfig(max_tokens=1, ignore_eos=True, temperature=0.0)
    for chunk, fills in ((8, True), (64, False)):
        sink = Sink()
        engine = threaded(sink, admission_window_us=2_000_000, prefill_chunk_size=chunk)
        t = time.monotonic()
        engine.add_request("a", [3, 4, 5, 6], cfg)
        engine.add_request("b", [7, 8, 9, 10], cfg)
        assert engine.wait_idle(30)
        elapsed = time.monotonic() - t
        assert sorted(sink.collector.finishes) == ["a", "b"]
        assert engine.metrics().prefill_steps == 1
        if fills:
            assert elapsed < 0.2, f"a burst that filled the chunk waited {elapsed:.3f} s"
        else:
            assert elapsed >= 0.25, f"the burst did not wait for the quiet gap ({elapsed:.3f} s)"


def test_admission_window_is_checked(tiny_model_dir):
    with pytest.raises(InvalidRequestError) as err:
        ThreadedEngine(EngineConfig(model=str(tiny_model_dir), admission_window_us=-5), Sink())
    assert err.value.field == "admission_window_us"
    with pytest.raises(InvalidRequestError) as err:
        ThreadedEngine(EngineConfig(model=str(tiny_model_dir), admission_window_us=20_000_000), Sink())
    assert err.value.field == "admission_window_us"


def test_output_interval_is_checked(tiny_model_dir):
    for bad in (-1, 20_000_000):
        with pytest.raises(InvalidRequestError) as err:
            ThreadedEngine(EngineConfig(model=str(tiny_model_dir), output_interval_us=bad), Sink())
        assert err.value.field == "output_interval_us"


def test_output_interval_merges_steps_and_never_holds_first_tokens_or_finishes(threaded):
    interval = 1.0
    deliveries: list[tuple[float, list]] = []
    sink = Sink()

    def callback(outputs):
        deliveries.append((time.monotonic(), outputs))
        sink(outputs)

    engine = threaded(callback, output_interval_us=int(interval * 1e6))
    assert engine.limits["output_interval_us"] == int(interval * 1e6)
    engine.add_request("long", [3, 4, 5], GenerationConfig(max_tokens=480, ignore_eos=True, temperature=0.0))
    deadline = time.monotonic() + 10
    while not sink.collector.tokens.get("long") and time.monotonic() < deadline:
        time.sleep(0.001)
    # the long request's first tokens went out just now; the short one's first token and finish must not
    # wait for the interval to pass
    t = time.monotonic()
    engine.add_request("short", [6, 7], GenerationConfig(max_tokens=2, ignore_eos=True, temperature=0.0))
    while "short" not in sink.collector.finishes and time.monotonic() - t < 10:
        time.sleep(0.001)
    assert time.monotonic() - t < 0.6 * interval
    assert engine.wait_idle(60)

    # the same tokens as an engine that delivers every step, in far fewer callbacks than steps
    reference = Sink()
    plain = threaded(reference, output_interval_us=0)
    plain.add_request("long", [3, 4, 5], GenerationConfig(max_tokens=480, ignore_eos=True, temperature=0.0))
    assert plain.wait_idle(60)
    c = sink.collector
    assert c.tokens["long"][0] == reference.collector.tokens["long"][0] and len(c.tokens["long"][0]) == 480
    assert len(c.tokens["short"][0]) == 2
    assert all(len(v) == 1 for v in c.finishes.values()) and not c.after_finish
    assert sum(1 for _, outs in deliveries if any(o.request_id == "long" for o in outs)) < 480 // 4

    # a delivery with neither a first token nor a finish came at least one interval after the previous one
    started: set[str] = set()
    previous = None
    for when, outs in deliveries:
        urgent = any(o.finished or o.request_id not in started for o in outs)
        if previous is not None and not urgent:
            assert when - previous >= 0.95 * interval
        started.update(o.request_id for o in outs if any(b.token_ids for b in o.branches))
        previous = when
    # a request's tokens arrive as one output per callback
    assert all(len({o.request_id for o in outs}) == len(outs) for _, outs in deliveries)


def test_output_budget_spaces_deliveries_by_the_number_of_paced_requests(threaded):
    budget = 20  # outputs per second over all paced requests: two of them get one delivery per 100 ms
    deliveries: list[tuple[float, list]] = []
    sink = Sink()

    def callback(outputs):
        deliveries.append((time.monotonic(), outputs))
        sink(outputs)

    engine = threaded(callback, output_budget_per_s=budget)
    assert engine.limits["output_budget_per_s"] == budget
    cfg = GenerationConfig(max_tokens=400, ignore_eos=True, temperature=0.0)
    t0 = time.monotonic()
    for rid in ("a", "b"):
        engine.add_request(rid, [3, 4, 5], cfg)
    assert engine.wait_idle(60)
    elapsed = time.monotonic() - t0

    reference = Sink()
    plain = threaded(reference)
    plain.add_request("a", [3, 4, 5], cfg)
    assert plain.wait_idle(60)
    c = sink.collector
    assert c.tokens["a"][0] == c.tokens["b"][0] == reference.collector.tokens["a"][0]
    assert all(len(v) == 1 for v in c.finishes.values()) and not c.after_finish
    # first tokens and finishes go at once (at most four deliveries here); the rest are two outputs each at
    # most `budget` outputs per second. Without a budget the engine delivers each step's outputs as soon as
    # the stream-back thread takes them (up to 400 callbacks; fewer when steps outrun it and it merges).
    assert len(deliveries) <= 4 + 1 + elapsed * budget / 2
    assert reference.calls > 4 * len(deliveries)

    # a delivery with neither a first token nor a finish came at least n / budget after the previous one,
    # n the requests paced when it was due
    started: set[str] = set()
    previous = None
    for when, outs in deliveries:
        urgent = any(o.finished or o.request_id not in started for o in outs)
        if previous is not None and not urgent:
            assert when - previous >= 0.95 * len(started) / budget
        started.update(o.request_id for o in outs if any(b.token_ids for b in o.branches))
        started.difference_update(o.request_id for o in outs if o.finished)
        previous = when


def test_output_budget_is_validated(tiny_model_dir):
    for bad in (-1, 1_000_001):
        with pytest.raises(InvalidRequestError) as err:
            ThreadedEngine(EngineConfig(model=str(tiny_model_dir), output_budget_per_s=bad), Sink())
        assert err.value.field == "output_budget_per_s"


def test_add_request_raises_synchronously(threaded):
    engine = threaded(Sink())
    with pytest.raises(InvalidRequestError) as err:
        engine.add_request("bad", [], GenerationConfig())
    assert err.value.field == "token_ids"
    with pytest.raises(InvalidRequestError) as err:
        engine.add_request("bad", [1, 10_000], GenerationConfig())
    assert err.value.field == "token_ids"
    with pytest.raises(InvalidRequestError) as err:
        engine.add_request("bad", [1], GenerationConfig(temperature="hot"))
    assert err.value.field == "temperature"
    with pytest.raises(InvalidRequestError) as err:
        engine.add_request("bad", [1], GenerationConfig(top_logprobs=30, logprobs=True))
    assert err.value.field == "top_logprobs"
    engine.add_request("dup", [1, 2], GenerationConfig(max_tokens=200, ignore_eos=True))
    with pytest.raises(DuplicateRequestError):
        engine.add_request("dup", [1, 2], GenerationConfig())
    engine.abort_request("dup")
    assert engine.wait_idle(10)
    engine.add_request("dup", [1, 2], GenerationConfig(max_tokens=1))  # free again after its finish
    assert engine.wait_idle(10)


def test_slow_callback_does_not_stall_stepping(threaded):
    holder = {}
    progressed = threading.Event()
    batches: list[list] = []

    def callback(outputs):
        if not batches:
            # Stall the first delivery until the step loop has moved on by many steps.
            deadline = time.monotonic() + 30
            while holder["engine"].metrics().steps < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            if holder["engine"].metrics().steps >= 20:
                progressed.set()
        batches.append(outputs)

    engine = threaded(callback)
    holder["engine"] = engine
    engine.add_request("a", [5, 6, 7], GenerationConfig(max_tokens=60, ignore_eos=True))
    engine.add_request("b", [8, 9], GenerationConfig(max_tokens=60, ignore_eos=True))
    assert engine.wait_idle(60)
    assert progressed.is_set(), "the step loop kept stepping while the callback was blocked"
    assert max(len(b) for b in batches) > 2, "outputs of several steps were delivered in one callback"
    tokens = {"a": [], "b": []}
    for batch in batches:
        for o in batch:
            tokens[o.request_id].extend(o.branches[0].token_ids)
    assert len(tokens["a"]) == 60 and len(tokens["b"]) == 60


def test_stress_500_requests_from_several_threads(threaded):
    before = set(threading.enumerate())  # e.g. servers of other test modules in the same session
    sink = Sink()
    engine = threaded(sink, max_num_sequence=8, max_total_sequence_length=256, max_single_sequence_length=128,
                      prefill_chunk_size=64)
    vocab = engine.limits["vocab_size"]
    added: dict[str, int] = {}
    added_lock = threading.Lock()
    errors: list[BaseException] = []

    def producer(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for i in range(125):
                rid = f"w{worker}-{i}"
                cfg = GenerationConfig(
                    n=2 if rng.random() < 0.1 else 1, temperature=rng.choice([0.0, 0.8]),
                    top_p=rng.choice([1.0, 0.9]), top_k=rng.choice([0, 20]), seed=rng.randrange(1 << 30),
                    max_tokens=rng.randint(1, 16), ignore_eos=rng.random() < 0.5,
                    logprobs=rng.random() < 0.2)
                engine.add_request(rid, [rng.randrange(vocab) for _ in range(rng.randint(1, 40))], cfg)
                with added_lock:
                    added[rid] = 1
                if rng.random() < 0.3:
                    time.sleep(rng.random() * 0.002)
                    engine.abort_request(rid)
                if rng.random() < 0.05:
                    engine.abort_request(rid)
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert engine.wait_idle(120)
    c = sink.collector
    assert len(added) == 500
    assert sorted(c.finishes) == sorted(added)
    assert all(len(v) == 1 for v in c.finishes.values()), "every request ends exactly once"
    assert not c.after_finish, "nothing follows a finish"
    reasons = {r for per in c.branch_finish.values() for r in per.values()}
    assert FinishReason.ABORT in reasons and FinishReason.LENGTH in reasons
    assert all(o[0].error is None for o in c.finishes.values())
    m = engine.metrics()
    assert m.kv_pages_used == 0 and m.running == 0 and m.waiting == 0
    assert m.finished + m.aborted == 500
    assert m.preempted > 0, "the small cache forces preemption"
    start = time.monotonic()
    engine.shutdown()
    assert time.monotonic() - start < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("spindle-") and t not in before], \
        "the loops have stopped"


def test_shutdown_with_requests_in_flight(threaded):
    sink = Sink()
    engine = threaded(sink)
    for i in range(4):
        engine.add_request(f"long{i}", [1, 2, 3], GenerationConfig(max_tokens=400, ignore_eos=True))
    # shut down as soon as the first outputs arrive: 400 tokens take the tiny model tens of ms, so all four are
    # still running (a fixed sleep raced with a fast machine finishing some of them first)
    deadline = time.monotonic() + 10
    while sink.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert sink.calls > 0 and not sink.collector.finishes
    start = time.monotonic()
    engine.shutdown()
    assert time.monotonic() - start < 5
    assert all(t is FinishReason.ABORT for per in sink.collector.branch_finish.values() for t in per.values())
    assert sorted(sink.collector.finishes) == [f"long{i}" for i in range(4)]
    with pytest.raises(EngineShutdownError):
        engine.add_request("late", [1], GenerationConfig())
    engine.shutdown()  # idempotent


def test_reload_and_unload_block_and_abort_active_requests(threaded, tiny_model_dir):
    sink = Sink()
    engine = threaded(sink, max_num_sequence=2)
    assert engine.limits["max_num_sequence"] == 2
    engine.add_request("old", [1, 2, 3], GenerationConfig(max_tokens=400, ignore_eos=True))
    engine.reload(EngineConfig(model=str(tiny_model_dir), mode="server", max_num_sequence=4))
    assert engine.limits["max_num_sequence"] == 4
    with pytest.raises(InvalidRequestError) as err:
        engine.reload(EngineConfig(model=str(tiny_model_dir), mode="warp"))
    assert err.value.field == "mode"
    assert engine.limits["max_num_sequence"] == 4  # a failed reload keeps the loaded engine
    engine.add_request("new", [4, 5], GenerationConfig(max_tokens=3, ignore_eos=True))
    assert engine.wait_idle(30)
    engine.unload()
    assert engine.limits == {}
    with pytest.raises(EngineShutdownError):
        engine.add_request("none", [1], GenerationConfig())
    engine.reload(EngineConfig(model=str(tiny_model_dir)))
    engine.add_request("again", [6], GenerationConfig(max_tokens=2, ignore_eos=True))
    assert engine.wait_idle(30)
    c = sink.collector
    assert c.branch_finish["old"][0] is FinishReason.ABORT
    assert len(c.tokens["new"][0]) == 3 and len(c.tokens["again"][0]) == 2
    assert all(len(v) == 1 for v in c.finishes.values()) and not c.after_finish


def test_interpreter_exits_cleanly_with_requests_in_flight(tiny_model_dir, tmp_path):
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from spindle.engine import EngineConfig, GenerationConfig, ThreadedEngine
        seen = []
        engine = ThreadedEngine(EngineConfig(model={str(tiny_model_dir)!r}), seen.extend)
        for i in range(3):
            engine.add_request(f"r{{i}}", [1, 2, 3], GenerationConfig(max_tokens=400, ignore_eos=True))
        time.sleep(0.1)
        print("leaving", flush=True)
    """))
    import os  # pylint: disable=import-outside-toplevel
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "leaving" in proc.stdout

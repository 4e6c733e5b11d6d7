"""CPU speed of Spindle's compiled models, per weight format.

For each model and format it compiles the library (cached on disk), drives it through the KV-cache
builtins exactly as the engine does, and prints medians over repeats of:
  prefill tok/s for a 128-token prompt, decode tok/s at batch 1 and batch 8 (aggregate),
  the memory-bandwidth bound of a batch-1 decode step (streaming read bandwidth measured in the same run /
  weight bytes read per step) and the ratio measured/bound (1.00 = at the bound). Batch 1 and the
  bandwidth are measured in pairs, one right after the other, and the ratio is the median pair's.

Usage:
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/bench_compile.py [--models random125m,smollm2]
      [--dtypes float32,float16,q8_0,q4_1] [--repeats 5] [--no-schedule]
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/bench_compile.py --side-by-side --dtypes float32 --repeats 9
      (random125m: the current pipeline against the previous one, alternating rounds in one process)
  TVM_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python bench/bench_compile.py --kernels --repeats 30
      (single kernels at the 125M shapes: Spindle's attention / RoPE / GEMM against the previous ones)
  python bench/bench_compile.py --states 40 [--fast-gbs 45]
      (batch 1 only, every model and format loaded at once: b1 / bound per state of the machine)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import pathlib
import sys
import time

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "service"), str(_ROOT / "bench")]

import numpy as np  # noqa: E402

from compile_bandwidth import stream_read_bandwidth  # noqa: E402
from spindle.compiler import quantization as Q  # noqa: E402
from spindle.compiler.build import make_target  # noqa: E402
from spindle.compiler.runner import ModelRunner  # noqa: E402

CACHE = pathlib.Path(os.environ.get("SPINDLE_BENCH_CACHE", pathlib.Path.home() / ".cache" / "spindle-bench"))

# The ~125M random Llama of the speed targets (untied lm_head, as in the targets' parameter count).
RANDOM_125M = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
               "intermediate_size": 2048, "vocab_size": 32000, "tie_word_embeddings": False,
               "context_window_size": 2048, "prefill_chunk_size": 512}


@contextlib.contextmanager
def _previous_schedules():
    """The schedule rules as they were before the 4x4 prefill tiles: 4 rows x 2 columns, no column blocks."""
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    from spindle.compiler.schedules import rules  # pylint: disable=import-outside-toplevel
    from spindle.compiler.schedules.generic import Elementwise, RowReduction  # pylint: disable=import-outside-toplevel
    from spindle.compiler.schedules.matmul import Matmul  # pylint: disable=import-outside-toplevel

    current = rules.default_rules
    rules.default_rules = lambda: [Matmul(row_tile=4, col_tile=2, accumulators=8, col_block=1), RowReduction(),
                                   Elementwise(), dl.cpu.Reduction()]
    try:
        yield
    finally:
        rules.default_rules = current


# Pipelines the side-by-side mode compares: the current one, and the previous one (TVM's bundled
# single-threaded attention kernels, 4x2 matmul tiles).
VARIANTS = ("current", "previous")


def _random_artifact(dtype: str, schedule: bool, variant: str = "current") -> pathlib.Path:
    """The compiler's Llama with random weights, built like `spindle.compiler.testing.build_tiny_artifact`
    but with a small stand-in tokenizer (the benchmark never tokenizes)."""
    from spindle.compiler import testing  # pylint: disable=import-outside-toplevel
    from spindle.compiler.build import write_artifact  # pylint: disable=import-outside-toplevel
    from spindle.compiler.convert import convert_params, embedding_format, make_model  # pylint: disable=import-outside-toplevel

    key = testing.tiny_content_hash(dtype=dtype, seed=0, target="llvm", schedule=schedule, **RANDOM_125M)
    out = CACHE / f"random125m-{dtype}{'' if variant == 'current' else '-' + variant}-{key}"
    if (out / "spindle-config.json").exists():
        return out
    cfg = testing.tiny_config(**RANDOM_125M)
    fmt = embedding_format(dtype, None)
    model = make_model(cfg, make_target("llvm"), dtype, embed_fmt=fmt, head_fmt=fmt)
    params = convert_params(testing.random_params(cfg, 0), cfg, dtype)
    meta = {"bos_token_id": None, "eos_token_ids": [0], "pad_token_id": 0, "chat_template": None,
            "add_bos_token": False}
    rules = contextlib.nullcontext()
    if variant == "previous":
        model.attention_kernels = "tvm"
        rules = _previous_schedules()
    with rules:
        return write_artifact(out, model=model, params=params, tokenizer_json=testing.tiny_tokenizer_json(384),
                              meta=meta, dtype=dtype, target="llvm", content_hash=key,
                              source=f"random-llama-125m(seed=0) {variant} pipeline", schedule=schedule)


def artifact(model: str, dtype: str, schedule: bool) -> pathlib.Path:
    if model == "random125m":
        return _random_artifact(dtype, schedule)
    from spindle.compiler.api import compile_model  # pylint: disable=import-outside-toplevel

    return compile_model(None, dtype=dtype, progress=False, schedule=schedule)


def decode_weight_bytes(runner: ModelRunner) -> int:
    """Bytes of weights one decode step reads: all parameters but an untied embedding table (rows only)."""
    names = runner.config["param_names"]
    tied = runner.config.get("tie_word_embeddings", False)
    total = 0
    for name, param in zip(names, runner.params):
        if name.startswith("embed_tokens.") and not tied:
            continue
        total += int(np.prod(param.shape)) * np.dtype(str(param.dtype)).itemsize
    return total


def decode_step(runner: ModelRunner, kv, seq_ids: list[int], token: int = 1):
    """One decode step of ``seq_ids`` as the engine runs it: embed, begin_forward, batch_decode,
    end_forward; the logits stay where the library wrote them (the engine's sampler reads them in place,
    so a copy to numpy, which ``ModelRunner.decode`` makes, is not part of a step)."""
    import tvm  # pylint: disable=import-outside-toplevel
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    from spindle.compiler.runner import _f  # pylint: disable=import-outside-toplevel

    ids = tvm.runtime.tensor(np.full(len(seq_ids), token, dtype="int32"), runner.device)
    shape = tvm_ffi.Shape([len(seq_ids), 1, runner.config["hidden_size"]])
    seqs, ones = tvm_ffi.Shape(seq_ids), tvm_ffi.Shape([1] * len(seq_ids))
    reshape, begin, end = _f("vm.builtin.reshape"), _f("vm.builtin.kv_state_begin_forward"), _f(
        "vm.builtin.kv_state_end_forward")

    def step():
        embeds = reshape(runner._embed(ids, runner.params), shape)  # pylint: disable=protected-access
        begin(kv, seqs, ones)
        runner._decode(embeds, kv, runner.params)  # pylint: disable=protected-access
        end(kv)

    return step


def timed(fn) -> float:
    """Wall time of ``fn()`` with Python's garbage collector paused: the engine drives steps from C++, so a
    collection triggered by this script's per-step objects is not part of a step."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    finally:
        if enabled:
            gc.enable()


def bench_one(model: str, dtype: str, repeats: int, schedule: bool) -> dict:
    runner = ModelRunner(artifact(model, dtype, schedule))
    vocab = runner.config["vocab_size"]
    kv = runner.create_kv_cache(max_batch_size=8, max_total_seq_len=8 * 512, prefill_chunk_size=512)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, 128).tolist()

    def prefill_once(sid: int) -> float:
        runner.add_sequence(kv, sid)
        t = timed(lambda: runner.prefill(kv, [sid], [prompt]))
        runner.remove_sequence(kv, sid)
        return t

    prefill_once(100)  # warm-up
    prefill = [128 / prefill_once(101 + i) for i in range(repeats)]

    def decode_rates(batch: int, steps: int) -> list[float]:
        ids = list(range(batch))
        for sid in ids:
            runner.add_sequence(kv, sid)
        runner.prefill(kv, ids, [prompt[:16]] * batch)
        step = decode_step(runner, kv, ids)
        step()  # warm-up
        rates = []
        for _ in range(repeats):
            rates.append(batch * steps / timed(lambda: [step() for _ in range(steps)]))
        for sid in ids:
            runner.remove_sequence(kv, sid)
        return rates

    steps = 16 if schedule else 1
    d8 = decode_rates(8, steps)
    # Batch 1 against the bound, paired in time: each round measures the read bandwidth, then 32 decode
    # steps, so that the ratio of a round compares two measurements taken under the same machine load (the
    # shared host moves both by up to 1.5x from minute to minute); the table gives the median round.
    weight_bytes = decode_weight_bytes(runner)
    runner.add_sequence(kv, 0)
    runner.prefill(kv, [0], [prompt[:16]])
    step = decode_step(runner, kv, [0])
    step()  # warm-up
    d1, bws, ratios = [], [], []
    b1_steps = 32 if schedule else 2
    for _ in range(repeats):
        bw = stream_read_bandwidth(size_mb=256, repeats=3)
        rate = b1_steps / timed(lambda: [step() for _ in range(b1_steps)])
        d1.append(rate)
        bws.append(bw)
        ratios.append(rate / (bw / weight_bytes))
    runner.remove_sequence(kv, 0)
    return {"prefill": float(np.median(prefill)), "decode1": float(np.median(d1)),
            "decode8": float(np.median(d8)), "weight_bytes": weight_bytes, "bandwidth": float(np.median(bws)),
            "ratio": float(np.median(ratios)), "ratios": ratios}


class Session:
    """One loaded artifact with a KV cache, timed one measurement at a time (for alternating runs)."""

    def __init__(self, path: pathlib.Path):
        self.runner = ModelRunner(path)
        self.kv = self.runner.create_kv_cache(max_batch_size=8, max_total_seq_len=8 * 512, prefill_chunk_size=512)
        self.prompt = np.random.default_rng(0).integers(0, self.runner.config["vocab_size"], 128).tolist()
        self.next_id = 1000

    def prefill(self) -> float:
        """tok/s of one 128-token prefill of a new sequence."""
        sid, self.next_id = self.next_id, self.next_id + 1
        self.runner.add_sequence(self.kv, sid)
        t = timed(lambda: self.runner.prefill(self.kv, [sid], [self.prompt]))
        self.runner.remove_sequence(self.kv, sid)
        return len(self.prompt) / t

    def decode(self, batch: int, steps: int = 8) -> float:
        """Aggregate tok/s of `steps` decode steps at `batch` sequences of 16 prompt tokens (after a warm-up)."""
        ids = list(range(self.next_id, self.next_id + batch))
        self.next_id += batch
        for sid in ids:
            self.runner.add_sequence(self.kv, sid)
        self.runner.prefill(self.kv, ids, [self.prompt[:16]] * batch)
        toks = [1] * batch
        self.runner.decode(self.kv, ids, toks)
        t = timed(lambda: [self.runner.decode(self.kv, ids, toks) for _ in range(steps)])
        for sid in ids:
            self.runner.remove_sequence(self.kv, sid)
        return batch * steps / t


def side_by_side(dtype: str, rounds: int) -> None:
    """The current and the previous pipeline on random125m, loaded in one process and timed alternately."""
    sessions = {v: Session(_random_artifact(dtype, True, v)) for v in VARIANTS}
    for s in sessions.values():  # warm-up
        s.prefill()
        s.decode(1, 1)
    rates = {v: {"prefill": [], "decode1": [], "decode8": []} for v in VARIANTS}
    loads = []
    runs = {"prefill": Session.prefill, "decode1": lambda s: s.decode(1), "decode8": lambda s: s.decode(8)}
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for metric, run in runs.items():  # each measurement right after the other pipeline's
            for v in order:
                rates[v][metric].append(run(sessions[v]))
        loads.append(os.getloadavg()[0])
    print(f"random125m {dtype}, {rounds} alternating rounds, load average {min(loads):.1f}-{max(loads):.1f} "
          f"(1-min, {os.cpu_count()} cores); medians (best)")
    print("| pipeline | prefill 128 tok/s | decode b1 tok/s | decode b8 tok/s | b8 / b1 |")
    print("|---|---|---|---|---|")
    med = {v: {k: float(np.median(x)) for k, x in rates[v].items()} for v in VARIANTS}
    for v in VARIANTS:
        cells = " | ".join(f"{med[v][k]:.1f} ({max(rates[v][k]):.1f})" for k in ("prefill", "decode1", "decode8"))
        print(f"| {v} | {cells} | {med[v]['decode8'] / med[v]['decode1']:.2f} |")
    ratio = " | ".join(f"{med['current'][k] / med['previous'][k]:.2f}x" for k in ("prefill", "decode1", "decode8"))
    print(f"| current / previous | {ratio} | |")


def _time_min_median(fn, reps: int) -> tuple[float, float]:
    ts = [timed(fn) for _ in range(reps)]
    return min(ts), float(np.median(ts))


def kernels(reps: int) -> None:
    """Single kernels at the 125M model's shapes (128-token prefill, 12/4 heads of 64), the project's
    against the previous ones, compiled alone and timed alternately: attention, RoPE, one GEMM."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel
    from tvm.relax.frontend import nn  # pylint: disable=import-outside-toplevel
    from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv  # pylint: disable=import-outside-toplevel

    from spindle.compiler import attention  # pylint: disable=import-outside-toplevel
    from spindle.compiler.schedules import cpu_pipeline  # pylint: disable=import-outside-toplevel
    from spindle.compiler.schedules.generic import Elementwise  # pylint: disable=import-outside-toplevel

    target = make_target("llvm")
    h_q, h_kv, d, n = 12, 4, 64, 128
    rng = np.random.default_rng(0)
    t = tvm.runtime.tensor

    def prim(func):
        return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)["main"]

    q, k, v = (t(rng.standard_normal((n, h, d)).astype("float32")) for h in (h_q, h_kv, h_kv))
    ind, pos = t(np.array([0, n], "int32")), t(np.arange(n, dtype="int32"))
    out, lse = t(np.zeros((n, h_q, d), "float32")), t(np.zeros((n, h_q), "float32"))
    ragged = [q, ind, k, v, ind, pos, t(np.zeros(1, "int32")), out, lse, 1, 0, 1.0, 10000.0, d ** -0.5]
    qkv = t(rng.standard_normal((n, h_q + 2 * h_kv, d)).astype("float32"))
    split = [qkv, pos, out, t(np.zeros((n, h_kv, d), "float32")), t(np.zeros((n, h_kv, d), "float32")), 1]
    cases = {
        "ragged prefill attention": ([prim(attention.ragged_prefill(h_kv, h_q, d, "float32")),
                                      prim(tvm_kv._attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}))],  # pylint: disable=protected-access
                                     ragged, 2 * 2 * n * n / 2 * d * h_q),
        "RoPE + q/k/v split": ([prim(attention.split_rotary(10000.0, 1, d, h_q, h_kv, "float32", {})),
                               prim(Elementwise().apply(tvm_kv.llama_rope_with_position_map(
                                   10000.0, 1, d, h_q, h_kv, "float32", {}, d), target, False).mod["main"])],
                              split, 0),
    }

    class _Linear(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(768, 4096, bias=False, dtype="float32")

        def forward(self, x):  # pylint: disable=arguments-differ
            return self.lin(x)

    gemm = []
    for rules in (contextlib.nullcontext(), _previous_schedules()):
        mod, _ = _Linear().export_tvm(spec={"forward": {"x": nn.spec.Tensor([1, "rows", 768], "float32"),
                                                        "$": {"param_mode": "packed", "effect_mode": "none"}}})
        with rules:
            ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))
        gemm.append(relax.VirtualMachine(ex, tvm.cpu())["forward"])
    x = t(rng.standard_normal((1, n, 768)).astype("float32"))
    w = (t(rng.standard_normal((4096, 768)).astype("float32")),)
    cases["gate/up GEMM 128x768 @ 768x4096"] = (gemm, [x, w], 2 * n * 768 * 4096)
    print(f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}, {reps} alternating calls each, "
          f"load average {os.getloadavg()[0]:.1f}; min / median ms (GFLOP/s at the min)")
    print("| kernel | current | previous | previous / current (min) |")
    print("|---|---|---|---|")
    for name, (fns, args, flops) in cases.items():
        times = [[], []]
        for fn in fns:
            fn(*args)
        for _ in range(reps):
            for i, fn in enumerate(fns):
                times[i].append(timed(lambda f=fn: f(*args)))
        cells = []
        for ts in times:
            rate = f" ({flops / min(ts) / 1e9:.0f})" if flops else ""
            cells.append(f"{min(ts) * 1e3:.3f} / {np.median(ts) * 1e3:.3f}{rate}")
        print(f"| {name} | {cells[0]} | {cells[1]} | {min(times[1]) / min(times[0]):.2f}x |")


def both_states(models: list[str], dtypes: list[str], rounds: int, fast_gbs: float) -> None:
    """Batch 1 against the bound in both states of the machine: every (model, format) loaded at once, then
    ``rounds`` rounds of the read bandwidth followed by 32 batch-1 steps of each (a fresh 16-token sequence
    each time); per state, the median and range over its rounds of b1 / bound."""
    loaded = []
    for model in models:
        for dtype in dtypes:
            runner = ModelRunner(artifact(model, dtype, True))
            kv = runner.create_kv_cache(max_batch_size=1, max_total_seq_len=512, prefill_chunk_size=64)
            loaded.append((model, dtype, runner, kv, decode_weight_bytes(runner)))
    prompt = list(range(3, 19))
    ratios = {(m, d): {"fast": [], "slow": []} for m, d, *_ in loaded}
    bandwidths = {"fast": [], "slow": []}
    for _ in range(rounds):
        bw = stream_read_bandwidth(size_mb=256, repeats=3)
        state = "fast" if bw >= fast_gbs * 1e9 else "slow"
        bandwidths[state].append(bw)
        for model, dtype, runner, kv, weight_bytes in loaded:
            runner.add_sequence(kv, 0)
            runner.prefill(kv, [0], [prompt])
            step = decode_step(runner, kv, [0])
            step()  # warm-up
            rate = 32 / timed(lambda: [step() for _ in range(32)])  # pylint: disable=cell-var-from-loop
            runner.remove_sequence(kv, 0)
            ratios[(model, dtype)][state].append(rate / (bw / weight_bytes))
    head = [f"{name} ({len(bandwidths[name])} rounds, {min(bandwidths[name]) / 1e9:.1f}-"
            f"{max(bandwidths[name]) / 1e9:.1f} GB/s)" if bandwidths[name] else f"{name} (no rounds)"
            for name in ("fast", "slow")]
    print(f"batch 1, b1 / bound per state (fast: read >= {fast_gbs:g} GB/s): median (range) over the rounds")
    print(f"| model | format | {head[0]} | {head[1]} |")
    print("|---|---|---|---|")
    for (model, dtype), per in ratios.items():
        cells = [f"{np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "" for v in (per["fast"], per["slow"])]
        print(f"| {model} | {dtype} | {cells[0]} | {cells[1]} |", flush=True)


MODEL_NAMES = ("random125m", "smollm2")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--dtypes", default="float32,float16,q8_0,q4_1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-schedule", action="store_true", help="TVM's plain CPU pipeline, for reference")
    parser.add_argument("--side-by-side", action="store_true",
                        help="random125m only: the current pipeline against the previous one (bundled attention, "
                             "4x2 matmul tiles), alternating rounds (--repeats of them) in one process")
    parser.add_argument("--kernels", action="store_true",
                        help="single kernels (attention, RoPE, a prefill GEMM), current against previous")
    parser.add_argument("--states", type=int, default=0, metavar="ROUNDS",
                        help="batch 1 only: every model and format loaded at once, ROUNDS rounds of the read "
                             "bandwidth and 32 steps of each, reported per state of the machine")
    parser.add_argument("--fast-gbs", type=float, default=45.0,
                        help="with --states: the bandwidth (GB/s) from which a round counts as the fast state")
    args = parser.parse_args(argv)
    dtypes, models = args.dtypes.split(","), args.models.split(",")
    for dtype in dtypes:
        if dtype not in ("float32", "float16", *Q.FORMATS):
            parser.error(f"--dtypes: unknown format {dtype!r}")
    for model in models:
        if model not in MODEL_NAMES:
            parser.error(f"--models: unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")

    if args.kernels:
        kernels(max(args.repeats, 10))
        return
    if args.states:
        both_states(models, dtypes, args.states, args.fast_gbs)
        return
    if args.side_by_side:
        for dtype in dtypes:
            side_by_side(dtype, args.repeats)
        return
    target = make_target("llvm")
    print(f"TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']} mcpu={target.attrs.get('mcpu')} "
          f"repeats={args.repeats} (medians){' UNSCHEDULED' if args.no_schedule else ''}")
    print("| model | format | weights read/step MB | prefill 128 tok/s | decode b1 tok/s | decode b8 tok/s "
          "| read GB/s | b1 bound tok/s | b1 / bound |")
    print("|" + "---|" * 9)
    spread = []
    for model in models:
        for dtype in dtypes:
            r = bench_one(model, dtype, args.repeats, not args.no_schedule)
            bw = r["bandwidth"]
            bound = bw / r["weight_bytes"]
            print(f"| {model} | {dtype} | {r['weight_bytes'] / 1e6:.0f} | {r['prefill']:.0f} | {r['decode1']:.1f} "
                  f"| {r['decode8']:.1f} | {bw / 1e9:.1f} | {bound:.1f} | {r['ratio']:.2f} |", flush=True)
            spread.append(f"{model} {dtype}: {min(r['ratios']):.2f}-{max(r['ratios']):.2f}")
    print("read GB/s: streaming read bandwidth (every core sums its share of 256 MB, median of 3); b1 bound = read"
          " GB/s / weight bytes per step; b1 / bound: the median over rounds of (32 decode steps) / (the bound"
          " measured just before them), 1.00 at the bound (target >= 0.80). Per-round range: " + "; ".join(spread))


if __name__ == "__main__":
    main()

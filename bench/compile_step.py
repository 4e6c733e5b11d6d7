"""The non-matmul pieces of a decode step, timed directly, a baseline revision against the working tree.

Three parts, each timed in alternating rounds (baseline, current, baseline, ...) in one process so that both
see the same machine load; prints medians and current / baseline ratios.

1. ``kernels``: the TIR kernels the paged KV cache calls in a decode step (``tir_split_rotary``: q/k/v split
   and RoPE; ``kv_cache_transpose_append``: k/v into the pages; the paged decode attention), each built
   alone from ``attention.py`` of the baseline revision and of the working tree, called through
   ``time_evaluator`` on SmolLM2's attention shape (9 query heads, 3 KV heads, head_dim 64) at batch 1 and
   8, short and long contexts.
2. ``overhead``: the VM's own cost per layer: whole decode steps of tiny float32 models (hidden 64) with 30
   layers and with 1 layer, compiled by each revision; ``(t30 - t1) / 29`` is one layer's fixed cost
   (VM instructions, kernel launches, the KV cache builtin).
3. ``step``: whole decode steps of SmolLM2 (``--dtypes``), compiled by each revision, at batch 1 and 8.

Usage:
  python bench/compile_step.py [--baseline REV] [--parts kernels,overhead,step] [--dtypes q4_1,float32]
      [--rounds 7] [--context 64]
Artifacts of a revision are compiled in a subprocess from ``git archive REV`` into
``$SPINDLE_CACHE_DIR/bench-step/`` (reused when present).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "service")]

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv  # noqa: E402

from spindle.compiler.build import PAGE_SIZE, make_target, set_runtime_threads  # noqa: E402
from spindle.compiler.schedules import apply_schedules  # noqa: E402

H_Q, H_KV, D = 9, 3, 64  # SmolLM2-135M
THETA = 100000.0


def _cache_root() -> pathlib.Path:
    base = pathlib.Path(os.environ.get("SPINDLE_CACHE_DIR") or pathlib.Path.home() / ".cache" / "spindle")
    return base / "bench-step"


def source_tree(rev: str | None) -> pathlib.Path:
    """``service/`` of git revision ``rev`` unpacked under the bench cache (None: the working tree)."""
    if rev is None:
        return _ROOT / "service"
    sha = subprocess.check_output(["git", "-C", str(_ROOT), "rev-parse", rev], text=True).strip()
    out = _cache_root() / f"src-{sha[:12]}"
    if not (out / "service").exists():
        out.mkdir(parents=True, exist_ok=True)
        data = subprocess.check_output(["git", "-C", str(_ROOT), "archive", sha, "service"])
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(out, filter="data")
    return out / "service"


def load_attention(service: pathlib.Path, tag: str):
    """``spindle.compiler.attention`` of a source tree, imported as ``spindle_<tag>.compiler.attention``
    (its parent packages registered by path only, without running their ``__init__``)."""
    import importlib  # pylint: disable=import-outside-toplevel
    import types  # pylint: disable=import-outside-toplevel

    root = f"spindle_{tag}"
    for name, path in ((root, service / "spindle"), (f"{root}.compiler", service / "spindle/compiler"),
                       (f"{root}.compiler.schedules", service / "spindle/compiler/schedules")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    return importlib.import_module(f"{root}.compiler.attention")


# -- part 1: the kernels ---------------------------------------------------------------------------------
class _Kernel:
    """A PrimFunc built alone; ``timed(args, reps)`` runs it ``reps`` times from C++ (``time_evaluator``,
    no Python call overhead in the figure) and returns the mean seconds per call."""

    def __init__(self, func, target):
        mod = tvm.IRModule({"main": func})
        with target:
            mod = apply_schedules()(mod)
        self.mod = tvm.compile(mod, target=target).mod
        self.fn = self.mod["main"]

    def __call__(self, *args):
        return self.fn(*args)

    def timed(self, args, reps: int) -> float:
        return self.mod.time_evaluator("main", tvm.cpu(), number=reps, repeat=1)(*args).mean


def kernel_set(att, target) -> dict:
    """The decode-step kernels of one ``attention.py`` (the append is TVM's where the module has none)."""
    append = getattr(att, "transpose_append", None)
    return {
        "rope": _Kernel(getattr(att, "rope_split", att.split_rotary)(THETA, 1.0, D, H_Q, H_KV, "float32", {}), target),
        "append": _Kernel(append(H_KV, D, "float32") if append else tvm_kv._kv_cache_transpose_append(H_KV, D, "float32"),  # pylint: disable=protected-access
                         target),
        "decode": _Kernel(att.paged_decode(H_KV, H_Q, D, "float32"), target),
    }


def kernel_inputs(batch: int, context: int, rng) -> dict:
    """Arguments of the three kernels for ``batch`` sequences of ``context`` cached tokens each."""
    pages_per_seq = -(-(context + 1) // PAGE_SIZE)
    num_pages = batch * pages_per_seq + 1
    t = tvm.runtime.tensor
    pages = rng.standard_normal((num_pages, 2, H_KV, PAGE_SIZE, D)).astype("float32")
    page_values = rng.permutation(num_pages)[: batch * pages_per_seq].astype("int32")
    last = (context + 1) - (pages_per_seq - 1) * PAGE_SIZE
    slots = np.array([page_values[b * pages_per_seq + pages_per_seq - 1] * PAGE_SIZE + last - 1
                      for b in range(batch)], "int32")
    pos = np.full(batch, context, "int32")
    return {
        "qkv": t(rng.standard_normal((batch, H_Q + 2 * H_KV, D)).astype("float32")),
        "pos": t(pos), "slots": t(slots), "pages": t(pages),
        "q": t(np.zeros((batch, H_Q, D), "float32")), "k": t(np.zeros((batch, H_KV, D), "float32")),
        "v": t(np.zeros((batch, H_KV, D), "float32")),
        "page_indptr": t(np.arange(batch + 1, dtype="int32") * pages_per_seq), "page_values": t(page_values),
        "last": t(np.full(batch, last, "int32")), "koff": t(np.zeros(batch, "int32")),
        "o": t(np.zeros((batch, H_Q, D), "float32")), "lse": t(np.zeros((batch, H_Q), "float32")),
    }


def kernel_calls(kernels: dict, a: dict) -> dict:
    return {
        "rope": (kernels["rope"], (a["qkv"], a["pos"], a["q"], a["k"], a["v"], 1)),
        "append": (kernels["append"], (a["pages"], a["k"], a["v"], a["slots"])),
        "decode": (kernels["decode"], (a["q"], a["pages"], a["page_indptr"], a["page_values"], a["last"],
                                       a["koff"], a["pos"], a["o"], a["lse"], 0, 1.0, THETA, D ** -0.5)),
    }


def bench_kernels(revs: dict, rounds: int, target) -> None:
    rng = np.random.default_rng(0)
    sets = {tag: kernel_set(load_attention(src, tag), target) for tag, src in revs.items()}
    cases = [(b, c) for b in (1, 8) for c in (64, 500, 2000)]
    inputs = {case: kernel_inputs(*case, rng) for case in cases}
    # The two revisions must agree before their speed is compared.
    for case in cases:
        outs = {}
        for tag, ks in sets.items():
            calls = kernel_calls(ks, inputs[case])
            for name in ("rope", "append", "decode"):
                fn, args = calls[name]
                fn(*args)
            a = inputs[case]
            outs[tag] = [a[n].numpy().copy() for n in ("q", "k", "v", "o", "lse")]
        base, cur = outs.values()
        for name, x, y in zip(("q", "k", "v", "o", "lse"), base, cur):
            err = float(np.abs(x - y).max())
            if err > 1e-4 * max(1.0, float(np.abs(x).max())):
                raise SystemExit(f"kernels disagree on {name} at batch {case[0]} context {case[1]}: {err}")
    times = {(tag, case, name): [] for tag in sets for case in cases for name in ("rope", "append", "decode")}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for case in cases:
            for tag, ks in sets.items():
                for name, (fn, args) in kernel_calls(ks, inputs[case]).items():
                    reps = 400 if name != "decode" or case[1] < 1000 else 100
                    times[(tag, case, name)].append(fn.timed(args, reps))
    base_tag, cur_tag = list(sets)
    print(f"\nkernels of one layer's decode attention (SmolLM2 shape: {H_Q} q heads, {H_KV} KV heads, "
          f"head_dim {D}), us per call, median of {rounds} rounds, TVM_NUM_THREADS="
          f"{os.environ['TVM_NUM_THREADS']}, load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"| batch | context | kernel | {base_tag} us | {cur_tag} us | {base_tag} / {cur_tag} |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        tot = {base_tag: 0.0, cur_tag: 0.0}
        for name in ("rope", "append", "decode"):
            tb = float(np.median(times[(base_tag, case, name)]))
            tc = float(np.median(times[(cur_tag, case, name)]))
            tot[base_tag] += tb
            tot[cur_tag] += tc
            print(f"| {case[0]} | {case[1]} | {name} | {tb * 1e6:.2f} | {tc * 1e6:.2f} | {tb / tc:.2f}x |")
        print(f"| {case[0]} | {case[1]} | **all three** | {tot[base_tag] * 1e6:.2f} | {tot[cur_tag] * 1e6:.2f} "
              f"| {tot[base_tag] / tot[cur_tag]:.2f}x |")


# -- parts 2 and 3: whole decode steps of compiled artifacts ----------------------------------------------
_COMPILE = r"""
import sys
from spindle.compiler.api import compile_model
from spindle.compiler.testing import build_tiny_artifact
kind, out = sys.argv[1], sys.argv[2]
if kind.startswith("tiny"):
    build_tiny_artifact(out, dtype="float32", num_hidden_layers=int(kind[4:]), hidden_size=64,
                        num_attention_heads=4, num_key_value_heads=2)
else:
    compile_model(None, dtype=kind, output=out, progress=False)
"""


def artifact(src: pathlib.Path, tag: str, kind: str) -> pathlib.Path:
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((src / "spindle/compiler").rglob("*.py")))
                         ).hexdigest()[:12]
    out = _cache_root() / f"{kind}-{key}"
    if not (out / "model.so").exists():
        print(f"compiling {kind} with {tag} ({src})", file=sys.stderr)
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, "-c", _COMPILE, kind, str(out)], check=True, env=env)
    return out


def step_times(runners: dict, batch: int, context: int, rounds: int, steps: int = 20) -> dict:
    """Median decode-step seconds per runner, rounds alternating between runners."""
    state = {}
    for tag, r in runners.items():
        kv = r.create_kv_cache(max_batch_size=8, max_total_seq_len=batch * (context + (steps + 1) * rounds + 32))
        for i in range(batch):
            r.add_sequence(kv, i)
        for i in range(batch):  # one sequence at a time, in chunks the library is planned for
            tokens = [(7 * j + i) % 300 + 3 for j in range(context)]
            for start in range(0, context, 512):
                r.prefill(kv, [i], [tokens[start:start + 512]])
        state[tag] = kv
    times = {tag: [] for tag in runners}
    for _ in range(rounds):
        for tag, r in runners.items():
            ids = list(range(batch))
            r.decode(state[tag], ids, [5] * batch)
            t = time.perf_counter()
            for _ in range(steps):
                r.decode(state[tag], ids, [5] * batch)
            times[tag].append((time.perf_counter() - t) / steps)
    return {tag: float(np.median(v)) for tag, v in times.items()}


def bench_overhead(revs: dict, rounds: int, context: int) -> None:
    from spindle.compiler.runner import ModelRunner  # pylint: disable=import-outside-toplevel

    loads = [os.getloadavg()[0]]
    res = {}
    for layers in (1, 30):
        runners = {tag: ModelRunner(artifact(src, tag, f"tiny{layers}")) for tag, src in revs.items()}
        for batch in (1, 8):
            res[(layers, batch)] = step_times(runners, batch, context, rounds)
    loads.append(os.getloadavg()[0])
    tags = list(revs)
    print(f"\nfixed cost of a layer: decode steps of tiny float32 models (hidden 64), context {context}, "
          f"median of {rounds} rounds, load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"| batch | {tags[0]}: 1 layer / 30 layers us | {tags[1]}: 1 layer / 30 layers us "
          f"| {tags[0]} us per layer | {tags[1]} us per layer | ratio |")
    print("|---|---|---|---|---|---|")
    for batch in (1, 8):
        per = {t: (res[(30, batch)][t] - res[(1, batch)][t]) / 29 for t in tags}
        print(f"| {batch} | {res[(1, batch)][tags[0]] * 1e6:.0f} / {res[(30, batch)][tags[0]] * 1e6:.0f} "
              f"| {res[(1, batch)][tags[1]] * 1e6:.0f} / {res[(30, batch)][tags[1]] * 1e6:.0f} "
              f"| {per[tags[0]] * 1e6:.1f} | {per[tags[1]] * 1e6:.1f} | {per[tags[0]] / per[tags[1]]:.2f}x |")


def bench_step(revs: dict, rounds: int, dtypes: list, context: int) -> None:
    from spindle.compiler.runner import ModelRunner  # pylint: disable=import-outside-toplevel

    tags = list(revs)
    rows = []
    loads = [os.getloadavg()[0]]
    for dtype in dtypes:
        runners = {tag: ModelRunner(artifact(src, tag, dtype)) for tag, src in revs.items()}
        for batch in (1, 8):
            for ctx in (context, 1000):
                t = step_times(runners, batch, ctx, rounds)
                rows.append((dtype, batch, ctx, t))
        del runners
    loads.append(os.getloadavg()[0])
    print(f"\nSmolLM2 decode step, ms, median of {rounds} rounds, load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"| format | batch | context | {tags[0]} ms | {tags[1]} ms | {tags[0]} / {tags[1]} |")
    print("|---|---|---|---|---|---|")
    for dtype, batch, ctx, t in rows:
        print(f"| {dtype} | {batch} | {ctx} | {t[tags[0]] * 1e3:.3f} | {t[tags[1]] * 1e3:.3f} "
              f"| {t[tags[0]] / t[tags[1]]:.2f}x |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--parts", default="kernels,overhead,step")
    parser.add_argument("--dtypes", default="q4_1,float32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--context", type=int, default=64, help="cached tokens per sequence (short case)")
    args = parser.parse_args(argv)
    set_runtime_threads()
    revs = {"baseline": source_tree(args.baseline), "current": source_tree(None)}
    parts = args.parts.split(",")
    print(f"baseline: {args.baseline}; load average {os.getloadavg()}")
    if "kernels" in parts:
        bench_kernels(revs, args.rounds, make_target("llvm"))
    if "overhead" in parts:
        bench_overhead(revs, args.rounds, args.context)
    if "step" in parts:
        bench_step(revs, args.rounds, args.dtypes.split(","), args.context)


if __name__ == "__main__":
    main()

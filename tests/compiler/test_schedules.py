"""The CPU schedule rules keep numerics: scheduled kernels against unscheduled ones and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend import nn

from spindle.compiler import quantization as Q
from spindle.compiler.schedules import apply_schedules, cpu_pipeline

from spindle.compiler.runner import ModelRunner
from spindle.compiler.testing import cached_tiny_artifact

TARGET = tvm.target.Target({"kind": "llvm"})
PACKED = {"param_mode": "packed", "effect_mode": "none"}
DTYPES = ["float32", "float16", "q8_0", "q4_1"]


def _linear(k: int, n: int, dtype: str) -> nn.Module:
    if dtype in Q.FORMATS:
        return Q.QuantizedLinear(k, n, dtype, kernel="float")  # the float kernel is what these rules schedule
    return nn.Linear(k, n, bias=False, dtype=dtype, out_dtype="float32")


class _Kernels(nn.Module):
    """Matmuls with and without epilogues, on symbolic and static row counts, plus norm/elementwise."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.act = "float16" if dtype == "float16" else "float32"
        self.wide = _linear(96, 100, dtype)   # N not a multiple of 8
        self.deep = _linear(256, 48, dtype)   # several quantization groups
        self.norm = nn.RMSNorm(96, -1, 1e-5, bias=False, dtype=self.act)

    def wide_fn(self, x: nn.Tensor):
        return self.wide(x)

    def deep_add(self, x: nn.Tensor, res: nn.Tensor):
        return self.deep(x).astype(self.act) + res

    def static_one(self, x: nn.Tensor):
        return self.deep(x)

    def norm_silu(self, x: nn.Tensor):
        h = self.norm(x)
        a, b = nn.op.split(h, 2, axis=-1)
        return nn.op.silu(a) * b

    def spec(self):
        act = self.act
        return {
            "wide_fn": {"x": nn.spec.Tensor([1, "seq_len", 96], act), "$": PACKED},
            "deep_add": {"x": nn.spec.Tensor(["batch", 1, 256], act),
                         "res": nn.spec.Tensor(["batch", 1, 48], act), "$": PACKED},
            "static_one": {"x": nn.spec.Tensor([1, 1, 256], act), "$": PACKED},
            "norm_silu": {"x": nn.spec.Tensor([1, "seq_len", 96], act), "$": PACKED},
        }


def _compile(dtype: str, schedule: bool):
    model = _Kernels(dtype)
    mod, named = model.export_tvm(spec=model.spec())
    ex = tvm.compile(mod, TARGET, relax_pipeline=cpu_pipeline(TARGET, schedule=schedule))
    return relax.VirtualMachine(ex, tvm.cpu()), [name for name, _ in named], mod


@pytest.fixture(scope="module", params=DTYPES)
def kernels(request):
    dtype = request.param
    rng = np.random.default_rng(7)
    vm_s, names, mod = _compile(dtype, True)
    vm_u, _, _ = _compile(dtype, False)
    values, refs = {}, {}
    for prefix, (n, k) in {"wide": (100, 96), "deep": (48, 256)}.items():
        w = rng.standard_normal((n, k)).astype(np.float32)
        if dtype in Q.FORMATS:
            arrays = Q.quantize(dtype, w)
            values.update({f"{prefix}.{key}": a for key, a in arrays.items()})
            refs[prefix] = Q.dequantize(dtype, arrays)
        else:
            values[f"{prefix}.weight"] = w.astype(dtype)
            refs[prefix] = w.astype(dtype).astype(np.float32)
    values["norm.weight"] = rng.uniform(0.5, 1.5, 96).astype("float16" if dtype == "float16" else "float32")
    params = [tvm.runtime.tensor(values[name]) for name in names]
    return {"dtype": dtype, "vm_s": vm_s, "vm_u": vm_u, "params": params, "refs": refs, "mod": mod,
            "values": values, "rng": rng}


def _tol(dtype: str) -> float:
    return 2e-2 if dtype == "float16" else 2e-4


def _run(k, fn: str, *inputs):
    args = [tvm.runtime.tensor(a) for a in inputs]
    return (k["vm_s"][fn](*args, k["params"]).numpy().astype(np.float64),
            k["vm_u"][fn](*args, k["params"]).numpy().astype(np.float64))


@pytest.mark.parametrize("seq_len", [1, 3, 4, 9, 33])
def test_matmul_symbolic_rows(kernels, seq_len):
    act = "float16" if kernels["dtype"] == "float16" else "float32"
    x = kernels["rng"].standard_normal((1, seq_len, 96)).astype(act)
    sched, plain = _run(kernels, "wide_fn", x)
    expected = x.astype(np.float64) @ kernels["refs"]["wide"].T.astype(np.float64)
    tol = _tol(kernels["dtype"])
    np.testing.assert_allclose(sched, plain, rtol=tol, atol=tol)
    np.testing.assert_allclose(sched, expected, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("batch", [1, 2, 8])
def test_matmul_with_residual_epilogue(kernels, batch):
    act = "float16" if kernels["dtype"] == "float16" else "float32"
    x = (kernels["rng"].standard_normal((batch, 1, 256)) * 0.1).astype(act)
    res = kernels["rng"].standard_normal((batch, 1, 48)).astype(act)
    sched, plain = _run(kernels, "deep_add", x, res)
    expected = x.astype(np.float64) @ kernels["refs"]["deep"].T.astype(np.float64) + res
    tol = _tol(kernels["dtype"])
    np.testing.assert_allclose(sched, plain, rtol=tol, atol=tol)
    np.testing.assert_allclose(sched, expected, rtol=tol, atol=tol * 10)


def test_matmul_static_single_row(kernels):
    act = "float16" if kernels["dtype"] == "float16" else "float32"
    x = kernels["rng"].standard_normal((1, 1, 256)).astype(act)
    sched, plain = _run(kernels, "static_one", x)
    tol = _tol(kernels["dtype"])
    np.testing.assert_allclose(sched, plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("seq_len", [1, 6, 17])
def test_rmsnorm_and_swiglu(kernels, seq_len):
    act = "float16" if kernels["dtype"] == "float16" else "float32"
    x = kernels["rng"].standard_normal((1, seq_len, 96)).astype(act)
    sched, plain = _run(kernels, "norm_silu", x)
    x64 = x.astype(np.float64)
    h = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-5) * kernels["values"]["norm.weight"]
    a, b = h[..., :48], h[..., 48:]
    expected = a / (1 + np.exp(-a)) * b
    tol = _tol(kernels["dtype"])
    np.testing.assert_allclose(sched, plain, rtol=tol, atol=tol)
    np.testing.assert_allclose(sched, expected, rtol=tol, atol=tol)


def test_every_kernel_is_scheduled(kernels):
    """The rules accept every fused kernel of these modules, and the matmuls run in parallel."""
    from tvm.relax.backend.cpu_generic import pipeline as P  # pylint: disable=import-outside-toplevel

    passes = [relax.transform.FuseTransposeMatmul(), *P.library_dispatch_passes(TARGET),
              *P.legalize_passes(TARGET), relax.transform.DeadCodeElimination(), apply_schedules()]
    with TARGET:
        mod = tvm.transform.Sequential(passes)(kernels["mod"])
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    unscheduled = [name for name, f in funcs.items() if not f.attrs or not f.attrs.get("tirx.is_scheduled")]
    assert not unscheduled
    matmuls = [f for name, f in funcs.items() if "matmul" in name]
    assert matmuls
    for f in matmuls:
        assert "T.parallel" in f.script() and "T.vectorized" in f.script()


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_llama_scheduled_matches_unscheduled(artifact_cache_root, dtype):
    """The compiler's tiny Llama: batched prefill of sequences of different lengths, then batched
    decode steps (batch 3, and batch 1 through the one-row kernels), then a chunk on cached prefixes,
    scheduled against unscheduled."""
    outputs = []
    for schedule in (False, True):
        runner = ModelRunner(cached_tiny_artifact(artifact_cache_root, dtype=dtype, seed=0, schedule=schedule))
        kv = runner.create_kv_cache(max_batch_size=4, max_total_seq_len=256, prefill_chunk_size=64)
        for sid in range(3):
            runner.add_sequence(kv, sid)
        steps = [runner.prefill(kv, [0, 1, 2], [[5, 6, 7, 8, 9], [10, 11], list(range(20, 40))])]
        for t in range(2):
            steps.append(runner.decode(kv, [0, 1, 2], [40 + t, 50 + t, 60 + t]))
        steps.append(runner.decode(kv, [1], [70]))
        # A second chunk on a cached prefix runs the paged prefill kernel.
        steps.append(runner.prefill(kv, [2, 0], [[80, 81, 82], [90]]))
        outputs.append(steps)
    for plain, sched in zip(*outputs):
        if dtype == "float16":
            # float16 layers round differently when the reduction order changes: compare at fp16 scale.
            scale = float(np.abs(plain).max())
            np.testing.assert_allclose(sched, plain, rtol=0, atol=1e-2 * scale)
        else:
            np.testing.assert_allclose(sched, plain, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(sched.argmax(-1), plain.argmax(-1))

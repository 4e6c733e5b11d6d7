"""RoPE scaling (Llama 3.1's ``llama3`` bands, ``linear``) through the CPU schedule rules, against the
numpy reference's independent implementation of the frequency scaling."""

from __future__ import annotations

import numpy as np
import pytest

from spindle.compiler.model import ModelConfig
from spindle.compiler.testing import random_params, tiny_config

from .reference import compare_with_reference

LLAMA3 = {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64}, "rope_theta": 500000.0}
LINEAR = {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}
PROMPTS = [list(range(3, 90)), [8, 99]]  # 87 positions: past the 64 original positions of LLAMA3


@pytest.mark.parametrize("dims", [LLAMA3, LINEAR], ids=["llama3", "linear"])
def test_scaled_rope_compiles_and_matches_reference(tiny_model_factory, dims):
    """Built with the schedule rules (the scaled RoPE kernel binds its frequencies with let-expressions)."""
    artifact = tiny_model_factory("float32", **dims)
    diffs = compare_with_reference(artifact, random_params(tiny_config(**dims), seed=0), decode_steps=3,
                                   prompts=PROMPTS)
    assert max(diffs) < 1e-4, diffs


def test_scaling_is_applied(tiny_model_factory):
    """The scaled model differs from the unscaled one on the same weights (the test can fail)."""
    from spindle.compiler.runner import ModelRunner

    outs = []
    for dims in (LINEAR, {}):
        runner = ModelRunner(tiny_model_factory("float32", **dims))
        kv = runner.create_kv_cache()
        runner.add_sequence(kv, 0)
        outs.append(runner.prefill(kv, [0], [PROMPTS[0]])[0])
    assert np.abs(outs[0] - outs[1]).max() > 1e-2


@pytest.mark.parametrize("scaling", [{"rope_type": "dynamic", "factor": 2.0}, {"rope_type": "linear"},
                                     {"rope_type": "linear", "factor": 0}])
def test_unsupported_scaling_names_the_field(scaling):
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelConfig(rope_scaling=scaling)


@pytest.mark.parametrize("dims", [{}, LLAMA3, LINEAR], ids=["plain", "llama3", "linear"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_split_rotary_kernel_matches_tvm_kernel(dims, dtype):
    """Spindle's RoPE kernel (cos/sin once per position and dimension) against TVM's bundled one."""
    import tvm
    from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv

    from spindle.compiler import attention
    from spindle.compiler.build import make_target

    cfg = tiny_config(**dims)
    scale, scaling = cfg.rope_parameters()
    h_q, h_kv, d, n = 4, 2, 16, 37
    target = make_target("llvm")
    rng = np.random.default_rng(3)
    qkv = rng.standard_normal((n, h_q + 2 * h_kv, d)).astype(dtype)
    pos = ((np.arange(n) * 29) % 500).astype("int32")
    outs = []
    for func in (attention.split_rotary(cfg.rope_theta, scale, d, h_q, h_kv, dtype, scaling),
                 tvm_kv.llama_rope_with_position_map(cfg.rope_theta, scale, d, h_q, h_kv, dtype, scaling, d)):
        fn = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)["main"]
        bufs = [tvm.runtime.tensor(np.zeros((n, h, d), dtype)) for h in (h_q, h_kv, h_kv)]
        fn(tvm.runtime.tensor(qkv), tvm.runtime.tensor(pos), *bufs, 1)
        outs.append([b.numpy().astype(np.float64) for b in bufs])
    tol = 2e-3 if dtype == "float16" else 1e-5
    for mine, theirs in zip(*outs):
        np.testing.assert_allclose(mine, theirs, atol=tol, rtol=tol)
    np.testing.assert_array_equal(outs[0][2], qkv[:, h_q + h_kv:].astype(np.float64))

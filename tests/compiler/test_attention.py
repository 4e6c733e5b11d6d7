"""Spindle's CPU attention kernels (``spindle.compiler.attention``) inside compiled tiny models, against the
independent numpy reference: GQA ratios, head dims, prompts over several KV pages, chunked prefill onto a
cached prefix packed with a new sequence, batched decode, and Mistral's sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from spindle.compiler.model import ModelConfig
from spindle.compiler.runner import ModelRunner
from spindle.compiler.testing import random_params, tiny_config

from .reference import ReferenceLlama

LONG = [(7 * i + 3) % 380 + 3 for i in range(100)]  # 100 tokens: seven 16-token pages


def run_scenario(artifact, params, atol: float = 1e-4) -> float:
    """Packed prefill of a long and a short prompt, batched decode, then a packed prefill that continues
    the long sequence (paged prefill over its cached prefix) next to a new sequence, then decode again.
    Every step's logits are compared with the reference; returns the largest difference."""
    runner = ModelRunner(artifact)
    ref = ReferenceLlama(runner.config, params)
    kv = runner.create_kv_cache(max_batch_size=4, max_total_seq_len=512, prefill_chunk_size=128)
    worst = 0.0

    def check(got, seq_ids, token_lists, what):
        nonlocal worst
        want = np.stack([ref.forward(i, t) for i, t in zip(seq_ids, token_lists)])
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        assert diff < atol, f"{what}: max abs logit difference {diff}"
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=what)
        return [int(t) for t in want.argmax(-1)]

    for sid in (0, 1):
        runner.add_sequence(kv, sid)
    prompts = [LONG[:75], [9, 8, 7, 6, 5]]  # 75 keys: 4 x 16-key tiles and a rest
    tokens = check(runner.prefill(kv, [0, 1], prompts), [0, 1], prompts, "packed prefill")
    for step in range(3):
        tokens = check(runner.decode(kv, [0, 1], tokens), [0, 1], [[t] for t in tokens], f"decode {step}")
    runner.add_sequence(kv, 2)
    chunks = [LONG[75:], [11, 12, 13, 14, 15, 16, 17, 18, 19]]
    tokens = check(runner.prefill(kv, [0, 2], chunks), [0, 2], chunks, "chunk onto a cached prefix")
    ids = [0, 2, 1]
    tokens = tokens + [5]
    for step in range(2):
        tokens = check(runner.decode(kv, ids, tokens), ids, [[t] for t in tokens], f"decode after chunk {step}")
    return worst


@pytest.mark.parametrize("dims", [
    {"num_attention_heads": 8, "num_key_value_heads": 2},   # GQA 4:1, head_dim 8
    {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1},  # head_dim 32, MQA
    {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 2},  # head_dim 64, MHA
], ids=["gqa4-d8", "mqa-d32", "mha-d64"])
def test_attention_shapes_match_reference(tiny_model_factory, dims):
    run_scenario(tiny_model_factory("float32", seed=1, **dims), random_params(tiny_config(**dims), seed=1))


def test_default_tiny_model_scenario(tiny_model_dir):
    run_scenario(tiny_model_dir, random_params(tiny_config(), seed=0))


MISTRAL = {"model_type": "mistral", "sliding_window": 12}


def test_sliding_window_matches_reference(tiny_model_factory):
    """A tiny Mistral with a 12-position window: prompts, chunks and decode steps all cross the window."""
    params = random_params(tiny_config(**MISTRAL), seed=2)
    run_scenario(tiny_model_factory("float32", seed=2, **MISTRAL), params)


def test_sliding_window_changes_the_result(tiny_model_factory):
    """The window is really applied: past it the logits differ from full attention's."""
    params = random_params(tiny_config(**MISTRAL), seed=2)
    runner = ModelRunner(tiny_model_factory("float32", seed=2, **MISTRAL))
    kv = runner.create_kv_cache()
    runner.add_sequence(kv, 0)
    got = runner.prefill(kv, [0], [LONG[:40]])[0]
    full = ReferenceLlama({**runner.config, "sliding_window": 0}, params).forward(0, LONG[:40])
    windowed = ReferenceLlama(runner.config, params).forward(0, LONG[:40])
    assert np.abs(full - windowed).max() > 1e-2
    np.testing.assert_allclose(got, windowed, atol=1e-4)


def test_window_covering_the_context_is_full_attention():
    cfg = tiny_config(model_type="mistral", sliding_window=4096, context_window_size=512)
    assert cfg.effective_sliding_window == 0
    assert tiny_config(**MISTRAL).effective_sliding_window == 12


@pytest.mark.parametrize("value", [-1, 1.5, True, "8"])
def test_bad_sliding_window_names_the_field(value):
    with pytest.raises(ValueError, match="sliding_window"):
        ModelConfig(sliding_window=value)


def test_float16_kernels_scenario(tiny_model_factory):
    """float16 activations and KV cache through the same kernels (float32 inside): fp16-level agreement."""
    params = {k: v.astype(np.float16).astype(np.float32) for k, v in random_params(tiny_config(), seed=0).items()}
    runner = ModelRunner(tiny_model_factory("float16"))
    ref = ReferenceLlama(runner.config, params)
    kv = runner.create_kv_cache()
    runner.add_sequence(kv, 0)
    runner.prefill(kv, [0], [LONG[:40]])
    got = runner.prefill(kv, [0], [LONG[40:]])[0]
    want = ref.forward(0, LONG)
    assert np.abs(got - want).max() < 0.1


# -- the decode-step kernels alone, against numpy ----------------------------------------------------------
def _build_kernel(func):
    import tvm  # pylint: disable=import-outside-toplevel

    from spindle.compiler.build import make_target  # pylint: disable=import-outside-toplevel

    return tvm.compile(tvm.IRModule({"main": func}), target=make_target("llvm"))["main"]


@pytest.fixture(scope="module")
def decode_kernels():
    """Paged decode kernels for SmolLM2's shape (9 query heads on 3 KV heads, head_dim 64) and a head_dim-8
    GQA-4 shape, with and without a sliding window."""
    from spindle.compiler.schedules.decode_kernels import paged_decode  # pylint: disable=import-outside-toplevel

    return {(h_kv, h_q, d, w): _build_kernel(paged_decode(h_kv, h_q, d, "float32", w))
            for h_kv, h_q, d in ((3, 9, 64), (2, 8, 8)) for w in (0, 20)}


def _decode_case(kernel, h_kv, h_q, d, window, lengths, rng):
    """Runs the decode kernel on pages holding sequences of `lengths` keys (pages shuffled) and compares the
    output and base-2 log-sum-exp with numpy."""
    import tvm  # pylint: disable=import-outside-toplevel

    page = 16
    npages = [-(-n // page) for n in lengths]
    total = sum(npages) + 3
    pages = rng.standard_normal((total, 2, h_kv, page, d)).astype("float32")
    order = rng.permutation(total).astype("int32")
    indptr = np.concatenate([[0], np.cumsum(npages)]).astype("int32")
    values = order[: indptr[-1]]
    last = np.array([n - (p - 1) * page if p else 0 for n, p in zip(lengths, npages)], "int32")
    batch = len(lengths)
    q = rng.standard_normal((batch, h_q, d)).astype("float32")
    pos = np.array([max(n - 1, 0) for n in lengths], "int32")  # the query is the newest key
    scale = d ** -0.5
    out = tvm.runtime.tensor(np.zeros((batch, h_q, d), "float32"))
    lse = tvm.runtime.tensor(np.zeros((batch, h_q), "float32"))
    t = tvm.runtime.tensor
    kernel(t(q), t(pages), t(indptr), t(values), t(last), t(np.zeros(batch, "int32")), t(pos), out, lse,
           0, 1.0, 10000.0, scale)
    group = h_q // h_kv
    for b, n in enumerate(lengths):
        slots = [(values[indptr[b] + j // page], j % page) for j in range(n)]
        lo = max(pos[b] - window + 1, 0) if window else 0
        slots = slots[lo:]
        for h in range(h_q):
            if not slots:
                np.testing.assert_array_equal(out.numpy()[b, h], 0)
                assert lse.numpy()[b, h] == pytest.approx(-5e4)
                continue
            keys = np.stack([pages[p, 0, h // group, s] for p, s in slots])
            vals = np.stack([pages[p, 1, h // group, s] for p, s in slots])
            s2 = keys.astype("float64") @ q[b, h] * scale * np.log2(np.e)
            m = s2.max()
            w = np.exp2(s2 - m)
            np.testing.assert_allclose(out.numpy()[b, h], w @ vals / w.sum(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"batch {batch} sequence {b} ({n} keys) head {h}")
            assert lse.numpy()[b, h] == pytest.approx(m + np.log2(w.sum()), abs=1e-4)


@pytest.mark.parametrize("lengths", [
    [1], [15], [16], [17], [127], [128], [129], [300],  # batch 1 around page and 128-key block boundaries
    [700],  # batch 1, long: keys split over several parallel tasks and merged
    [300, 1],  # batch 2, few (sequence, KV head) pairs: cut into key ranges, some nearly empty
    [33, 40], [1, 2, 15, 16, 3, 9],  # batches 2 and 6, little work: serial (DECODE_PARALLEL_MIN)
    [1, 2, 15, 16, 3, 9, 12, 5],  # batch 8, one page each: parallel over (sequence, KV head)
    [15, 16, 17, 1, 33, 128, 129, 64],  # batch 8, parallel over (sequence, KV head)
    [200, 16, 300, 1, 129, 250, 17, 90],
], ids=lambda v: "-".join(map(str, v)))
@pytest.mark.parametrize("shape", [(3, 9, 64), (2, 8, 8)], ids=["gqa3-d64", "gqa4-d8"])
@pytest.mark.parametrize("window", [0, 20], ids=["full", "window20"])
def test_decode_kernel_matches_numpy(decode_kernels, lengths, shape, window):
    _decode_case(decode_kernels[(*shape, window)], *shape, window, lengths, np.random.default_rng(len(lengths)))


@pytest.mark.parametrize("scale", [1.0, 0.25], ids=["default", "linear4"])
def test_rope_split_kernel_matches_numpy(scale):
    """The RoPE split at positions up to 1e5 (theta 1e5, SmolLM2's): the angle rounded in float32 as Hugging
    Face computes it, its cos/sin exact; q/k rotated, v copied."""
    import tvm  # pylint: disable=import-outside-toplevel

    from spindle.compiler.schedules.decode_kernels import split_rotary_default  # pylint: disable=import-outside-toplevel

    h_q, h_kv, d, theta = 9, 3, 64, 100000.0
    fn = _build_kernel(split_rotary_default(theta, scale, d, h_q, h_kv, "float32"))
    rng = np.random.default_rng(3)
    pos = np.array([0, 1, 17, 511, 5000, 65535, 100000] + list(range(40, 80)), "int32")  # 47 tokens: parallel
    for tokens in (pos[:7], pos):
        qkv = rng.standard_normal((len(tokens), h_q + 2 * h_kv, d)).astype("float32")
        outs = [tvm.runtime.tensor(np.zeros((len(tokens), h, d), "float32")) for h in (h_q, h_kv, h_kv)]
        fn(tvm.runtime.tensor(qkv), tvm.runtime.tensor(tokens), *outs, 1)
        den = (theta ** (np.arange(0, d, 2, dtype="float64") / d)).astype("float32")
        ang = ((tokens[:, None].astype("float32") * np.float32(scale)) / den[None, :]).astype("float64")
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x = qkv[:, : h_q + h_kv].astype("float64")
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        want = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
        np.testing.assert_allclose(outs[0].numpy(), want[:, :h_q], rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(outs[1].numpy(), want[:, h_q:], rtol=1e-5, atol=2e-6)
        np.testing.assert_array_equal(outs[2].numpy(), qkv[:, h_q + h_kv:])


def test_append_kernel_writes_page_slots():
    import tvm  # pylint: disable=import-outside-toplevel

    from spindle.compiler.schedules.decode_kernels import transpose_append  # pylint: disable=import-outside-toplevel

    fn = _build_kernel(transpose_append(3, 64, "float32"))
    rng = np.random.default_rng(4)
    for ntok in (1, 8, 300):  # decode batches (serial) and a prefill (parallel)
        pages = np.zeros((40, 2, 3, 16, 64), "float32")
        slots = rng.permutation(40 * 16)[:ntok].astype("int32")
        slots[ntok // 2] = -1  # a token the cache skips
        k, v = (rng.standard_normal((ntok, 3, 64)).astype("float32") for _ in range(2))
        got = tvm.runtime.tensor(pages)
        fn(got, tvm.runtime.tensor(k), tvm.runtime.tensor(v), tvm.runtime.tensor(slots))
        want = pages.copy()
        for t, slot in enumerate(slots):
            if slot >= 0:
                want[slot // 16, 0, :, slot % 16] = k[t]
                want[slot // 16, 1, :, slot % 16] = v[t]
        np.testing.assert_array_equal(got.numpy(), want)


def test_batch8_decode_across_page_boundaries(tiny_model_factory):
    """Eight sequences of different lengths (below, at and past 16-token page boundaries) decoded together,
    then again after a sequence is dropped, against the reference."""
    params = random_params(tiny_config(), seed=5)
    runner = ModelRunner(tiny_model_factory("float32", seed=5))
    ref = ReferenceLlama(runner.config, params)
    kv = runner.create_kv_cache(max_batch_size=8, max_total_seq_len=512)
    prompts = [LONG[i:i + n] for i, n in enumerate((15, 16, 17, 1, 31, 32, 33, 47))]
    for sid in range(8):
        runner.add_sequence(kv, sid)
    runner.prefill(kv, list(range(8)), prompts)
    for sid, prompt in enumerate(prompts):
        ref.forward(sid, prompt)
    ids, tokens = list(range(8)), [3 + i for i in range(8)]
    for step in range(3):
        got = runner.decode(kv, ids, tokens)
        want = np.stack([ref.forward(i, [t]) for i, t in zip(ids, tokens)])
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"step {step}")
        tokens = [int(t) for t in want.argmax(-1)]
        if step == 1:
            runner.remove_sequence(kv, 3)
            ids, tokens = ids[:3] + ids[4:], tokens[:3] + tokens[4:]

"""An independent numpy implementation of the Llama forward pass (float64), from the HF-style weights."""

from __future__ import annotations

import numpy as np


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _llama3_scaling(inv: np.ndarray, sc: dict) -> np.ndarray:
    """Llama 3.1 frequency scaling, as Hugging Face transformers defines it."""
    orig, factor = sc["original_max_position_embeddings"], sc["factor"]
    low, high = sc["low_freq_factor"], sc["high_freq_factor"]
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > orig / low, inv / factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < orig / high) & ~(wavelen > orig / low)
    return np.where(medium, smoothed, scaled)


def _rope(x: np.ndarray, positions: np.ndarray, theta: float, scaling: dict | None = None) -> np.ndarray:
    """Rotate-half RoPE. x: [seq, heads, dim]."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type"))
    if kind == "llama3":
        inv = _llama3_scaling(inv, scaling)
    elif kind == "linear":  # positions divided by the factor
        inv = inv / scaling["factor"]
    elif scaling and kind != "default":
        raise NotImplementedError(f"reference RoPE scaling {scaling}")
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


TIE = 2e-5  # distance to a rounding boundary, in units of the quantization step, counted as a near tie


class ReferenceLlama:
    """Keeps a per-sequence K/V history; ``forward(seq_id, tokens)`` returns the last position's logits."""

    def __init__(self, cfg: dict, params: dict[str, np.ndarray], quantize_activations: bool = False):
        self.cfg = cfg
        self.p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.kv: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.quantize_activations = quantize_activations
        self.near_ties: dict[int, int] = {}  # per sequence: activations within TIE of a rounding boundary
        self._seq = -1

    def _mm(self, x: np.ndarray, name: str) -> np.ndarray:
        """``x @ W.T``; with ``quantize_activations`` x is first rounded as the int8 q8_0/q4_1 kernels
        round it (float32, int8 per group of 32 with a float scale: ``quantization.quantize_activations``)."""
        if self.quantize_activations:
            from spindle.compiler.quantization import quantize_activations

            q, d, _ = quantize_activations(x.astype(np.float32))
            # The library computes x in float32 along a different path, so a value this close to a rounding
            # boundary may round the other way there: one step of d in that group, not a bug.
            scaled = x.reshape(d.shape + (32,)) / np.where(d > 0, d, 1)[..., None]
            self.near_ties[self._seq] = self.near_ties.get(self._seq, 0) + int((np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < TIE).sum())
            groups = q.reshape(*q.shape[:-1], -1, 32).astype(np.float64) * d[..., None].astype(np.float64)
            x = groups.reshape(x.shape)
        return x @ self.p[name].T

    def forward(self, seq_id: int, tokens: list[int]) -> np.ndarray:
        c, p = self.cfg, self.p
        self._seq = seq_id
        nq, nkv, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        cache = self.kv.setdefault(seq_id, [(np.zeros((0, nkv, d)), np.zeros((0, nkv, d)))
                                            for _ in range(c["num_hidden_layers"])])
        start = cache[0][0].shape[0]
        n = len(tokens)
        pos = np.arange(start, start + n)
        x = p["embed_tokens.weight"][np.asarray(tokens)]
        for i in range(c["num_hidden_layers"]):
            pre = f"layers.{i}."
            hn = _rms_norm(x, p[pre + "input_layernorm.weight"], c["rms_norm_eps"])
            qkv = self._mm(hn, pre + "self_attn.qkv_proj.weight")
            if pre + "self_attn.qkv_proj.bias" in p:
                qkv = qkv + p[pre + "self_attn.qkv_proj.bias"]
            q = qkv[:, : nq * d].reshape(n, nq, d)
            k = qkv[:, nq * d: (nq + nkv) * d].reshape(n, nkv, d)
            v = qkv[:, (nq + nkv) * d:].reshape(n, nkv, d)
            sc = c.get("rope_scaling")
            q, k = _rope(q, pos, c["rope_theta"], sc), _rope(k, pos, c["rope_theta"], sc)
            k_all = np.concatenate([cache[i][0], k]); v_all = np.concatenate([cache[i][1], v])
            cache[i] = (k_all, v_all)
            group = nq // nkv
            out = np.zeros((n, nq, d))
            total = k_all.shape[0]
            mask = (np.arange(total)[None, :] <= pos[:, None])  # causal over absolute positions
            window = c.get("sliding_window") or 0
            if 0 < window < c["context_window_size"]:  # Mistral: the last `window` positions only
                mask &= pos[:, None] - np.arange(total)[None, :] < window
            for head in range(nq):
                kh, vh = k_all[:, head // group], v_all[:, head // group]
                s = q[:, head] @ kh.T / np.sqrt(d)
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(-1, keepdims=True))
                out[:, head] = (s / s.sum(-1, keepdims=True)) @ vh
            x = x + self._mm(out.reshape(n, nq * d), pre + "self_attn.o_proj.weight")
            hn = _rms_norm(x, p[pre + "post_attention_layernorm.weight"], c["rms_norm_eps"])
            gu = self._mm(hn, pre + "mlp.gate_up_proj.weight")
            gate, up = gu[:, : c["intermediate_size"]], gu[:, c["intermediate_size"]:]
            x = x + self._mm(gate / (1 + np.exp(-gate)) * up, pre + "mlp.down_proj.weight")
        x = _rms_norm(x[-1:], p["norm.weight"], c["rms_norm_eps"])
        return self._mm(x, "lm_head.weight" if "lm_head.weight" in p else "embed_tokens.weight")[0]


PROMPTS = [[5, 17, 200, 33, 91, 4, 250, 12, 77, 3, 140], [8, 99],
           [300, 1, 2, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62]]


def compare_with_reference(artifact, params: dict[str, np.ndarray], decode_steps: int = 6,
                           prompts=PROMPTS, min_gap: float = 0.0, quantize_activations: bool = False) -> list[float]:
    """Batched prefill of ``prompts`` then ``decode_steps`` batched decode steps, on the compiled artifact
    (TVM's paged KV cache driven from Python) and on :class:`ReferenceLlama`.

    ``quantize_activations``: the reference rounds every matmul input as the int8 q8_0/q4_1 kernels do.
    Returns the max abs logit difference per step. Argmax must agree wherever the reference's top-2 gap
    exceeds ``min_gap`` (0: always); both sides then continue with the reference's tokens.
    """
    from spindle.compiler.runner import ModelRunner

    runner = ModelRunner(artifact)
    ref = ReferenceLlama(runner.config, params, quantize_activations)
    kv = runner.create_kv_cache(max_batch_size=4)
    ids = list(range(len(prompts)))
    for i in ids:
        runner.add_sequence(kv, i)
    got = runner.prefill(kv, ids, prompts)
    want = np.stack([ref.forward(i, p) for i, p in zip(ids, prompts)])
    diffs = []
    for step in range(decode_steps + 1):
        diffs.append(float(np.abs(got - want).max()))
        top2 = np.sort(want, axis=-1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > min_gap
        np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear],
                                      err_msg=f"argmax differs at step {step}")
        if step == decode_steps:
            break
        tokens = [int(t) for t in want.argmax(-1)]
        got = runner.decode(kv, ids, tokens)
        want = np.stack([ref.forward(i, [t]) for i, t in zip(ids, tokens)])
    return diffs


def compare_quantized_with_reference(artifact, params: dict[str, np.ndarray],
                                     decode_steps: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Like `compare_with_reference` with activations rounded as the int8 q8_0/q4_1 kernels round them.

    Returns `diffs[step, seq]` (max abs logit difference) and `ties[step, seq]`: how many near ties
    (activations within `TIE` of a rounding boundary, which the library computing in float32 may round
    the other way) the reference met in that sequence up to that step (a flipped rounding stays in the
    sequence's KV cache). Argmax must agree everywhere.
    """
    from spindle.compiler.runner import ModelRunner

    runner = ModelRunner(artifact)
    ref = ReferenceLlama(runner.config, params, quantize_activations=True)
    kv = runner.create_kv_cache(max_batch_size=4)
    ids = list(range(len(PROMPTS)))
    for i in ids:
        runner.add_sequence(kv, i)
    got = runner.prefill(kv, ids, PROMPTS)
    want = np.stack([ref.forward(i, p) for i, p in zip(ids, PROMPTS)])
    diffs, ties = [], []
    for step in range(decode_steps + 1):
        diffs.append(np.abs(got - want).max(axis=-1))
        ties.append([ref.near_ties.get(i, 0) for i in ids])
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=f"argmax differs at step {step}")
        if step == decode_steps:
            break
        tokens = [int(t) for t in want.argmax(-1)]
        got = runner.decode(kv, ids, tokens)
        want = np.stack([ref.forward(i, [t]) for i, t in zip(ids, tokens)])
    return np.array(diffs), np.array(ties)

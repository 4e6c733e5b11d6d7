"""Tokenizer, chat template and incremental detokenizer for a compiled model artifact.

The artifact's ``tokenizer.json`` is a ``tokenizers.Tokenizer``; ``spindle-config.json`` carries the BOS,
EOS and pad ids, whether to prepend BOS and the model's own Jinja chat template. :func:`tokenizer_json_from_gguf`
builds the ``tokenizer.json`` from a GGUF file's ``tokenizer.ggml.*`` metadata (byte-level BPE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer


class TokenizerError(ValueError):
    """Bad tokenizer input or metadata; ``field`` names the offending argument or key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ChatTemplateError(TokenizerError):
    """The chat template failed to render, or the messages do not fit it."""


# Pre-tokenizer regexes by GGUF ``tokenizer.ggml.pre`` (llama.cpp names).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_SPECIAL_TYPES = (2, 3, 4)


def _byte_level_pre_tokenizer(pre: str):
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in ("llama-bpe", "llama3", "dbrx", "smaug-bpe"):
        regex = _LLAMA3_SPLIT
    elif pre in ("qwen2", "deepseek-r1-qwen"):
        regex = _QWEN2_SPLIT
    elif pre in ("default", "gpt-2", "gpt2", ""):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise TokenizerError("tokenizer.ggml.pre", f"unsupported pre-tokenizer {pre!r}")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def tokenizer_json_from_gguf(fields: Mapping[str, Any], source: str = "GGUF") -> str:
    """Build a byte-level BPE ``tokenizer.json`` from GGUF metadata values (``key -> contents()``)."""
    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise TokenizerError("tokenizer.ggml.model",
                             f"{source}: only byte-level BPE ('gpt2') tokenizers are supported, got {model!r}")
    tokens = fields.get("tokenizer.ggml.tokens")
    merges = fields.get("tokenizer.ggml.merges")
    if not tokens:
        raise TokenizerError("tokenizer.ggml.tokens", f"{source}: missing vocabulary")
    if merges is None:
        raise TokenizerError("tokenizer.ggml.merges", f"{source}: missing merge list")
    types = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2:
            raise TokenizerError("tokenizer.ggml.merges", f"{source}: merge {i} {m!r} is not two tokens")
        if parts[0] not in vocab or parts[1] not in vocab or parts[0] + parts[1] not in vocab:
            raise TokenizerError("tokenizer.ggml.merges", f"{source}: merge {i} {m!r} uses or makes a token "
                                 "that is not in the vocabulary")
        pairs.append((parts[0], parts[1]))
    tok = _HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _byte_level_pre_tokenizer(str(fields.get("tokenizer.ggml.pre", "default")))
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if int(ty) in _SPECIAL_TYPES]
    tok.add_special_tokens(specials)
    return tok.to_str()


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str):
    raise ChatTemplateError("chat_template", message)


@dataclass
class Tokenizer:
    """Encode/decode text and render chat prompts the way the model was trained."""

    tokenizer: _HFTokenizer
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    add_bos_token: bool = False
    chat_template: str | None = None
    # (source, compiled template): compiled once, not at every request (compiling SmolLM2's took ~1.5 ms)
    _compiled_template: tuple[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path) -> "Tokenizer":
        path = Path(artifact_dir)
        config = json.loads((path / "spindle-config.json").read_text(encoding="utf-8"))
        return cls.from_json((path / "tokenizer.json").read_text(encoding="utf-8"), config)

    @classmethod
    def from_json(cls, tokenizer_json: str, config: Mapping[str, Any]) -> "Tokenizer":
        return cls(_HFTokenizer.from_str(tokenizer_json), bos_token_id=config.get("bos_token_id"),
                   eos_token_ids=list(config.get("eos_token_ids") or []), pad_token_id=config.get("pad_token_id"),
                   add_bos_token=bool(config.get("add_bos_token", False)), chat_template=config.get("chat_template"))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)

    def _bos(self, add_bos: bool | None) -> list[int]:
        """The token that leads an encoded text: BOS when asked for (None: the model's default), if any."""
        wanted = self.add_bos_token if add_bos is None else add_bos
        return [self.bos_token_id] if wanted and self.bos_token_id is not None else []

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special-token strings in it (e.g. ``<|im_start|>``) map to their ids."""
        if not isinstance(text, str):
            raise TokenizerError("text", f"expected a string, got {type(text).__name__}")
        # a batch of one: encode_batch_fast skips the character offsets (37 -> 30 us for a 150-character prompt)
        return self._bos(add_bos) + self._encode_fast([text], add_special_tokens=False)[0].ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        """``[encode(t, add_bos) for t in texts]`` in one call of the Rust tokenizer, which lets go of the GIL
        while it works: other Python threads (an event loop) run meanwhile."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TokenizerError(f"texts[{i}]", f"expected a string, got {type(text).__name__}")
        bos = self._bos(add_bos)
        return [bos + enc.ids for enc in self._encode_fast(list(texts), add_special_tokens=False)]

    @property
    def _encode_fast(self):
        """``encode_batch_fast`` (tokenizers 0.21+: no character offsets, which nothing here reads)."""
        return getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = list(token_ids)
        n = self.vocab_size
        for i, t in enumerate(ids):
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < n:
                raise TokenizerError(f"token_ids[{i}]", f"{t!r} is not a token id in [0, {n})")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                            **extra: Any) -> str:
        """Render ``messages`` ([{"role", "content"}...]) with the model's own Jinja template."""
        import jinja2  # pylint: disable=import-outside-toplevel
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=import-outside-toplevel

        if self.chat_template is None:
            raise ChatTemplateError("chat_template", "this model has no chat template")
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ChatTemplateError("messages", "expected a non-empty list of messages")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ChatTemplateError(f"messages[{i}]", "expected a mapping with string 'role' and 'content'")
        bos = self.id_to_token(self.bos_token_id) if self.bos_token_id is not None else ""
        eos = self.id_to_token(self.eos_token_ids[0]) if self.eos_token_ids else ""
        try:
            cached = self._compiled_template
            if cached is not None and cached[0] == self.chat_template:
                template = cached[1]
            else:
                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                    extensions=["jinja2.ext.loopcontrols"])
                env.filters["tojson"] = _tojson
                env.globals["raise_exception"] = _raise
                env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
                template = env.from_string(self.chat_template)
                self._compiled_template = (self.chat_template, template)
            return template.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                                    bos_token=bos or "", eos_token=eos or "", **extra)
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise ChatTemplateError("chat_template", f"rendering failed: {exc}") from exc

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_bos=self.add_bos_token)

    def incremental_decoder(self, skip_special_tokens: bool = True) -> "IncrementalDecoder":
        return IncrementalDecoder(self, skip_special_tokens)


class IncrementalDecoder:
    """Turns a stream of token ids into text deltas, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._emitted = 0  # characters of the decoded text already returned

    def push(self, token_ids: Iterable[int]) -> str:
        """Add tokens; return the newly completed text (may be empty while a character is incomplete)."""
        self._ids.extend(token_ids)
        text = self._tok.decode(self._ids, skip_special_tokens=self._skip)
        end = len(text)
        while end > self._emitted and text[end - 1] == "\ufffd":
            end -= 1
        delta = text[self._emitted:end]
        self._emitted = end
        return delta

    def flush(self) -> str:
        """Return whatever is left, replacement characters included (end of stream)."""
        text = self._tok.decode(self._ids, skip_special_tokens=self._skip)
        delta = text[self._emitted:]
        self._emitted = len(text)
        return delta

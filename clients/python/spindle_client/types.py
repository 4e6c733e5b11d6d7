"""Result types of the Spindle client and the conversion from keyword arguments to request messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .v1 import engine_pb2 as pb

FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: None,
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
    pb.FINISH_REASON_ERROR: "error",
}

CONFIG_FIELDS = frozenset(f.name for f in pb.GenerationConfig.DESCRIPTOR.fields)

PromptLike = "str | Sequence[Mapping[str, str]] | Sequence[int]"


def make_prompt(prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                token_ids: Sequence[int] | None = None) -> pb.Prompt:
    """A Prompt from text, chat messages ([{"role", "content"}]) or token ids; exactly one."""
    given = [x is not None for x in (prompt, messages, token_ids)]
    if sum(given) != 1:
        raise TypeError("give exactly one of prompt, messages or token_ids")
    if prompt is not None:
        if isinstance(prompt, str):
            return pb.Prompt(text=prompt)
        items = list(prompt)
        if items and all(isinstance(x, Mapping) for x in items):
            messages = items
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            token_ids = items
        else:
            raise TypeError("prompt must be a string, a list of chat messages or a list of token ids")
    if messages is not None:
        return pb.Prompt(chat=pb.ChatMessages(messages=[
            pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages]))
    return pb.Prompt(token_ids=pb.TokenIds(token_ids=list(token_ids)))


def make_config(**config: Any) -> pb.GenerationConfig:
    """A GenerationConfig from keyword arguments named like its fields (None means unset)."""
    unknown = set(config) - CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(CONFIG_FIELDS))}")
    values = {k: v for k, v in config.items() if v is not None}
    if "stop_strings" in values and isinstance(values["stop_strings"], str):
        values["stop_strings"] = [values["stop_strings"]]
    return pb.GenerationConfig(**values)


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    total_time_ms: float
    prefill_time_ms: float = 0.0
    decode_time_ms: float = 0.0

    @classmethod
    def from_proto(cls, u: pb.Usage) -> "Usage":
        return cls(u.prompt_tokens, u.completion_tokens, u.time_to_first_token_ms, u.total_time_ms,
                   u.prefill_time_ms, u.decode_time_ms)


@dataclass
class Delta:
    """New output of one branch, as streamed."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)


@dataclass
class Choice:
    """One complete branch of a generation."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    matched_stop: str | int | None = None


@dataclass
class GenerationResult:
    """A finished generation: the first branch's text and details at top level, every branch in choices."""

    request_id: str
    choices: list[Choice]
    usage: Usage | None
    prompt_token_ids: list[int]
    effective_config: pb.GenerationConfig | None

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.choices[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    @property
    def matched_stop(self) -> str | int | None:
        return self.choices[0].matched_stop

    @property
    def logprobs(self) -> list[pb.TokenLogprob]:
        return self.choices[0].logprobs

    @property
    def seed(self) -> int | None:
        return self.effective_config.seed if self.effective_config is not None else None


class _Branch:
    """What one branch has produced so far (text kept as parts, joined once at the end)."""

    __slots__ = ("index", "texts", "token_ids", "logprobs", "finish_reason", "matched_stop")

    def __init__(self, index: int):
        self.index = index
        self.texts: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list[pb.TokenLogprob] = []
        self.finish_reason: str | None = None
        self.matched_stop: str | int | None = None

    def choice(self) -> Choice:
        return Choice(self.index, "".join(self.texts), self.token_ids, self.logprobs, self.finish_reason,
                      self.matched_stop)


class ResultBuilder:
    """Accumulates streamed messages (GenerateResponse, FollowRequestResponse, RequestOutput)."""

    def __init__(self, n: int = 1):
        self.request_id = ""
        self._branches: dict[int, _Branch] = {}
        self.final: pb.FinalOutput | None = None

    def _branch(self, index: int) -> _Branch:
        b = self._branches.get(index)
        if b is None:
            b = self._branches[index] = _Branch(index)
        return b

    def add(self, msg: Any) -> list[Delta]:
        """Take one message; returns its deltas as Delta values."""
        self.collect(msg)
        return [Delta(d.index, d.text, list(d.token_ids), list(d.logprobs)) for d in msg.deltas]

    def collect(self, msg: Any) -> None:
        """Take one message without building Delta values (``generate`` only wants the result)."""
        if not self.request_id:
            self.request_id = msg.request_id
        for d in msg.deltas:
            b = self._branch(d.index)
            if d.text:
                b.texts.append(d.text)
            b.token_ids.extend(d.token_ids)
            if d.logprobs:
                b.logprobs.extend(d.logprobs)
        if msg.HasField("final"):
            self.final = msg.final
            for fb in msg.final.branches:
                b = self._branch(fb.index)
                b.finish_reason = FINISH_REASONS.get(fb.finish_reason)
                which = fb.WhichOneof("matched_stop")
                b.matched_stop = getattr(fb, which) if which else None

    @property
    def choices(self) -> dict[int, Choice]:
        return {i: b.choice() for i, b in self._branches.items()}

    def result(self) -> GenerationResult:
        f = self.final
        choices = [self._branches[i].choice() for i in sorted(self._branches)] or [Choice(0)]
        return GenerationResult(self.request_id, choices, Usage.from_proto(f.usage) if f else None,
                                list(f.prompt_token_ids) if f else [], f.effective_config if f else None)

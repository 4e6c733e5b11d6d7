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


class ResultBuilder:
    """Accumulates streamed messages (GenerateResponse, FollowRequestResponse, RequestOutput)."""

    def __init__(self, n: int = 1):
        self.request_id = ""
        self.choices: dict[int, Choice] = {}
        self.final: pb.FinalOutput | None = None

    def add(self, msg: Any) -> list[Delta]:
        self.request_id = msg.request_id or self.request_id
        deltas = []
        for d in msg.deltas:
            c = self.choices.setdefault(d.index, Choice(d.index))
            c.text += d.text
            c.token_ids.extend(d.token_ids)
            c.logprobs.extend(d.logprobs)
            deltas.append(Delta(d.index, d.text, list(d.token_ids), list(d.logprobs)))
        if msg.HasField("final"):
            self.final = msg.final
            for b in msg.final.branches:
                c = self.choices.setdefault(b.index, Choice(b.index))
                c.finish_reason = FINISH_REASONS.get(b.finish_reason)
                which = b.WhichOneof("matched_stop")
                c.matched_stop = getattr(b, which) if which else None
        return deltas

    def result(self) -> GenerationResult:
        f = self.final
        choices = [self.choices[i] for i in sorted(self.choices)] or [Choice(0)]
        return GenerationResult(self.request_id, choices, Usage.from_proto(f.usage) if f else None,
                                list(f.prompt_token_ids) if f else [], f.effective_config if f else None)

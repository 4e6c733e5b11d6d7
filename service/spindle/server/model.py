"""What the server knows about the model it serves: the artifact's config and its tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spindle.tokenizer import Tokenizer


@dataclass
class ServedModel:
    """A compiled artifact directory, its ``spindle-config.json`` and tokenizer."""

    path: Path
    config: dict[str, Any]
    tokenizer: Tokenizer
    #: Validated request configs by message (``convert.resolve_config``).
    resolved_configs: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, artifact_dir: str | Path) -> "ServedModel":
        path = Path(artifact_dir)
        config = json.loads((path / "spindle-config.json").read_text(encoding="utf-8"))
        return cls(path, config, Tokenizer.from_artifact(path))

    @property
    def model_id(self) -> str:
        return self.path.name

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def context_window_size(self) -> int:
        return int(self.config["context_window_size"])

    @property
    def eos_token_ids(self) -> list[int]:
        return [int(t) for t in self.config.get("eos_token_ids") or []]

    @property
    def has_chat_template(self) -> bool:
        return bool(self.tokenizer.chat_template)

    def decode(self, token_ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.tokenizer.decode([int(token_id)], skip_special_tokens=False)

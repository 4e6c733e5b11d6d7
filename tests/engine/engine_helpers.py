"""Helpers for the engine tests: greedy configs, an output collector that checks invariants, a solo runner."""

from __future__ import annotations

from spindle.engine import Engine, GenerationConfig, PreparedConfig, RequestOutput


def greedy(max_tokens: int = 12, **kw) -> GenerationConfig:
    return GenerationConfig(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


class Collector:
    """Accumulates deltas per request and checks the output invariants as they arrive."""

    def __init__(self):
        self.tokens: dict[str, dict[int, list[int]]] = {}
        self.finishes: dict[str, list[RequestOutput]] = {}
        self.branch_finish: dict[str, dict[int, object]] = {}
        self.stop_tokens: dict[str, dict[int, int | None]] = {}
        self.after_finish: list[str] = []

    def add(self, outputs: list[RequestOutput]) -> None:
        for o in outputs:
            if o.request_id in self.finishes:
                self.after_finish.append(o.request_id)
            per = self.tokens.setdefault(o.request_id, {})
            for b in o.branches:
                if self.branch_finish.get(o.request_id, {}).get(b.index) is not None:
                    self.after_finish.append(o.request_id)
                per.setdefault(b.index, []).extend(b.token_ids)
                if b.finish_reason is not None:
                    self.branch_finish.setdefault(o.request_id, {})[b.index] = b.finish_reason
                    self.stop_tokens.setdefault(o.request_id, {})[b.index] = b.stop_token_id
            if o.finished:
                assert o.usage is not None, o
                self.finishes.setdefault(o.request_id, []).append(o)

    def run(self, engine: Engine, max_steps: int = 10_000) -> int:
        steps = 0
        while not engine.empty():
            self.add(engine.step())
            steps += 1
            assert steps < max_steps, "the engine did not drain"
        return steps


def run_alone(engine: Engine, request_id: str, prompt: list[int], config: GenerationConfig | PreparedConfig,
              seed: int | None = None) -> list[int]:
    """Generate one request alone on `engine` and return branch 0's tokens."""
    c = Collector()
    engine.add_request(request_id, prompt, config, seed)
    c.run(engine)
    return c.tokens[request_id][0]

"""Fixtures for the engine tests: engines on the tiny compiled model and a reference runner."""

from __future__ import annotations

import pytest

from spindle.engine import Engine, EngineConfig


@pytest.fixture(scope="session")
def make_engine(tiny_model_dir):
    """``make_engine(**engine_config_overrides)`` -> a stepped Engine on the tiny model."""

    def factory(**overrides) -> Engine:
        overrides.setdefault("mode", "server")
        return Engine(EngineConfig(model=str(tiny_model_dir), **overrides))

    return factory

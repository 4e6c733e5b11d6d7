"""PreparedConfig: a generation config converted for the engine once and shared by many requests, each
with its own seed."""

from __future__ import annotations

import pytest

from spindle.engine import GenerationConfig, InvalidRequestError, PreparedConfig

from engine_helpers import run_alone

PROMPT = [5, 17, 42, 99, 7, 3]


def sampled(**kw) -> GenerationConfig:
    # the tiny model's random weights give one token nearly all the mass: a high temperature samples widely
    return GenerationConfig(temperature=30.0, max_tokens=24, ignore_eos=True, **kw)


def test_prepared_config_with_a_seed_runs_as_the_plain_config_with_that_seed(make_engine):
    engine = make_engine()
    prepared = PreparedConfig(sampled())
    for seed in (1, 2, 99):
        plain = run_alone(engine, f"plain-{seed}", PROMPT, sampled(seed=seed))
        assert run_alone(engine, f"prepared-{seed}", PROMPT, prepared, seed) == plain
    # different seeds sample different continuations
    runs = {tuple(run_alone(engine, f"s{seed}", PROMPT, prepared, seed)) for seed in (1, 2, 99)}
    assert len(runs) == 3


def test_the_seed_argument_replaces_the_configs_seed(make_engine):
    engine = make_engine()
    want = run_alone(engine, "want", PROMPT, sampled(seed=7))
    assert run_alone(engine, "plain", PROMPT, sampled(seed=1234), 7) == want
    assert run_alone(engine, "prepared", PROMPT, PreparedConfig(sampled(seed=1234)), 7) == want
    # without one, the config's own seed
    assert run_alone(engine, "own", PROMPT, PreparedConfig(sampled(seed=7))) == want


def test_a_prepared_config_does_not_see_later_changes(make_engine):
    engine = make_engine()
    config = GenerationConfig(temperature=0.0, max_tokens=3, ignore_eos=True)
    prepared = PreparedConfig(config)
    config.max_tokens = 9
    assert prepared.config.max_tokens == 3
    assert len(run_alone(engine, "r", PROMPT, prepared)) == 3


def field_of(fn) -> str:
    with pytest.raises(InvalidRequestError) as info:
        fn()
    return info.value.field


@pytest.mark.parametrize("args, field", [
    ((PROMPT, "seven"), "seed"),
    ((PROMPT, True), "seed"),
    ((PROMPT, 2 ** 64), "seed"),
    (([1, "2"], None), "token_ids"),
    (([1, True], None), "token_ids"),
    (([1, 2.0], None), "token_ids"),
    (([], None), "token_ids"),
    (([1, -1], None), "token_ids"),
    (([1, 10 ** 6], None), "token_ids"),
    (([1, 2 ** 40], None), "token_ids"),
    ((iter([1, None]), None), "token_ids"),
])
def test_bad_arguments_name_the_field(make_engine, args, field):
    engine = make_engine()
    tokens, seed = args
    assert field_of(lambda: engine.add_request("r", tokens, PreparedConfig(sampled()), seed)) == field
    assert engine.empty() and engine.metrics().waiting == 0


def test_only_generation_configs_are_prepared():
    with pytest.raises(InvalidRequestError) as info:
        PreparedConfig({"temperature": 0.5})
    assert info.value.field == "generation_config"

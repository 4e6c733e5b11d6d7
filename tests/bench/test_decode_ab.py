"""bench/decode_ab.py's report of rounds per state of the machine (``--probe``)."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import decode_ab  # noqa: E402


def _rounds():
    # four rounds: two read 60 GB/s (fast), two 30 GB/s (slow); 100 MB a step
    return {"bandwidths": [60e9, 30e9, 60e9, 30e9],
            "times": {"baseline": [0.004, 0.004, 0.004, 0.004], "current": [0.002, 0.004, 0.0025, 0.002]},
            "weight_bytes": {"baseline": 100_000_000, "current": 100_000_000}}


def test_rounds_are_split_by_the_bandwidth_they_started_with():
    fast, slow = decode_ab.by_state(_rounds(), batch=1, fast_gbs=45)
    assert fast.startswith("| fast | 2 | 60.0 |") and slow.startswith("| slow | 2 | 30.0 |")
    # fast: bound 100 MB / 60 GB/s = 1.667 ms; baseline 4 ms -> 0.42; current median of 2 and 2.5 ms
    assert "| 4.000 ms (0.42) |" in fast and "| 2.250 ms (0.75) |" in fast
    assert fast.endswith("| 1.800x |")  # median of 4 / 2 and 4 / 2.5
    # slow: bound 3.333 ms; current median of 4 and 2 ms = 3 ms, its ratios 0.83 and 1.67 -> 1.25
    assert "| 3.000 ms (1.25) |" in slow and slow.endswith("| 1.500x |")


def test_a_state_without_rounds_is_left_out_and_batches_show_no_ratio():
    r = _rounds()
    rows = decode_ab.by_state(r, batch=8, fast_gbs=100)
    assert len(rows) == 1 and rows[0].startswith("| slow | 4 |")
    assert "(" not in rows[0]


def test_environment_variants_are_parsed():
    assert decode_ab.parse_env("") == {}
    assert decode_ab.parse_env("SPINDLE_PREFETCH=none, SPINDLE_PREFETCH_HEAD=0") == {
        "SPINDLE_PREFETCH": "none", "SPINDLE_PREFETCH_HEAD": "0"}
    assert decode_ab.parse_env("A=x=y") == {"A": "x=y"}
    for bad in ("SPINDLE_PREFETCH", "=1"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            decode_ab.parse_env(bad)


@pytest.mark.parametrize("argv, message", [
    (["--in-process", "--env-current", "SPINDLE_PREFETCH=none"], "process per side"),
    (["--env-baseline", "SPINDLE_PREFETCH"], "NAME=VALUE"),
])
def test_bad_environment_variants_are_refused(capsys, argv, message):
    """Refused before anything is unpacked, compiled or run."""
    with pytest.raises(SystemExit) as exc:
        decode_ab.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err

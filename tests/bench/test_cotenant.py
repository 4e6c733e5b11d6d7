"""bench/cotenant.py: its co-tenant process and the --load syntax."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import cotenant  # noqa: E402


def test_load_is_busy_microseconds_at_a_period_in_milliseconds():
    assert cotenant.parse_load("100@4") == (100.0, 4.0)
    assert cotenant.parse_load("600@25.5") == (600.0, 25.5)
    with pytest.raises(argparse.ArgumentTypeError, match="BUSY_US@PERIOD_MS"):
        cotenant.parse_load("100")


def test_the_co_tenant_reports_the_share_of_the_machine_it_took():
    # 2 ms of computing every 8 ms: ~20% of one core while it runs, divided among the machine's cores
    tenant = cotenant.CoTenant(2000, 8)
    time.sleep(0.5)
    share = tenant.stop()
    assert tenant.proc.returncode == 0
    one_core = share * (os.cpu_count() or 1)
    assert 5 < one_core < 40, share


def test_a_co_tenant_that_died_is_reported_not_read_as_a_share():
    tenant = cotenant.CoTenant(100, 4)
    tenant.proc.kill()
    with pytest.raises(RuntimeError, match="without its report"):
        tenant.stop()
    assert tenant.proc.returncode is not None

"""Scheduling classes of the server's threads: the model's compute threads first.

A decode step keeps both of a small machine's cores busy, and its phases end in barriers: when the OS
preempts one compute thread for a serving thread (the event loop, gRPC's threads, the stream-back
thread), the other compute thread waits for it too. The serving threads therefore run as ``SCHED_BATCH``:
same share of the CPU, but a serving thread that wakes up does not preempt a running compute thread. It
runs when a core is free or a compute thread waits (the decode kernels yield while they wait for their
partner), which is when its work costs the model the least. The compute threads (the engine's loop and the
model's thread pool) stay ``SCHED_OTHER``. Both are unprivileged changes; where the platform has neither
(not Linux), nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

log = logging.getLogger("spindle.server")

_BATCH = getattr(os, "SCHED_BATCH", None)
_OTHER = getattr(os, "SCHED_OTHER", None)


def policy() -> int | None:
    """The calling thread's scheduling policy, or None where it cannot be read."""
    try:
        return os.sched_getscheduler(0)
    except (AttributeError, OSError):
        return None


def set_policy(value: int | None) -> bool:
    """Give the calling thread (pid 0: the thread, on Linux) scheduling policy ``value``; False if refused."""
    if value is None:
        return False
    try:
        os.sched_setscheduler(0, value, os.sched_param(0))
        return True
    except (AttributeError, OSError) as exc:
        log.debug("scheduling policy %s refused: %s", value, exc)
        return False


def serving_thread() -> int | None:
    """Mark the calling thread as a serving thread (``SCHED_BATCH``); returns its previous policy. Threads it
    starts afterwards inherit the class."""
    previous = policy()
    if previous != _BATCH:
        set_policy(_BATCH)
    return previous


def compute_thread() -> None:
    """Put the calling thread in the default class (a serving thread may start a compute thread)."""
    if policy() not in (None, _OTHER):
        set_policy(_OTHER)


@contextlib.contextmanager
def compute_threads() -> Iterator[None]:
    """Threads started inside this block (the engine's loop, the model's thread pool) are ``SCHED_OTHER``,
    whatever the calling thread's class; the calling thread's class is restored after."""
    previous = policy()
    changed = previous is not None and previous != _OTHER and set_policy(_OTHER)
    try:
        yield
    finally:
        if changed:
            set_policy(previous)

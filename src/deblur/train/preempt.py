"""SIGTERM (a spot instance reclaimed, a Kubernetes eviction): finish the step, then stop.

The handler only notes the signal; the Trainer asks `requested()` after every step, and
the stage writes its resume state (train/resume.py) and exits with `Preempted`: one line
saying how to continue, exit status 143 (128 + SIGTERM), the MLflow run ended KILLED.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from deblur.errors import DeblurError


class Stop(Exception):  # noqa: N818  (a request, not a failure)
    """Raised by the Trainer after the step in flight when asked to stop."""


class Preempted(DeblurError):
    """The stage stopped on SIGTERM with its resume state written."""

    exit_code = 128 + signal.SIGTERM
    run_status = "KILLED"  # what tracking.stage_run ends the MLflow run as


_received: int | None = None


def requested() -> bool:
    return _received is not None


def _note(signum, _frame) -> None:
    global _received
    _received = signum


@contextmanager
def on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM asks training to stop after its step (instead of killing it)."""
    global _received
    _received = None
    try:
        old = signal.signal(signal.SIGTERM, _note)
    except ValueError:  # not the main thread (a test harness): signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

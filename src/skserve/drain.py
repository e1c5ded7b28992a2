"""Drain on SIGTERM: readiness fails at once, requests are still answered, then gunicorn stops."""

from __future__ import annotations

import mmap
import signal
import threading
from typing import Any

# One byte of memory shared by the gunicorn master and every worker: an anonymous shared mapping,
# made when the master imports this module (gunicorn's settings do, before any fork), is inherited
# by each forked worker, so the master's write is what every worker reads. No file is needed, and
# a read-only container has nowhere to put one but /tmp.
_DRAINING = mmap.mmap(-1, 1)


def draining() -> bool:
    """Whether this server has been told to stop and is leaving its load balancer's rotation."""
    return _DRAINING[0] == 1


def begin() -> None:
    """Mark this server and all its workers as draining."""
    _DRAINING[0] = 1


def defer_term(arbiter: Any, seconds: float) -> None:
    """Make the gunicorn master's first SIGTERM begin a drain of `seconds`, then stop as gunicorn does.

    gunicorn has no hook before its stop, so the arbiter's SIGTERM handler is wrapped: the first
    SIGTERM marks the server draining and queues another SIGTERM `seconds` later, which (like any
    second SIGTERM sent meanwhile) is gunicorn's own graceful stop with its graceful_timeout.
    SIGINT and SIGQUIT still stop at once. `seconds <= 0` leaves gunicorn's behaviour unchanged.
    """
    if seconds <= 0:
        return
    graceful_stop = arbiter.handle_term

    def handle_term() -> None:
        if draining():
            graceful_stop()  # raises StopIteration, which ends gunicorn's main loop
        begin()
        arbiter.log.info("Draining for %s s: readiness fails, requests are still answered", seconds)
        # A daemon timer: if SIGINT ends the master first, it does not hold the exit back.
        # The arbiter's signal() only queues the signal for its main loop, so calling it from
        # another thread is safe.
        timer = threading.Timer(seconds, arbiter.signal, (signal.SIGTERM, None))
        timer.daemon = True
        timer.start()

    arbiter.handle_term = handle_term

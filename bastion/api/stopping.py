"""Stopping: the first SIGINT or SIGTERM drains, the second ends every request in flight at once.

uvicorn's own handling of a second SIGINT is a forced exit: it stops waiting for requests and skips the
application's shutdown, so a stream cut then was never settled (and, on the embedded stack, the ledger's
last records were never written): what it had served was free. Here the second signal is Bastion's:
every request task is cancelled with `STOPPED`, which the gateway ends as it ends one past the grace
period (upstream closed, a 503 or a closing error event to the client, the settlement written with the
partial-usage rule), and uvicorn's graceful shutdown then finds nothing left to wait for and runs the
application's shutdown (the ledger's last write). A third signal is uvicorn's forced exit.

The shutdown itself waits up to `SETTLE_SECONDS` for the requests still ending (those uvicorn cancelled
at the end of its grace period included) before the live state and the database are closed.

The request tasks are found by their coroutine, uvicorn's `RequestResponseCycle.run_asgi`
(tests/test_uvicorn_internals.py checks the name).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from bastion import metrics

log = logging.getLogger("bastion.stopping")

STOPPED = "bastion: stopped by a second signal"
SETTLE_SECONDS = 2.0
REQUEST_CORO = "RequestResponseCycle.run_asgi"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopping:
    """The stop signals of this process, counted (installed once uvicorn's handlers are in place)."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        self.on_first = on_first
        self.signals = 0
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if self.signals == 2 and self._loop is not None:
            log.warning("second stop signal: ending every request in flight now, each settled")
            self._loop.call_soon_threadsafe(end_requests)
            return
        if self.signals == 1:
            self.on_first()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)


def end_requests() -> int:
    """Cancel every request task of this event loop with `STOPPED`; how many."""
    tasks = [t for t in asyncio.all_tasks() if _is_request(t) and not t.done()]
    for task in tasks:
        task.cancel(msg=STOPPED)
    return len(tasks)


def _is_request(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "") == REQUEST_CORO


async def requests_ended(seconds: float = SETTLE_SECONDS) -> bool:
    """Wait (up to `seconds`) for the requests in flight to end, settlements included."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while metrics.live.in_flight > 0:
        if loop.time() >= deadline:
            log.error("%d request(s) not settled %.0f s into the shutdown", metrics.live.in_flight, seconds)
            return False
        await asyncio.sleep(0.01)
    return True

"""The streams in flight on this instance, as the checkpoints see them (bastion/billing/checkpoints.py).

The gateway adds each admitted stream and removes it once settled: a dict entry, nothing per chunk. A
stream's relay keeps its running counts (text streamed, usage reported); a checkpoint reads them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.billing import Outcome, Ticket
from bastion.billing.live import Reservation

SWEPT = "bastion: settled by an orphan sweep"  # the cancellation of a request an orphan sweep settled


class Served(Protocol):
    """The request's side of the exchange (bastion/api/exchange.py's `Exchange`)."""

    def request_task(self) -> asyncio.Task[Any] | None:
        """The task serving the request while its answer is being written, for an orphan sweep's end."""
        ...


# A stream in flight: its ticket, its outcome (its relay's counts are in it) and its exchange. A tuple, in
# the stream's path: a slotted dataclass, two method calls and asyncio.current_task() cost 1.1 us a stream
# (+0.6 % of its instructions, bench.compare); the task is the disconnect watch's already.
RunningRequest = tuple[Ticket, Outcome, Served]


@dataclass(slots=True)
class Running:
    """The gateway adds each stream (`requests[request_id] = (ticket, outcome, exchange)`) and removes it
    before its settlement is sent."""

    requests: dict[str, RunningRequest] = field(default_factory=dict)
    # Checkpointed requests settled without reaching the live state (the database has their records):
    # their checkpoints must go.
    unsettled: list[Reservation] = field(default_factory=list)

"""The requests in flight on this instance, as the checkpoints see them (bastion/billing/checkpoints.py).

The gateway adds each admitted request and removes it once settled: a dict entry, nothing per chunk. A
stream's relay keeps its running counts (text streamed, usage reported); a checkpoint reads them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bastion.billing import Outcome, Ticket
from bastion.billing.live import Reservation

SWEPT = "bastion: settled by an orphan sweep"  # the cancellation of a request an orphan sweep settled


@dataclass(slots=True)
class RunningRequest:
    ticket: Ticket
    outcome: Outcome
    task: asyncio.Task[Any] | None
    chars: int = -1  # text streamed at its last checkpoint (-1: none yet)
    usage: Any = None  # usage reported at its last checkpoint


@dataclass(slots=True)
class Running:
    requests: dict[str, RunningRequest] = field(default_factory=dict)
    # Checkpointed requests settled without reaching the live state (the database has their records):
    # their checkpoints must go.
    unsettled: list[Reservation] = field(default_factory=list)

    def add(self, ticket: Ticket, outcome: Outcome) -> None:
        self.requests[ticket.request_id] = RunningRequest(ticket, outcome, asyncio.current_task())

    def discard(self, request_id: str) -> None:
        self.requests.pop(request_id, None)

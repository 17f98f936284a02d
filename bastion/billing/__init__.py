"""Admission before forwarding (limits, credit) and settlement after (exact charge, usage record)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.auth import Principal
from bastion.billing.estimate import text_chars
from bastion.proxy.routing import Route


@dataclass(slots=True)
class Outcome:
    """How a forwarded request ended, for settlement."""

    status: int
    usage: dict[str, Any] | None = None
    text_chars: int = 0  # generated text streamed, for the estimate when the upstream reports no usage
    client_disconnected: bool = False
    answer: dict[str, Any] | None = None  # the parsed JSON answer, for meters that count in it
    answer_body: bytes | None = None  # the JSON answer's bytes: its text is counted only if needed
    on_final: Callable[[Outcome], None] | None = None
    on_price: Callable[[Outcome], int] | None = None
    stream: Any = None  # a stream's relay while it runs: its counts so far, for checkpoints

    def price(self) -> int | None:
        """What the request costs, billed now from the outcome so far (a JSON answer's, complete before
        its head is written): the settlement that follows charges exactly this."""
        return self.on_price(self) if self.on_price is not None else None

    def final(self) -> None:
        """The outcome is complete: settlement starts now, in the same event-loop step as the answer's
        last write (so a client's next request, however quick, finds this one settled) and before any
        cleanup that may wait (an upstream's end of body)."""
        on_final, self.on_final = self.on_final, None
        if on_final is not None:
            on_final(self)

    def generated_chars(self) -> int:
        """Characters of generated text (content, reasoning, tool arguments) the client received."""
        if self.answer_body is not None:
            return self.text_chars + text_chars(self.answer_body)
        return self.text_chars


@dataclass(slots=True)
class Ticket:
    """What admission granted one request; settlement closes it exactly once."""

    principal: Principal
    route: Route
    request_id: str
    endpoint: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    hold: Any = None  # the admission's own record of what it reserved
    metered: Any = None  # the meter's worst case, for settlement
    meter: Any = None
    started: float = 0.0
    client_request_id: str | None = None


class Admitting:
    """An admission on its way (sent when `begin` returned). Awaiting it, once, gives the ticket or
    raises the refusal; `on_admitted(callback)` calls `callback` from the event loop the moment the
    shared state admits the request, before the awaiting task wakes (a request ready to leave goes then)."""

    __slots__ = ("_on_admitted", "_ticket")

    def __init__(self, ticket: Awaitable[Ticket], on_admitted: Callable[[Callable[[], None]], None]) -> None:
        self._ticket, self._on_admitted = ticket, on_admitted

    def __await__(self) -> Generator[Any, None, Ticket]:
        return self._ticket.__await__()

    def on_admitted(self, callback: Callable[[], None]) -> None:
        self._on_admitted(callback)


class Metered(Protocol):
    """An endpoint as billing sees it: its kind and its meter."""

    kind: str
    meter: Any


class Admission(Protocol):
    def begin(
        self,
        principal: Principal,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        endpoint: Metered,
        size: int,
        client_request_id: str | None = None,
    ) -> Admitting:
        """`admit`, with the admission already sent when this returns: await the ticket after other
        work (which then overlaps the shared state's answer). It must be awaited."""
        ...

    async def admit(
        self,
        principal: Principal,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        endpoint: Metered,
        size: int,
        client_request_id: str | None = None,
    ) -> Ticket:
        """Reserve what the request may cost, or raise ApiError (401 revoked, 402, 429). `request_id` is
        unique to this request (the usage record's); `client_request_id` the client's own, if any."""
        ...

    def bill(self, ticket: Ticket, outcome: Outcome) -> Any:
        """The charge and usage record of this outcome, computed and not sent."""
        ...

    def start_settlement(self, ticket: Ticket, outcome: Outcome, bill: Any = None) -> Any:
        """Bill the final outcome (or take `bill`, made from it already) and send the settlement at once
        (in the step of the answer's last write, so that the client's next request finds this one
        settled); `settle` then awaits it."""
        ...

    async def settle(self, ticket: Ticket, outcome: Outcome, started: Any = None) -> Any:
        """Charge what it did cost, release the rest, record the usage; returns the usage record.
        `started`: the `start_settlement` already sent for this outcome, if any."""
        ...

    async def limit_headers(
        self, principal: Principal, refused: str | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Rate-limit headers for an authenticated answer that admitted nothing; `refused`: the error
        code of a request refused before admission, counted with them."""
        ...

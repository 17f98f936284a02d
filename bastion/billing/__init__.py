"""Admission before forwarding (limits, credit) and settlement after. Free and unlimited for now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.auth import Principal
from bastion.proxy.routing import Route


@dataclass(slots=True)
class Ticket:
    """What admission granted one request; settlement closes it exactly once."""

    principal: Principal
    route: Route
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """How a forwarded request ended, for settlement."""

    status: int
    usage: dict[str, Any] | None = None
    client_disconnected: bool = False


class Admission(Protocol):
    async def admit(self, principal: Principal, route: Route, body: dict[str, Any]) -> Ticket:
        """Reserve what the request may cost, or raise ApiError (402, 429)."""
        ...

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        """Charge what it did cost and release the rest."""
        ...


class FreeAdmission:
    async def admit(self, principal: Principal, route: Route, body: dict[str, Any]) -> Ticket:
        return Ticket(principal, route)

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        return None

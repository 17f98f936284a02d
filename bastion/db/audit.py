"""The audit log: who did what, when and from where. Each management operation writes its entry in the
same transaction as its change, so there is never a change without its entry (or an entry without it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.db.models import AuditEntry, utcnow
from bastion.db.views import as_utc, rfc3339, usd_fields


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a dashboard user (their email and id), `cli:<user>`, `admin-api`, `demo`; and from
    which address, when over the network."""

    name: str
    user_id: str | None = None
    address: str | None = None


def as_actor(actor: Actor | str) -> Actor:
    return actor if isinstance(actor, Actor) else Actor(actor)


def record(
    session: AsyncSession,
    actor: Actor | str,
    action: str,
    account_id: str | None = None,
    target: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit entry to the session's transaction."""
    who = as_actor(actor)
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=who.name[:320],
            actor_user_id=who.user_id,
            address=who.address[:64] if who.address else None,
            account_id=account_id,
            action=action,
            target=target[:320] if target else None,
            detail=orjson.dumps(detail, default=str).decode() if detail else None,
        )
    )


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    address: str | None
    account_id: str | None
    action: str
    target: str | None
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": rfc3339(self.at),
            "actor": self.actor,
            "address": self.address,
            "account_id": self.account_id,
            "action": self.action,
            "target": self.target,
            "detail": usd_fields(self.detail),  # an amount as everywhere else: `amount_usd`
        }


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

    async def add(
        self,
        actor: Actor | str,
        action: str,
        account_id: str | None = None,
        target: str | None = None,
        **detail: Any,
    ) -> None:
        """An entry on its own (what changes nothing else: a failed sign-in, a sign-out)."""
        async with self._sessions.begin() as session:
            record(session, actor, action, account_id, target, **detail)

    async def entries(
        self,
        account_id: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditView]:
        """Newest first; `before_id` pages on."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(AuditEntry.account_id == account_id)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        async with self._sessions() as session:
            return [
                AuditView(
                    e.id,
                    as_utc(e.at),  # type: ignore[arg-type]
                    e.actor,
                    e.address,
                    e.account_id,
                    e.action,
                    e.target,
                    orjson.loads(e.detail) if e.detail else {},
                )
                for e in await session.scalars(query)
            ]

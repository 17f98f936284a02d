"""Dashboard users, their one-time links and their sessions.

A user is invited (no password yet) with a one-time link: a random token whose SHA-256 is stored, valid
for `LINK_LIFETIME`, spent when the password is set. A reset clears the password, ends every session
and issues a new link. Sessions are rows keyed by the SHA-256 of the cookie's token, so removing a user
or resetting their password ends them on every instance at once. Passwords arrive here already hashed
(argon2id, `bastion.auth.passwords`): this module never sees one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.auth.keys import new_id
from bastion.auth.roles import ROLES
from bastion.db.audit import Actor, record
from bastion.db.errors import Conflict, NotFound, StoreError
from bastion.db.lookups import find_account
from bastion.db.models import DashboardSession, DashboardUser, utcnow
from bastion.db.views import as_utc, rfc3339

LINK_LIFETIME = timedelta(hours=72)
TOUCH_EVERY = timedelta(seconds=60)  # a session's last use is written at most this often
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normal_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 320 or not _EMAIL.fullmatch(email):
        raise StoreError(f"'{email}' is not an email address")
    return email


@dataclass(frozen=True, slots=True)
class UserView:
    id: str
    email: str
    operator: bool
    account_id: str | None
    role: str | None
    created_at: datetime
    created_by: str
    password_set: bool
    link_expires_at: datetime | None
    last_signin_at: datetime | None

    @property
    def status(self) -> str:
        if self.password_set:
            return "active"
        if self.link_expires_at is not None and self.link_expires_at > utcnow():
            return "invited"
        return "link expired"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "operator": self.operator,
            "account_id": self.account_id,
            "role": self.role,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "created_by": self.created_by,
            "link_expires_at": rfc3339(self.link_expires_at),
            "last_signin_at": rfc3339(self.last_signin_at),
        }


@dataclass(frozen=True, slots=True)
class SessionView:
    user: UserView
    csrf_token: str
    created_at: datetime


def user_view(user: DashboardUser) -> UserView:
    return UserView(
        user.id,
        user.email,
        bool(user.operator),
        user.account_id,
        user.role,
        as_utc(user.created_at),  # type: ignore[arg-type]
        user.created_by,
        user.password_hash is not None,
        as_utc(user.link_expires_at),
        as_utc(user.last_signin_at),
    )


class People:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

    # --------------------------------------------------------------------- users
    async def invite(
        self, email: str, operator: bool, account: str | None, role: str | None, actor: Actor
    ) -> tuple[UserView, str]:
        """A new user and their one-time link's token (shown once, stored hashed)."""
        email = normal_email(email)
        if operator and (account or role):
            raise StoreError("an operator sees every account: give no --account or --role")
        if not operator and (not account or role not in ROLES):
            raise StoreError(f"a member needs an account and a role ({', '.join(ROLES)})")
        token = secrets.token_urlsafe(32)
        try:
            async with self._sessions.begin() as session:
                account_id = None
                if account:
                    account_id = (await find_account(session, account)).id
                if await session.scalar(select(DashboardUser.id).where(DashboardUser.email == email)):
                    raise Conflict(f"a user with the email '{email}' already exists")
                user = DashboardUser(
                    id=new_id("usr"),
                    email=email,
                    operator=operator,
                    account_id=account_id,
                    role=None if operator else role,
                    created_at=utcnow(),
                    created_by=actor.name,
                    link_hash=token_hash(token),
                    link_expires_at=utcnow() + LINK_LIFETIME,
                )
                session.add(user)
                record(session, actor, "user.invite", account_id, email, role=user.role or "operator")
        except IntegrityError:
            raise Conflict(f"a user with the email '{email}' already exists") from None
        return user_view(user), token

    async def users(self, account_id: str | None = None) -> list[UserView]:
        query = select(DashboardUser).order_by(DashboardUser.created_at, DashboardUser.email)
        if account_id is not None:
            query = query.where(DashboardUser.account_id == account_id)
        async with self._sessions() as session:
            return [user_view(u) for u in await session.scalars(query)]

    async def user(self, ref: str) -> UserView:
        async with self._sessions() as session:
            return user_view(await _find_user(session, ref))

    async def remove(self, ref: str, actor: Actor) -> UserView:
        """The user and every session of theirs."""
        async with self._sessions.begin() as session:
            user = await _find_user(session, ref)
            await session.execute(delete(DashboardSession).where(DashboardSession.user_id == user.id))
            await session.delete(user)
            record(session, actor, "user.remove", user.account_id, user.email)
        return user_view(user)

    async def reset(self, ref: str, actor: Actor) -> tuple[UserView, str]:
        """The password cleared, every session ended, and a new one-time link."""
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            user = await _find_user(session, ref)
            await session.execute(delete(DashboardSession).where(DashboardSession.user_id == user.id))
            user.password_hash = None
            user.password_set_at = None
            user.link_hash = token_hash(token)
            user.link_expires_at = utcnow() + LINK_LIFETIME
            record(session, actor, "user.reset", user.account_id, user.email)
        return user_view(user), token

    async def link_user(self, token: str) -> UserView | None:
        """The user a one-time link belongs to, while it is valid."""
        async with self._sessions() as session:
            user = await session.scalar(
                select(DashboardUser).where(DashboardUser.link_hash == token_hash(token))
            )
        view = None if user is None else user_view(user)
        if view is None or view.link_expires_at is None or view.link_expires_at <= utcnow():
            return None
        return view

    async def set_password(self, token: str, password_hash: str, address: str | None) -> UserView:
        """Spend a one-time link: the user's password is set and the link is gone."""
        async with self._sessions.begin() as session:
            user = await session.scalar(
                select(DashboardUser)
                .where(DashboardUser.link_hash == token_hash(token), DashboardUser.link_expires_at > utcnow())
                .with_for_update()
            )
            if user is None:
                raise NotFound("this link has expired or was already used")
            user.password_hash = password_hash
            user.password_set_at = utcnow()
            user.link_hash = None
            user.link_expires_at = None
            record(
                session, Actor(user.email, user.id, address), "user.password_set", user.account_id, user.email
            )
        return user_view(user)

    async def credentials(self, email: str) -> tuple[UserView, str] | None:
        """A user who can sign in, and their password hash."""
        async with self._sessions() as session:
            user = await session.scalar(
                select(DashboardUser).where(DashboardUser.email == email.strip().lower())
            )
        if user is None or user.password_hash is None:
            return None
        return user_view(user), user.password_hash

    async def rehash(self, user_id: str, password_hash: str) -> None:
        """A stored hash made with weaker parameters, replaced after a successful sign-in."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(DashboardUser).where(DashboardUser.id == user_id).values(password_hash=password_hash)
            )

    # ------------------------------------------------------------------ sessions
    async def start_session(self, user: UserView, address: str | None, user_agent: str | None) -> str:
        """A new session for a user who just signed in; returns the cookie's token."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        async with self._sessions.begin() as session:
            session.add(
                DashboardSession(
                    id_hash=token_hash(token),
                    user_id=user.id,
                    csrf_token=secrets.token_urlsafe(32),
                    created_at=now,
                    last_seen_at=now,
                    address=address[:64] if address else None,
                    user_agent=user_agent[:300] if user_agent else None,
                )
            )
            await session.execute(
                update(DashboardUser).where(DashboardUser.id == user.id).values(last_signin_at=now)
            )
            record(session, Actor(user.email, user.id, address), "signin", user.account_id, user.email)
        return token

    async def session(self, token: str, idle: timedelta) -> SessionView | None:
        """The session a cookie names, while it has been used within `idle`; its last use is noted."""
        now = utcnow()
        digest = token_hash(token)
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(DashboardSession, DashboardUser)
                    .join(DashboardUser, DashboardUser.id == DashboardSession.user_id)
                    .where(DashboardSession.id_hash == digest)
                )
            ).first()
        if row is None:
            return None
        found, user = row
        last_seen = as_utc(found.last_seen_at)
        assert last_seen is not None
        if now - last_seen > idle or user.password_hash is None:
            await self.end_session(token)
            return None
        if now - last_seen > TOUCH_EVERY:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(DashboardSession)
                    .where(DashboardSession.id_hash == digest)
                    .values(last_seen_at=now)
                )
        return SessionView(user_view(user), found.csrf_token, as_utc(found.created_at))  # type: ignore[arg-type]

    async def end_session(self, token: str, actor: Actor | None = None) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                delete(DashboardSession).where(DashboardSession.id_hash == token_hash(token))
            )
            if actor is not None:
                record(session, actor, "signout", None, actor.name)

    async def session_count(self, user_id: str) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(DashboardSession).where(DashboardSession.user_id == user_id)
            )
            return int(count or 0)

    async def forget_idle_sessions(self, idle: timedelta) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(DashboardSession).where(DashboardSession.last_seen_at < utcnow() - idle)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _find_user(session: AsyncSession, ref: str) -> DashboardUser:
    ref = ref.strip()
    user = await session.scalar(
        select(DashboardUser).where(or_(DashboardUser.id == ref, DashboardUser.email == ref.lower()))
    )
    if user is None:
        raise NotFound(f"no user with id or email '{ref}'")
    return user

"""Everything Bastion reads and writes in its database, one short transaction per operation.

Management operations (accounts, credits, keys) check their input before writing, so bad input
changes nothing. Usage records arrive in batches from the ledger writer; inserting one and charging
the account's balance happen in the same transaction, and a record already written (same request id)
is skipped, so a redelivered batch never charges twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from bastion.config import Settings

from bastion.auth.keys import display_prefix, generate_key, hash_key, new_id
from bastion.db.audit import Actor, AuditLog, as_actor, record
from bastion.db.engine import Pooler, create_engine, session_factory
from bastion.db.errors import Conflict, NotFound, StoreError
from bastion.db.ledger_sql import PostgresBatches, encode_row, insert_and_charge_sqlite
from bastion.db.limits import COLUMN, KeyLimits
from bastion.db.lookups import find_account
from bastion.db.models import Account, ApiKey, CreditTransaction, UsageDaily, UsageRecord, utcnow
from bastion.db.people import People
from bastion.db.refusals import Refusals
from bastion.db.reports import Reports
from bastion.db.request_log import RequestLog, usage_row
from bastion.db.running_usage import RunningUsageTable
from bastion.db.views import (
    AccountView,
    CreditState,
    CreditView,
    KeyView,
    LedgerLine,
    UsageRow,
    account_view,
    key_view,
)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self.people = People(self._sessions)
        self.audit = AuditLog(self._sessions)
        self.reports = Reports(self._sessions)
        self.log = RequestLog(self._sessions)
        self.refusals = Refusals(self._sessions, engine.dialect.name)
        self._batches = PostgresBatches(engine) if engine.dialect.name == "postgresql" else None
        self.running_usage = RunningUsageTable(engine, self.record_usage_json)

    @classmethod
    def from_url(cls, url: str, pooler: Pooler = "none") -> Store:
        return cls(create_engine(url, pooler))

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls.from_url(settings.database_url, settings.database_pooler)

    async def close(self) -> None:
        if self._batches is not None:
            await self._batches.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(select(1))

    # ------------------------------------------------------------------ accounts
    async def create_account(
        self, name: str, credits_nano: int = 0, actor: Actor | str = "cli"
    ) -> AccountView:
        name = name.strip()
        if not name:
            raise StoreError("an account needs a name")
        if credits_nano < 0:
            raise StoreError("initial credits cannot be negative")
        try:
            async with self._sessions.begin() as session:
                if await session.scalar(select(Account.id).where(Account.name == name)):
                    raise Conflict(f"an account named '{name}' already exists")
                account = Account(
                    id=new_id("acct"), name=name, balance_nano=credits_nano, created_at=utcnow()
                )
                session.add(account)
                if credits_nano:
                    await session.flush()
                    session.add(_credit(account.id, credits_nano, "topup", "initial credit", actor))
                record(session, actor, "account.create", account.id, name, credits_nano=credits_nano)
        except IntegrityError:  # a concurrent create won the race
            raise Conflict(f"an account named '{name}' already exists") from None
        return account_view(account)

    async def list_accounts(self) -> list[AccountView]:
        async with self._sessions() as session:
            rows = await session.scalars(select(Account).order_by(Account.created_at, Account.name))
            return [account_view(a) for a in rows]

    async def account(self, ref: str) -> AccountView:
        async with self._sessions() as session:
            return account_view(await find_account(session, ref))

    # ------------------------------------------------------------------- credits
    async def add_credits(
        self, ref: str, amount_nano: int, note: str | None, actor: Actor | str, kind: str = "topup"
    ) -> CreditView:
        if kind == "topup" and amount_nano <= 0:
            raise StoreError("a top-up must be a positive amount")
        if amount_nano == 0:
            raise StoreError("an adjustment cannot be zero")
        async with self._sessions.begin() as session:
            account = await find_account(session, ref)
            transaction = _credit(account.id, amount_nano, kind, note, actor)
            session.add(transaction)
            record(session, actor, f"credit.{kind}", account.id, note, amount_nano=amount_nano)
            balance = await session.scalar(
                update(Account)
                .where(Account.id == account.id)
                .values(balance_nano=Account.balance_nano + amount_nano)
                .returning(Account.balance_nano)
            )
            await session.flush()
        assert balance is not None
        return CreditView(transaction.id, account.id, amount_nano, balance, kind, note, transaction.actor)

    async def credit_state(self, account_id: str) -> CreditState:
        async with self._sessions() as session:
            credits, version = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(CreditTransaction.amount_nano), 0),
                        func.coalesce(func.max(CreditTransaction.id), 0),
                    ).where(CreditTransaction.account_id == account_id)
                )
            ).one()
            # The daily rollups sum the same records, written in the same transactions: a few rows per
            # day to add rather than every record of the account (`ledger check` verifies they agree).
            usage = await session.scalar(
                select(func.coalesce(func.sum(UsageDaily.cost_nano), 0)).where(
                    UsageDaily.account_id == account_id
                )
            )
        return CreditState(int(credits), int(version), int(usage or 0))

    async def credit_changes_since(self, transaction_id: int) -> list[tuple[str, int]]:
        """(account id, newest transaction id) for accounts credited after `transaction_id`."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(CreditTransaction.account_id, func.max(CreditTransaction.id))
                .where(CreditTransaction.id > transaction_id)
                .group_by(CreditTransaction.account_id)
            )
            return [(account_id, int(newest)) for account_id, newest in rows]

    async def newest_credit_id(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.coalesce(func.max(CreditTransaction.id), 0))) or 0)

    # ---------------------------------------------------------------------- keys
    async def create_key(
        self,
        ref: str,
        name: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        budget_nano: int | None = None,
        budget_period: str | None = None,
        max_parallel: int | None = None,
        actor: Actor | str = "cli",
    ) -> tuple[KeyView, str]:
        """A new key and its plaintext, which is never stored and never shown again."""
        limits = KeyLimits(rpm, tpm, models, expires_at, budget_nano, budget_period, max_parallel)
        limits.check()
        models, budget_period = limits.models, limits.budget_period
        plaintext = generate_key()
        async with self._sessions.begin() as session:
            account = await find_account(session, ref)
            name = (name or display_prefix(plaintext)).strip()
            taken = await session.scalar(
                select(ApiKey.id).where(ApiKey.account_id == account.id, ApiKey.name == name)
            )
            if taken:
                raise Conflict(f"account '{account.name}' already has a key named '{name}'")
            key = ApiKey(
                id=new_id("key"),
                account_id=account.id,
                name=name,
                prefix=display_prefix(plaintext),
                key_hash=hash_key(plaintext),
                allowed_models=models,
                rpm=rpm,
                tpm=tpm,
                expires_at=expires_at,
                budget_nano=budget_nano,
                budget_period=budget_period,
                max_parallel=max_parallel,
                created_at=utcnow(),
                created_by=as_actor(actor).name[:320],
            )
            session.add(key)
            detail = {"key_id": key.id} | limits.audit_detail()
            record(session, actor, "key.create", account.id, f"{name} ({key.prefix})", **detail)
        return key_view(key), plaintext

    async def update_key(
        self, key_id: str, name: str | None, changes: dict[str, Any], actor: Actor | str = "cli"
    ) -> tuple[KeyView, str]:
        """Change a key's name and limits (`changes`: KeyLimits fields; None clears one); the version is
        bumped so every instance reloads it. Returns the key and its hash."""
        unknown = set(changes) - set(KeyLimits.__dataclass_fields__)
        if unknown:
            raise StoreError(f"unknown key settings: {', '.join(sorted(unknown))}")
        async with self._sessions.begin() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no key with id '{key_id}'")
            current = {
                field: getattr(key, COLUMN.get(field, field)) for field in KeyLimits.__dataclass_fields__
            }
            limits = KeyLimits(**(current | changes))
            limits.check(existing_expiry=key.expires_at)
            changed = {"key_id": key.id} | limits.audit_detail(before=KeyLimits(**current))
            if name is not None and name.strip() != key.name:
                name = name.strip()
                if not name:
                    raise StoreError("a key's name cannot be empty")
                taken = await session.scalar(
                    select(ApiKey.id).where(ApiKey.account_id == key.account_id, ApiKey.name == name)
                )
                if taken:
                    raise Conflict(f"the account already has a key named '{name}'")
                key.name = name
                changed["name"] = name
            for field in KeyLimits.__dataclass_fields__:
                setattr(key, COLUMN.get(field, field), getattr(limits, field))
            key.version = (key.version or 0) + 1
            key.updated_at = utcnow()
            record(session, actor, "key.update", key.account_id, f"{key.name} ({key.prefix})", **changed)
        return key_view(key), key.key_hash

    async def keys_changed_since(self, since: datetime) -> list[tuple[str, str, int]]:
        """(id, account id, version) of keys whose settings changed at or after `since` (the sync poll)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(ApiKey.id, ApiKey.account_id, ApiKey.version).where(ApiKey.updated_at >= since)
            )
            return [(key_id, account_id, int(version)) for key_id, account_id, version in rows]

    async def key_spend(self, key_id: str, since: datetime | None) -> int:
        """What a key's requests cost since `since` (all of them: None), exactly: the daily rollups for
        whole UTC days, the records themselves for the part of a day before the first whole one (a
        budget period in another time zone starts within a UTC day)."""
        rolled = select(func.coalesce(func.sum(UsageDaily.cost_nano), 0)).where(UsageDaily.key_id == key_id)
        part = None
        if since is not None:
            start = since.astimezone(UTC)
            first_whole = start.date() if start.time() == time(0) else start.date() + timedelta(days=1)
            rolled = rolled.where(UsageDaily.day >= first_whole)
            if start.time() != time(0):
                part = select(func.coalesce(func.sum(UsageRecord.cost_nano), 0)).where(
                    UsageRecord.key_id == key_id,
                    UsageRecord.created_at >= start,
                    UsageRecord.created_at < datetime.combine(first_whole, time(0), UTC),
                )
        async with self._sessions() as session:
            spent = int(await session.scalar(rolled) or 0)
            return spent + (int(await session.scalar(part) or 0) if part is not None else 0)

    async def list_keys(self, ref: str | None = None) -> list[KeyView]:
        async with self._sessions() as session:
            query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)
            if ref is not None:
                query = query.where(ApiKey.account_id == (await find_account(session, ref)).id)
            return [key_view(k) for k in await session.scalars(query)]

    async def revoke_key(self, key_id: str, actor: Actor | str = "cli") -> KeyView:
        async with self._sessions.begin() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"no key with id '{key_id}'")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                record(
                    session, actor, "key.revoke", key.account_id, f"{key.name} ({key.prefix})", key_id=key.id
                )
        return key_view(key)

    async def key(self, key_id: str) -> tuple[KeyView, str] | None:
        """A key by id, with its hash."""
        async with self._sessions() as session:
            key = await session.get(ApiKey, key_id)
            return (key_view(key), key.key_hash) if key is not None else None

    async def find_key(self, key_hash: str) -> KeyView | None:
        async with self._sessions() as session:
            key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            return key_view(key) if key is not None else None

    async def revoked_since(self, since: datetime) -> list[tuple[str, str]]:
        """(id, account id) of keys revoked at or after `since` (the revocation poll)."""
        async with self._sessions() as session:
            query = select(ApiKey.id, ApiKey.account_id).where(ApiKey.revoked_at >= since)
            rows = await session.execute(query)
            return [(key_id, account_id) for key_id, account_id in rows]

    # --------------------------------------------------------------------- usage
    async def record_usage(self, rows: Iterable[UsageRow]) -> int:
        """Insert usage records and charge them, atomically; already-recorded request ids are skipped."""
        return await self.record_usage_json([encode_row(row) for row in rows])

    async def record_usage_json(self, records: list[bytes]) -> int:
        """The same for records as the JSON objects the ledger stream carries; returns how many were new."""
        if not records:
            return 0
        if self._batches is not None:
            return await self._batches.write(records)
        async with self.engine.begin() as connection:
            return await insert_and_charge_sqlite(connection, records)

    async def usage(
        self,
        account: str | None = None,
        key_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRow]:
        async with self._sessions() as session:
            query = (
                select(UsageRecord)
                .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
                .limit(limit)
            )
            if account is not None:
                query = query.where(UsageRecord.account_id == (await find_account(session, account)).id)
            if key_id is not None:
                query = query.where(UsageRecord.key_id == key_id)
            if since is not None:
                query = query.where(UsageRecord.created_at >= since)
            return [usage_row(r) for r in await session.scalars(query)]

    async def request_usage(self, account_id: str, request_id: str) -> UsageRow | None:
        """The usage record of one request of this account, by Bastion's request id or the client's own
        x-request-id (the newest, if the client reused it); None if there is none."""
        async with self._sessions() as session:
            query = (
                select(UsageRecord)
                .where(
                    UsageRecord.account_id == account_id,
                    or_(UsageRecord.request_id == request_id, UsageRecord.client_request_id == request_id),
                )
                .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
                .limit(1)
            )
            record = await session.scalar(query)
            return None if record is None else usage_row(record)

    # -------------------------------------------------------------------- ledger
    async def ledger(self) -> list[LedgerLine]:
        credits = (
            select(func.coalesce(func.sum(CreditTransaction.amount_nano), 0))
            .where(CreditTransaction.account_id == Account.id)
            .scalar_subquery()
        )
        usage = (
            select(func.coalesce(func.sum(UsageRecord.cost_nano), 0))
            .where(UsageRecord.account_id == Account.id)
            .scalar_subquery()
        )
        rolled_up = (
            select(func.coalesce(func.sum(UsageDaily.cost_nano), 0))
            .where(UsageDaily.account_id == Account.id)
            .scalar_subquery()
        )
        async with self._sessions() as session:
            rows = await session.execute(
                select(Account.id, Account.name, Account.balance_nano, credits, usage, rolled_up).order_by(
                    Account.name
                )
            )
            return [LedgerLine(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]


def _credit(
    account_id: str, amount: int, kind: str, note: str | None, actor: Actor | str
) -> CreditTransaction:
    return CreditTransaction(
        account_id=account_id,
        amount_nano=amount,
        kind=kind,
        note=note,
        actor=as_actor(actor).name[:200],
        created_at=utcnow(),
    )


__all__ = [
    "AccountView",
    "Conflict",
    "CreditState",
    "CreditView",
    "KeyView",
    "LedgerLine",
    "NotFound",
    "Store",
    "StoreError",
    "UsageRow",
]

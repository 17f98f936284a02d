"""Finding rows by what people type or pages show: an account by its id or name, keys' and accounts'
names by id."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.db.errors import NotFound
from bastion.db.models import Account, ApiKey


async def find_account(session: AsyncSession, ref: str) -> Account:
    account = await session.scalar(select(Account).where(or_(Account.id == ref, Account.name == ref)))
    if account is None:
        raise NotFound(f"no account with id or name '{ref}'")
    return account


async def key_names(session: AsyncSession, key_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Key id -> (name, display prefix), for the keys named (a page's worth)."""
    if not key_ids:
        return {}
    rows = await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(ApiKey.id.in_(set(key_ids)))
    )
    return {r.id: (r.name, r.prefix) for r in rows}


async def account_names(session: AsyncSession, account_ids: list[str]) -> dict[str, str]:
    """Account id -> name, for the accounts named (a page's worth)."""
    if not account_ids:
        return {}
    rows = await session.execute(select(Account.id, Account.name).where(Account.id.in_(set(account_ids))))
    return {r.id: r.name for r in rows}

"""Finding a row by what people type: an account by its id or its name."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.db.errors import NotFound
from bastion.db.models import Account


async def find_account(session: AsyncSession, ref: str) -> Account:
    account = await session.scalar(select(Account).where(or_(Account.id == ref, Account.name == ref)))
    if account is None:
        raise NotFound(f"no account with id or name '{ref}'")
    return account

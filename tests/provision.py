"""Test databases: an isolated SQLite file or PostgreSQL database, migrated, with accounts and keys."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert

from bastion.auth.keys import display_prefix, hash_key, new_id
from bastion.db import migrate
from bastion.db.models import ApiKey, utcnow
from bastion.db.store import Store

T = TypeVar("T")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'bastion.db'}"


def create_postgres_database() -> str:
    name = f"bastion_test_{secrets.token_hex(6)}"
    _psql(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql], check=True)


async def migrated(url: str) -> None:
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
    finally:
        await store.close()


async def account_with_key(
    url: str,
    name: str,
    credits_nano: int,
    key: str | None = None,
    **key_options: Any,
) -> tuple[str, str, str]:
    """(account id, key id, key plaintext). A given plaintext is stored as Bastion would store it."""
    store = Store.from_url(url)
    try:
        account = await store.create_account(name, credits_nano, actor="tests")
        if key is None:
            view, plaintext = await store.create_key(account.id, **key_options)
            return account.id, view.id, plaintext
        key_id = new_id("key")
        async with store.engine.begin() as connection:
            await connection.execute(
                insert(ApiKey).values(
                    id=key_id,
                    account_id=account.id,
                    name=key_options.get("name", "fixed"),
                    prefix=display_prefix(key),
                    key_hash=hash_key(key),
                    allowed_models=key_options.get("models"),
                    rpm=key_options.get("rpm"),
                    tpm=key_options.get("tpm"),
                    expires_at=key_options.get("expires_at"),
                    revoked_at=key_options.get("revoked_at"),
                    created_at=utcnow(),
                )
            )
        return account.id, key_id, key
    finally:
        await store.close()

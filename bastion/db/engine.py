"""Database engines: PostgreSQL through asyncpg (directly, or through a transaction-pooling PgBouncer),
or the embedded SQLite through aiosqlite."""

from __future__ import annotations

from typing import Any, Literal
from uuid import uuid4

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./bastion.db"
Pooler = Literal["none", "transaction"]
# Query options of a PostgreSQL URL that reach asyncpg as they should (as strings, or coerced by SQLAlchemy).
_URL_OPTIONS = {"ssl", "sslmode", "prepared_statement_cache_size"}
_CACHE_OPTIONS = {"statement_cache_size", "prepared_statement_name_func", "max_cached_statement_lifetime"}


def async_url(url: str) -> str:
    """Accept the URLs people write (postgres://, postgresql://, sqlite:///) and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(
            f"unsupported database URL scheme '{parsed.drivername}' (use postgresql:// or sqlite:///)"
        )
    if backend in ("postgres", "postgresql"):
        _check_options(dict(parsed.query))
    return parsed.render_as_string(hide_password=False)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse what asyncpg would crash on later (an int option as a string) with one line saying why."""
    for name, value in options.items():
        if name in _CACHE_OPTIONS:
            raise ValueError(
                f"'{name}' is not a URL option: behind PgBouncer in transaction mode set"
                " BASTION_DATABASE_POOLER=transaction (Bastion then turns asyncpg's statement cache off)"
            )
        if name not in _URL_OPTIONS:
            raise ValueError(f"unknown option '{name}' (supported: {', '.join(sorted(_URL_OPTIONS))})")
        if name == "prepared_statement_cache_size" and not str(value).isdigit():
            raise ValueError(f"prepared_statement_cache_size must be a whole number, not '{value}'")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, pooler: Pooler = "none", **options: Any) -> AsyncEngine:
    """`pooler="transaction"`: PgBouncer (or a managed pooler) in transaction mode, where consecutive
    statements of a client may run on different server connections, so no prepared statement may outlive
    its statement: asyncpg's statement cache and SQLAlchemy's are off, and the statements SQLAlchemy does
    prepare get unique names (the supported way, SQLAlchemy's asyncpg dialect documentation)."""
    url = async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(url, **options)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # WAL: the CLI writes while the server reads; busy_timeout queues writers instead of failing.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if pooler == "transaction":
        options["connect_args"] = {
            **options.get("connect_args", {}),
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, **options)


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid4().hex}__"


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)

"""Tables: accounts, API keys, credit transactions, usage records and their daily rollups, refusals per
day; the dashboard's users, sessions and the audit log. Money columns are nano-USD."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Always credits added minus usage recorded (`bastion ledger check` verifies it).
    balance_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_api_keys_account_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))  # shown in listings and logs: "qbt_AbCd1234"
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    budget_nano: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # spend limit per period
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)  # total|daily|weekly|monthly
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests in flight at most
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # bumped on each change
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    created_by: Mapped[str | None] = mapped_column(String(320), nullable=True)  # who created it (audit actor)


class CreditTransaction(Base):
    __tablename__ = "credit_transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_nano: Mapped[int] = mapped_column(BigInteger)  # signed: adjustments may remove credit
    kind: Mapped[str] = mapped_column(String(20))  # topup | adjustment
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))  # who: "cli:<user>", "admin-api", "demo"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_key_created", "key_id", "created_at"),  # a key's spend in a period
        Index("ix_usage_records_account_client_id", "account_id", "client_request_id"),  # GET /v1/requests
        Index("ix_usage_records_account_created_id", "account_id", "created_at", "id"),  # an account's log
        Index("ix_usage_records_created_id", "created_at", "id"),  # every account's log (operators)
        # The log filtered by model, or by failure, finds its page without walking the whole log: a model
        # last used months ago, failures among millions of successes.
        Index("ix_usage_records_model_created_id", "model", "created_at", "id"),
        Index(
            "ix_usage_records_account_failed",
            "account_id",
            "created_at",
            "id",
            postgresql_where=text("status >= 400"),
            sqlite_where=text("status >= 400"),
        ),
        Index(
            "ix_usage_records_failed",
            "created_at",
            "id",
            postgresql_where=text("status >= 400"),
            sqlite_where=text("status >= 400"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(160), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The ledger's `request_id` is always Bastion's own (unique); a client's x-request-id is kept here.
    client_request_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    # Settled from its last checkpoint after its instance died (bastion/billing/checkpoints.py).
    recovered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class RunningUsage(Base):
    """A stream's running usage, checkpointed while it runs (in-process live state only: with Redis the
    checkpoints are beside the reservations there): the usage record it would get if its process died
    now. The next start settles what a dead process left."""

    __tablename__ = "running_usage"

    request_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(200), index=True)
    record: Mapped[str] = mapped_column(Text)  # the usage record as the ledger stream carries it
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageDaily(Base):
    """Usage summed per UTC day, account, key and model: what the dashboard's charts and totals read.
    Written by the ledger writer in the same transaction as the usage records it sums."""

    __tablename__ = "usage_daily"
    __table_args__ = (
        Index("ix_usage_daily_key_day", "key_id", "day"),  # a key's spend
        Index("ix_usage_daily_day", "day"),  # every account's (operators)
    )

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # status >= 400
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)


class RefusalDaily(Base):
    """Requests refused before they were served (402, 429, validation), counted per UTC day, account,
    key and error code: a refusal writes no usage record. Added to by the ledger writer from the live
    state's tallies."""

    __tablename__ = "refusals_daily"
    __table_args__ = (
        Index("ix_refusals_daily_key_last", "key_id", "last_at"),  # a key's last refusal
        Index("ix_refusals_daily_day", "day"),  # every account's (operators)
    )

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DashboardUser(Base):
    """Someone who signs in to the dashboard: an operator (every account), or a member of one account
    with a role. `link_hash` is the one outstanding invite or reset link (a SHA-256 of its token)."""

    __tablename__ = "dashboard_users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower case
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)  # argon2id
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), nullable=True, index=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)  # owner | developer | viewer
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    link_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    link_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    password_set_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_signin_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DashboardSession(Base):
    """A signed-in browser: the cookie's SHA-256, its CSRF token, and when it was last used."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("dashboard_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)


class AuditEntry(Base):
    """Who did what, when, from where: sign-ins, keys, credit, members. Never deleted."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))  # an email, "cli:<user>", "admin-api", "demo"
    actor_user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(320), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

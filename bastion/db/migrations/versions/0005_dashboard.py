"""the dashboard: daily usage rollups, users, sessions, the audit log, who created each key; usage
indexes for its ranges

`usage_daily` sums usage per UTC day, account, key and model; the ledger writer keeps it in the same
transaction as the records, and this migration fills it from the records already written. The request
log pages by (created_at, id) per account and over every account, so those two composite indexes
replace the single-column ones on account_id, key_id and created_at (each a prefix of a composite); a
page filtered by model or by failure has an index of its own (failures: partial, so it stays small).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(40), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("created_by", sa.String(320), nullable=True))
    op.create_index("ix_usage_daily_key_day", "usage_daily", ["key_id", "day"])
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    day = (
        "(created_at AT TIME ZONE 'UTC')::date"
        if op.get_bind().dialect.name == "postgresql"
        else "date(created_at)"
    )
    op.execute(
        "INSERT INTO usage_daily (account_id, day, key_id, model, requests, errors, prompt_tokens,"
        " completion_tokens, cost_nano)"
        f" SELECT account_id, {day}, key_id, model, count(*),"
        " sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(prompt_tokens), sum(completion_tokens),"
        f" sum(cost_nano) FROM usage_records GROUP BY account_id, {day}, key_id, model"
    )

    op.create_index(
        "ix_usage_records_account_created_id", "usage_records", ["account_id", "created_at", "id"]
    )
    op.create_index("ix_usage_records_created_id", "usage_records", ["created_at", "id"])
    op.create_index("ix_usage_records_model_created_id", "usage_records", ["model", "created_at", "id"])
    failed = sa.text("status >= 400")
    op.create_index(
        "ix_usage_records_account_failed",
        "usage_records",
        ["account_id", "created_at", "id"],
        postgresql_where=failed,
        sqlite_where=failed,
    )
    op.create_index(
        "ix_usage_records_failed",
        "usage_records",
        ["created_at", "id"],
        postgresql_where=failed,
        sqlite_where=failed,
    )
    op.drop_index("ix_usage_records_account_id", "usage_records")
    op.drop_index("ix_usage_records_key_id", "usage_records")
    op.drop_index("ix_usage_records_created_at", "usage_records")

    op.create_table(
        "dashboard_users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("operator", sa.Boolean(), nullable=False),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("link_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("link_expires_at", _WHEN, nullable=True),
        sa.Column("password_set_at", _WHEN, nullable=True),
        sa.Column("last_signin_at", _WHEN, nullable=True),
    )
    op.create_index("ix_dashboard_users_account_id", "dashboard_users", ["account_id"])
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(40),
            sa.ForeignKey("dashboard_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("last_seen_at", _WHEN, nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
    )
    op.create_index("ix_dashboard_sessions_user_id", "dashboard_sessions", ["user_id"])
    op.create_index("ix_dashboard_sessions_last_seen_at", "dashboard_sessions", ["last_seen_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("actor_user_id", sa.String(40), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("account_id", sa.String(40), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(320), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_account_at", "audit_log", ["account_id", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("dashboard_sessions")
    op.drop_table("dashboard_users")
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
    op.create_index("ix_usage_records_key_id", "usage_records", ["key_id"])
    op.create_index("ix_usage_records_account_id", "usage_records", ["account_id"])
    op.drop_index("ix_usage_records_failed", "usage_records")
    op.drop_index("ix_usage_records_account_failed", "usage_records")
    op.drop_index("ix_usage_records_model_created_id", "usage_records")
    op.drop_index("ix_usage_records_created_id", "usage_records")
    op.drop_index("ix_usage_records_account_created_id", "usage_records")
    op.drop_table("usage_daily")
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("created_by")

"""keys: a spend budget with its period, a cap on requests in flight, and a version bumped on every change

`version` is what makes a changed limit apply on every instance at the next request: the admission
script compares it with the version the instance's cached key has. Two indexes for the questions a key
asks about itself: its spend in a period, and one request by the client's own id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("budget_nano", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("budget_period", sa.String(8), nullable=True))
        table.add_column(sa.Column("max_parallel", sa.Integer(), nullable=True))
        table.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_keys_updated_at", "api_keys", ["updated_at"])
    op.create_index("ix_usage_records_key_created", "usage_records", ["key_id", "created_at"])
    op.create_index(
        "ix_usage_records_account_client_id", "usage_records", ["account_id", "client_request_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_records_account_client_id", "usage_records")
    op.drop_index("ix_usage_records_key_created", "usage_records")
    op.drop_index("ix_api_keys_updated_at", "api_keys")
    with op.batch_alter_table("api_keys") as table:
        for column in ("updated_at", "version", "max_parallel", "budget_period", "budget_nano"):
            table.drop_column(column)

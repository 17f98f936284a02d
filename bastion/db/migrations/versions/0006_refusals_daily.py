"""refusals: requests refused before they were served, counted per UTC day, account, key and code

A refused request (402, 429, a body or model that fails validation) writes no usage record: the live
state counts it, and the ledger writer adds the counts here, so a client hammering a refused key costs a
few counters rather than a row per request.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refusals_daily",
        sa.Column("account_id", sa.String(40), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_refusals_daily_key_last", "refusals_daily", ["key_id", "last_at"])
    op.create_index("ix_refusals_daily_day", "refusals_daily", ["day"])


def downgrade() -> None:
    op.drop_index("ix_refusals_daily_day", "refusals_daily")
    op.drop_index("ix_refusals_daily_key_last", "refusals_daily")
    op.drop_table("refusals_daily")

"""usage records: quantity and unit, for meters that do not count tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.add_column(sa.Column("quantity", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("unit", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("unit")
        table.drop_column("quantity")

"""running usage: streams' checkpoints for the in-process live state, and records settled after a crash

With the in-process live state (the embedded default) a stream's running usage is checkpointed to
`running_usage`; the next start settles what a crashed process left there. `usage_records.recovered`
marks a record settled from a checkpoint after its instance died (on either stack).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "usage_records",
        sa.Column("recovered", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "running_usage",
        sa.Column("request_id", sa.String(160), primary_key=True),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_running_usage_instance_id", "running_usage", ["instance_id"])


def downgrade() -> None:
    op.drop_index("ix_running_usage_instance_id", "running_usage")
    op.drop_table("running_usage")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("recovered")

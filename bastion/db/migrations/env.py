"""Alembic environment: runs on the connection `bastion.db.migrate` hands over (sync, inside run_sync)."""

from __future__ import annotations

from alembic import context

from bastion.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `bastion migrate` (it provides the database connection)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""`bastion migrate` up and down on both databases, and the migration matching the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from provision import create_postgres_database, drop_postgres_database, run
from sqlalchemy import inspect

from bastion.db.engine import create_engine
from bastion.db.migrate import head_revision
from bastion.db.models import Base

TABLES = [
    "accounts",
    "alembic_version",
    "api_keys",
    "audit_log",
    "credit_transactions",
    "dashboard_sessions",
    "dashboard_users",
    "refusals_daily",
    "running_usage",
    "usage_daily",
    "usage_records",
]


def _migrate(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")} | {
        "BASTION_DATABASE_URL": database
    }
    return subprocess.run(
        [sys.executable, "-m", "bastion", "migrate", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def _tables_and_drift(database: str) -> tuple[list[str], list[object]]:
    engine = create_engine(database)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: sorted(inspect(sync).get_table_names()))
            drift = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        return tables, drift
    finally:
        await engine.dispose()


def test_migrations_go_up_down_and_up_again(database: str) -> None:
    up = _migrate(database)
    assert up.returncode == 0, up.stderr
    assert f'"revision": "{head_revision()}"' in up.stdout
    tables, drift = run(_tables_and_drift(database))
    assert tables == TABLES
    assert drift == [], f"the migration and the models differ: {drift}"

    down = _migrate(database, "--down", "--revision", "base")
    assert down.returncode == 0, down.stderr
    assert run(_tables_and_drift(database))[0] == ["alembic_version"]

    assert _migrate(database).returncode == 0
    assert run(_tables_and_drift(database))[0] == TABLES


def test_serving_an_unmigrated_shared_database_is_refused(tmp_path: Path) -> None:
    url = create_postgres_database()
    try:
        config = tmp_path / "m.yaml"
        config.write_text(
            "providers: [{name: l, type: mock}]\n"
            "models: [{id: m, category: LLM, deployments: [{provider: l, model: m}], price: {}}]\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")} | {
            "BASTION_DATABASE_URL": url
        }
        result = subprocess.run(
            [sys.executable, "-m", "bastion", "serve", "--port", "0", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 2
        needs = f"this Bastion needs {head_revision()}: run `bastion migrate`"
        assert result.stderr.strip().splitlines() == [f"bastion: the database schema is at nothing, {needs}"]
    finally:
        drop_postgres_database(url)

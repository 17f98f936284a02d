"""Bastion behind a real PgBouncer in transaction pooling mode (what managed PostgreSQL poolers give by
default), two gateway processes sharing it and one Redis: migrate, serve, bill exactly, `ledger check`,
the dashboard's reads, and a PgBouncer restart in the middle of traffic that loses no usage record."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import gateway_models_file
from dashboard_client import person
from pgbouncer import PgBouncer, pgbouncer, pgbouncer_binary
from provision import REDIS_URL, create_postgres_database, drop_postgres_database
from stacks import Stack, delete_redis_keys, poll
from upstream import MockUpstream

HELLO = [{"role": "user", "content": "hi"}]
ONE_REQUEST = 17_000  # 11 prompt + 3 completion tokens at $1 / $2 per 1M
USD = 10**9
DEMO_MODELS = Path(__file__).resolve().parents[1] / "bastion" / "demo.yaml"

# CI installs PgBouncer and sets BASTION_REQUIRE_ENGINES=1, so there a missing one fails rather than skips.
pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None and not os.environ.get("BASTION_REQUIRE_ENGINES"),
    reason="pgbouncer is not installed (.ci/run installs Debian's package)",
)


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    started = pgbouncer()
    yield started
    started.close()


@pytest.fixture(scope="module")
def pooled(
    bouncer: PgBouncer, upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Two gateways whose database is PgBouncer; the tests read the ledger directly from PostgreSQL."""
    workdir = tmp_path_factory.mktemp("pooled")
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    direct = create_postgres_database()
    stack = Stack(
        "shared",
        bouncer.url(direct.rsplit("/", 1)[1]),
        REDIS_URL,
        f"test-{secrets.token_hex(4)}:",
        config,
        workdir,
        settings={"BASTION_DATABASE_POOLER": "transaction"},
        direct_database=direct,
    )
    migrated = stack.bastion("migrate")
    assert migrated.returncode == 0, migrated.stderr
    stack.start()
    stack.start()
    yield stack
    stack.stop()
    drop_postgres_database(direct)
    delete_redis_keys(REDIS_URL, stack.redis_prefix)


def test_without_the_setting_the_pooler_breaks_bastion_with_the_error_the_issue_reported(
    pooled: Stack,
) -> None:
    # The failure this setting exists for, seen through the same PgBouncer (a regression guard for the
    # harness too: a pooler that is not in transaction mode would let this pass).
    runs = [pooled.bastion("accounts", "list", env={"BASTION_DATABASE_POOLER": "none"}) for _ in range(3)]
    assert any(r.returncode != 0 and "prepared statement" in r.stderr for r in runs), [r.stderr for r in runs]


def test_the_cli_works_through_the_pooler_every_time(pooled: Stack) -> None:
    names = [f"pooled-{secrets.token_hex(3)}" for _ in range(4)]
    created = [pooled.bastion("accounts", "create", name, "--credits", "2") for name in names]
    assert [c.returncode for c in created] == [0, 0, 0, 0], [c.stderr for c in created]
    name = names[0]
    key = pooled.bastion("keys", "create", name, "--name", "k", "--json")
    assert key.returncode == 0, key.stderr
    assert pooled.bastion("credits", "add", name, "1.5", "--note", "through pgbouncer").returncode == 0
    listed = pooled.bastion("accounts", "list", "--json")
    assert listed.returncode == 0 and f'"name": "{name}"' in listed.stdout
    assert pooled.bastion("ledger", "check").returncode == 0


def test_two_gateways_bill_exactly_through_the_pooler(pooled: Stack) -> None:
    account_id, _, key = pooled.account(USD, rpm=1_000_000, tpm=100_000_000)
    for n in range(20):
        gateway = pooled.gateways[n % 2]
        answer = pooled.client(key, gateway).chat.completions.with_raw_response.create(
            model="m-echo", messages=HELLO
        )
        assert answer.headers["x-bastion-cost-usd"] == "0.000017"
    records = pooled.wait_records(account_id, 20)
    assert sum(r.cost_nano for r in records) == 20 * ONE_REQUEST
    assert pooled.balance(account_id) == USD - 20 * ONE_REQUEST
    check = pooled.bastion("ledger", "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    # A new key's first use (the cold path: a query) and a request's record, read back through the pooler.
    fresh = pooled.bastion("keys", "create", account_id, "--name", f"fresh-{secrets.token_hex(2)}", "--json")
    plaintext = fresh.stdout.split('"key": "')[1].split('"')[0]
    made = pooled.client(plaintext, pooled.gateways[1]).chat.completions.with_raw_response.create(
        model="m-echo", messages=HELLO
    )
    request_id = made.headers["x-request-id"]
    looked = pooled.client(plaintext, pooled.gateways[0]).get(f"/requests/{request_id}", cast_to=object)
    assert looked["cost_nano"] == ONE_REQUEST  # type: ignore[index]


def test_a_pooler_restart_mid_traffic_loses_no_usage_record(pooled: Stack, bouncer: PgBouncer) -> None:
    account_id, _, key = pooled.account(USD, rpm=1_000_000, tpm=100_000_000)
    served: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def traffic(gateway_index: int) -> None:
        client = pooled.client(key, pooled.gateways[gateway_index])
        while not stop.is_set():
            try:
                client.chat.completions.create(model="m-echo", messages=HELLO)
                served.append(1)
            except openai.APIError as exc:  # a warm key needs no database: nothing should fail
                failures.append(exc)

    workers = [threading.Thread(target=traffic, args=(i % 2,)) for i in range(4)]
    for worker in workers:
        worker.start()
    try:
        assert poll(lambda: len(served) >= 40, 20), "no traffic"
        bouncer.restart()  # killed and started again: every server and client connection drops
        before = len(served)
        assert poll(lambda: len(served) >= before + 60, 30), "traffic stopped after the restart"
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert failures == []
    records = pooled.wait_records(account_id, len(served), timeout=30)
    assert len({r.request_id for r in records}) == len(served)
    assert pooled.balance(account_id) == USD - len(served) * ONE_REQUEST
    assert pooled.bastion("ledger", "check").returncode == 0
    for gateway in pooled.gateways:
        ready = poll(lambda g=gateway: _ready(g.root), 10)
        assert ready, f"{gateway.root} is not ready after the pooler came back"


def _ready(root: str) -> bool:
    try:
        return httpx.get(root + "/readyz", timeout=3).status_code == 200
    except httpx.TransportError:
        return False


def test_the_dashboard_reads_through_the_pooler(pooled: Stack) -> None:
    account_id, _, key = pooled.account(USD, rpm=1_000_000, tpm=100_000_000)
    pooled.client(key).chat.completions.create(model="m-echo", messages=HELLO)
    pooled.wait_records(account_id, 1)
    owner = person(pooled, "--account", account_id, "--role", "owner")
    try:
        for path in ("", "usage", "keys", "credit", "members", "audit"):
            assert owner.page(f"/dashboard/a/{account_id}/{path}").status_code == 200, path
        made = owner.post(f"/dashboard/a/{account_id}/keys", {"name": "from-the-dashboard"})
        assert made.status_code == 201
    finally:
        owner.close()


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("statement_cache_size=0", "'statement_cache_size' is not a URL option: behind PgBouncer"),
        ("prepared_statement_cache_size=none", "prepared_statement_cache_size must be a whole number"),
        ("pool=1", "unknown option 'pool'"),
    ],
)
@pytest.mark.parametrize("command", [("migrate",), ("serve", "--port", "0"), ("accounts", "list")])
def test_a_wrong_url_option_is_one_clear_line(option: str, said: str, command: tuple[str, ...]) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    url = f"postgresql://postgres@127.0.0.1:5432/postgres?{option}"
    result = subprocess.run(
        [sys.executable, "-m", "bastion", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=inherited | {"BASTION_DATABASE_URL": url, "BASTION_CONFIG": str(DEMO_MODELS)},
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"bastion: BASTION_DATABASE_URL: {said}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_wrong_pooler_setting_is_one_clear_line() -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "accounts", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=inherited | {"BASTION_DATABASE_POOLER": "session"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bastion: BASTION_DATABASE_POOLER: Input should be 'none' or 'transaction' (got 'session')"
    )

"""The CLI for scripts and for people: every `--json` answer in the HTTP API's forms (money a decimal
string of USD under `*_usd`, times RFC 3339 in UTC), `--account` taken alike by every command that
takes an account, a wrong flag answered with its own command's usage, `keys create --models` checked
against the models file, and `--version` / `--help` importing no heavy library.

Each command runs as `python -m bastion` in a directory of its own (no ./bastion.yaml or demo key file
of the checkout's), against a real database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from provision import run, sqlite_url

from bastion.cli import parser
from bastion.db.store import Store, UsageRow

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
USD = re.compile(r"-?\d+(\.\d+)?")
TABLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
# A `*_nano` field the HTTP API has too: a usage row is `GET /v1/requests/{id}`'s, `cost_nano` included.
NANO_FIELDS_OF_THE_API = {"cost_nano"}
MODELS_FILE = {
    "providers": [{"name": "local", "type": "mock"}],
    "models": [
        {
            "id": m,
            "category": "LLM",
            "deployments": [{"provider": "local", "model": m}],
            "price": {"input": 1, "output": 2},
        }
        for m in ("m-echo", "m-think")
    ],
}
# What `--version` and `--help` must not load (each is a library of tens to hundreds of milliseconds).
HEAVY = (
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "redis",
    "pydantic",
    "pydantic_settings",
    "yaml",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "jinja2",
    "prometheus_client",
)


@dataclass
class Cli:
    workdir: Path
    env: dict[str, str]

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bastion", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
            env=self.env | (env or {}),
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)


def _cli(workdir: Path, database: str) -> Cli:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    config = workdir / "models.yaml"
    config.write_text(yaml.safe_dump(MODELS_FILE))
    return Cli(workdir, inherited | {"BASTION_DATABASE_URL": database, "BASTION_CONFIG": str(config)})


@pytest.fixture
def cli(database: str, tmp_path: Path) -> Cli:
    """On an empty SQLite file and an empty PostgreSQL database (the `database` fixture's two)."""
    return _cli(tmp_path, database)


@pytest.fixture(scope="module")
def sqlite_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One migrated SQLite database for the tests that only read their commands' answers."""
    workdir = tmp_path_factory.mktemp("cli")
    found = _cli(workdir, sqlite_url(workdir))
    assert found("migrate").returncode == 0
    yield found


def _json_commands() -> set[str]:
    """Every command of the parser that has --json, as 'keys list'."""
    found: set[str] = set()

    def walk(node: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        if any("--json" in action.option_strings for action in node._actions):
            found.add(" ".join(path))
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))

    walk(parser(), ())
    return found


def _check_forms(value: Any, where: str = "") -> int:
    """Every money field a decimal USD string, every time RFC 3339 in UTC, no '$', no `*_nano` the API
    lacks; the number of money and time fields seen."""
    seen = 0
    if isinstance(value, list):
        return sum(_check_forms(item, f"{where}[{i}]") for i, item in enumerate(value))
    if not isinstance(value, dict):
        assert not (isinstance(value, str) and "$" in value), f"{where}: {value!r}"
        return 0
    for name, item in value.items():
        here = f"{where}.{name}"
        assert not name.endswith("_nano") or name in NANO_FIELDS_OF_THE_API, f"{here}: a nano-USD field"
        if name.endswith("_usd") and item is not None:
            assert isinstance(item, str) and USD.fullmatch(item), f"{here}: {item!r}"
            Decimal(item)
            seen += 1
        elif (name.endswith("_at") or name == "at") and item is not None:
            assert isinstance(item, str) and RFC3339_UTC.fullmatch(item), f"{here}: {item!r}"
            assert datetime.fromisoformat(item).utcoffset() == timedelta(0)
            seen += 1
        else:
            seen += _check_forms(item, here)
    return seen


def _record(account_id: str, key_id: str, n: int, cost_nano: int, estimated: bool) -> UsageRow:
    return UsageRow(
        request_id=f"req_cli_{n:04d}",
        account_id=account_id,
        key_id=key_id,
        model="m-echo",
        endpoint="chat",
        prompt_tokens=10,
        completion_tokens=5,
        cost_nano=cost_nano,
        status=200,
        latency_ms=12,
        estimated=estimated,
        created_at=datetime.now(UTC).replace(microsecond=123456),
    )


def _write_usage(database: str, rows: list[UsageRow]) -> None:
    async def go() -> None:
        store = Store.from_url(database)
        try:
            await store.record_usage(rows)
        finally:
            await store.close()

    run(go())


def test_every_json_answer_gives_money_as_decimal_usd_and_times_as_rfc3339(cli: Cli, database: str) -> None:
    ran: dict[str, Any] = {}

    def answer(command: str, *args: str) -> Any:
        ran[command] = found = cli.json(*command.split(), *args)
        return found

    assert answer("migrate")["revision"]
    account = answer("accounts create", "acme", "--credits", "25")
    assert (account["name"], account["balance_usd"]) == ("acme", "25")
    assert [a["balance_usd"] for a in answer("accounts list")] == ["25"]
    added = answer("credits add", "acme", "10", "--note", "invoice 1042")
    assert (added["amount_usd"], added["balance_usd"]) == ("10", "35")
    adjusted = answer("credits adjust", "--account", "acme", "-2.50", "--note", "refund")
    assert (adjusted["amount_usd"], adjusted["balance_usd"]) == ("-2.5", "32.5")
    key = answer(
        "keys create", "acme", "--name", "ci", "--models", "m-echo", "--budget", "5", "--expires", "30d"
    )
    assert (key["budget_usd"], key["budget_period"], key["allowed_models"]) == ("5", "total", ["m-echo"])
    updated = answer("keys update", key["id"], "--budget", "2.5", "--budget-period", "monthly")
    assert (updated["budget_usd"], updated["budget_period"], updated["version"]) == ("2.5", "monthly", 1)
    spare = cli.json("keys", "create", "--account", "acme", "--name", "spare")
    revoked = answer("keys revoke", spare["id"])
    assert revoked["revoked_at"] is not None

    _write_usage(
        database,
        [
            _record(account["id"], key["id"], 1, 17_000, False),
            _record(account["id"], key["id"], 2, 2_500, True),
        ],
    )
    listed = {k["name"]: k for k in answer("keys list", "--account", "acme")}
    assert (listed["ci"]["spend_usd"], listed["ci"]["period_resets_at"][-1]) == ("0.0000195", "Z")
    usage = answer("usage", "--account", "acme")
    assert [(r["cost_usd"], r["cost_nano"], r["estimated"]) for r in usage] == [
        ("0.0000025", 2_500, True),
        ("0.000017", 17_000, False),
    ]
    ledger = answer("ledger check")
    assert ledger["ok"] is True
    assert ledger["accounts"][0]["balance_usd"] == "32.4999805"  # 32.5 - 0.0000195
    assert ledger["accounts"][0]["rolled_up_usd"] == ledger["accounts"][0]["usage_usd"] == "0.0000195"

    invited = answer("users invite", "ana@acme.example", "--account", "acme", "--role", "owner")
    assert invited["link_expires_at"] and invited["link"].startswith("http")
    assert [u["email"] for u in answer("users list", "--account", "acme")] == ["ana@acme.example"]
    answer("users reset", "ana@acme.example")
    answer("users remove", "ana@acme.example")
    audit = answer("audit", "--account", "acme")
    details = {e["action"]: e["detail"] for e in audit}
    assert details["account.create"] == {"credits_usd": "25"}
    assert details["credit.adjustment"] == {"amount_usd": "-2.5"}
    assert details["key.update"]["budget_usd"] == "2.5"

    assert set(ran) == _json_commands(), "a command with --json that this test does not run"
    seen = {command: _check_forms(found, command) for command, found in ran.items()}
    assert all(seen[c] > 0 for c in ran if c != "migrate"), seen  # each had money or times to check


def test_account_is_taken_as_an_argument_or_a_flag_alike(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.json("accounts", "create", "flags-co", "--credits", "1")
    cli.json("accounts", "create", "other-co")
    cli.json("keys", "create", "--account", "flags-co", "--name", "by-flag")
    cli.json("keys", "create", "flags-co", "--name", "by-argument")
    cli.json("keys", "create", "flags-co", "--account", "flags-co", "--name", "by-both")
    cli.json("keys", "create", "--account", "other-co", "--name", "elsewhere")
    names = {"by-flag", "by-argument", "by-both"}
    for form in (["flags-co"], ["--account", "flags-co"], ["flags-co", "--account", "flags-co"]):
        assert {k["name"] for k in cli.json("keys", "list", *form)} == names, form
    assert cli.json("credits", "add", "--account", "flags-co", "2")["balance_usd"] == "3"
    assert cli.json("credits", "add", "flags-co", "2")["balance_usd"] == "5"
    for command in (["usage"], ["audit"], ["users", "list"]):
        assert cli(*command, "--account", "flags-co").returncode == 0, command
    assert {e["target"] for e in cli.json("audit", "--account", "other-co")} >= {"other-co"}

    for args, usage in (
        (["keys", "list", "flags-co", "--account", "other-co"], "bastion keys list"),
        (["credits", "add", "flags-co", "1", "--account", "other-co"], "bastion credits add"),
        (["keys", "create", "flags-co", "--account", "other-co"], "bastion keys create"),
    ):
        refused = cli(*args)
        assert refused.returncode == 2 and refused.stdout == "", args
        assert refused.stderr.startswith(f"usage: {usage} "), refused.stderr
        assert "two accounts given: 'flags-co' and 'other-co'" in refused.stderr
    missing = cli("keys", "create", "--name", "nobody's")
    assert missing.returncode == 2 and missing.stderr.startswith("usage: bastion keys create ")
    assert "required: ACCOUNT (or --account NAME_OR_ID)" in missing.stderr
    assert len(cli.json("keys", "list")) == 4  # nothing refused was written


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["keys", "list", "--nope"], "keys list"),
        (["keys", "create", "acme", "--rmp", "5"], "keys create"),
        (["usage", "--acount", "acme"], "usage"),
        (["credits", "add", "acme", "1", "extra"], "credits add"),
        (["users", "invite", "a@b.example", "--operator", "--nope"], "users invite"),
        (["serve", "--nope"], "serve"),
        (["config", "check", "--nope"], "config check"),
        (["ledger", "check", "--nope"], "ledger check"),
    ],
)
def test_a_wrong_flag_prints_the_usage_of_the_command_it_was_given_to(
    tmp_path: Path, args: list[str], command: str
) -> None:
    done = _cli(tmp_path, sqlite_url(tmp_path))(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"usage: bastion {command} "), done.stderr
    assert f"bastion {command}: error: unrecognized arguments: " in done.stderr
    assert not (tmp_path / "bastion.db").exists()  # refused before anything ran


def test_a_group_without_its_command_prints_its_own_help(tmp_path: Path) -> None:
    done = _cli(tmp_path, sqlite_url(tmp_path))("keys")
    assert done.returncode == 2 and done.stdout.startswith("usage: bastion keys ")
    assert "create" in done.stdout and "revoke" in done.stdout


def _imported(cli: Cli, *args: str) -> set[str]:
    """The modules `bastion ARGS` imported (python -X importtime)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cli.workdir,
        env=cli.env,
    )
    assert done.returncode in (0, 2), done.stderr[-2000:]
    return {
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["keys", "--help"], ["keys", "list", "--help"]])
def test_version_and_help_load_no_heavy_library(sqlite_cli: Cli, args: list[str]) -> None:
    modules = _imported(sqlite_cli, *args)
    assert "bastion.cli" in modules  # the measurement saw the CLI load
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert loaded == [], f"bastion {' '.join(args)} imported {loaded}"


def test_keys_list_on_sqlite_loads_only_what_it_needs(sqlite_cli: Cli) -> None:
    """The database and the settings, but no Redis client (none is configured), web framework, server,
    YAML, migrations or templates."""
    modules = _imported(sqlite_cli, "keys", "list")
    roots = {m.split(".")[0] for m in modules}
    assert {"sqlalchemy", "aiosqlite", "pydantic_settings"} <= roots
    loaded = sorted(
        roots & {"redis", "fastapi", "starlette", "uvicorn", "yaml", "alembic", "jinja2", "httpx"}
    )
    assert loaded == [], f"bastion keys list imported {loaded}"


def test_keys_models_must_be_served_unless_allowed(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.json("accounts", "create", "models-co")
    before = cli.json("keys", "list", "models-co")
    refused = cli("keys", "create", "models-co", "--models", "m-echo,gpt-5")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(
        "bastion: the models file does not serve 'gpt-5' (it serves: m-echo, m-think)"
    )
    assert "--allow-unknown-models" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert cli.json("keys", "list", "models-co") == before

    allowed = cli.json("keys", "create", "models-co", "--models", "gpt-5", "--allow-unknown-models")
    assert allowed["allowed_models"] == ["gpt-5"]
    changed = cli("keys", "update", allowed["id"], "--models", "m-think,gpt-6")
    assert changed.returncode == 2 and "'gpt-6'" in changed.stderr and "'m-think'" not in changed.stderr
    assert cli.json("keys", "update", allowed["id"], "--models", "m-think")["allowed_models"] == ["m-think"]
    cleared = cli.json("keys", "update", allowed["id"], "--models", "none")  # every model: nothing to check
    assert cleared["allowed_models"] is None

    other = cli.workdir / "other.yaml"
    other.write_text(yaml.safe_dump(MODELS_FILE).replace("m-think", "gpt-5"))
    via_flag = cli.json("keys", "create", "models-co", "--models", "gpt-5", "--config", str(other))
    assert via_flag["allowed_models"] == ["gpt-5"]


def test_without_a_models_file_the_cli_says_so(tmp_path: Path) -> None:
    cli = _cli(tmp_path, sqlite_url(tmp_path))
    del cli.env["BASTION_CONFIG"]
    assert cli("migrate").returncode == 0
    cli.json("accounts", "create", "demo")
    missing = cli("keys", "create", "demo", "--models", "gpt-oss-120b")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert "cannot check --models: there is no models file bastion.yaml" in missing.stderr
    assert "--config FILE" in missing.stderr and "--allow-unknown-models" in missing.stderr
    # `bastion serve --demo` ran here (its key file): the demo's models are the ones served.
    (tmp_path / "bastion-demo.key").write_text("qbt_x\n")
    assert cli.json("keys", "create", "demo", "--models", "gpt-oss-120b")["allowed_models"] == [
        "gpt-oss-120b"
    ]
    assert "does not serve 'gpt-5'" in cli("keys", "create", "demo", "--models", "gpt-5").stderr


def test_tables_name_accounts_and_keys_give_seconds_and_explain_estimates(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    account = cli.json("accounts", "create", "tables-co", "--credits", "1")
    key = cli.json("keys", "create", "tables-co", "--name", "reader")
    database = cli.env["BASTION_DATABASE_URL"]
    _write_usage(
        database,
        [
            _record(account["id"], key["id"], 11, 1_000, True),
            _record(account["id"], key["id"], 12, 1_000, False),
        ],
    )

    keys = cli("keys", "list", "tables-co").stdout
    assert f"tables-co ({account['id']})" in keys and "reader" in keys
    usage = cli("usage", "--account", "tables-co").stdout
    lines = usage.splitlines()
    assert f"tables-co ({account['id']})" in lines[1] and f"reader ({key['id']})" in lines[1]
    assert TABLE_TIME.match(lines[1]) and ".123456" not in usage
    assert "$0.000001~" in usage and usage.count("~ estimated") == 1
    assert lines[-1].startswith("~ estimated: the upstream reported no usage")
    accounts = cli("accounts", "list").stdout
    assert TABLE_TIME.search(accounts) and "+00:00" not in accounts
    audit = cli("audit", "--account", "tables-co").stdout
    assert f"tables-co ({account['id']})" in audit and "credits_usd=1" in audit
    ledger = cli("ledger", "check").stdout
    assert f"tables-co ({account['id']})" in ledger
    cli.json("accounts", "create", "quiet-co")
    assert cli("usage", "--account", "quiet-co").stdout == "no usage records\n"
    assert cli("keys", "list", "quiet-co").stdout == "no keys\n"

"""Management commands: migrate, accounts, credits, keys, usage, ledger check.

Each connects to the database named by `BASTION_DATABASE_URL` (and to Redis when `BASTION_REDIS_URL` is
set, so revocations and top-ups reach every running instance at once), runs one operation and prints a
table, or JSON with `--json`. Bad input is one line on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bastion.cli import keys as key_commands
from bastion.cli import users as user_commands
from bastion.cli.inputs import account_arguments, cli_actor, parse_when
from bastion.cli.output import emit_json, labelled, table, when
from bastion.money import format_usd, usd_to_nano

if TYPE_CHECKING:
    from bastion.management import Management

ESTIMATED = "~ estimated: the upstream reported no usage, so the tokens (and the cost) were estimated"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_: str,
        run: Callable[..., Any],
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help_, description=help_[:1].upper() + help_[1:] + ".")
        parser.add_argument(
            "--json", action="store_true", help="machine-readable output (USD amounts as decimal strings)"
        )
        parser.set_defaults(run=lambda args: _run(run, args))
        return parser

    migrate_cmd = command(commands, "migrate", "apply database migrations", _migrate)
    migrate_cmd.add_argument("--revision", default="head", help="target revision (default head)")
    migrate_cmd.add_argument("--down", action="store_true", help="downgrade to --revision (e.g. base)")

    accounts = commands.add_parser("accounts", help="accounts").add_subparsers(title="accounts commands")
    create = command(accounts, "create", "create an account", _accounts_create)
    create.add_argument("name")
    create.add_argument("--credits", default="0", help="initial credit in USD (e.g. 25.00)")
    command(accounts, "list", "list accounts and balances", _accounts_list)

    credits = commands.add_parser("credits", help="credits").add_subparsers(title="credits commands")
    add = command(credits, "add", "add credit to an account", _credits_add)
    account_arguments(add, positional=True, required=True)
    add.add_argument("usd", metavar="USD", help="amount in USD (e.g. 10 or 0.50)")
    add.add_argument("--note", help="why (kept with the transaction)")

    adjust = command(
        credits, "adjust", "correct a balance up or down (a signed amount, with a reason)", _credits_adjust
    )
    account_arguments(adjust, positional=True, required=True)
    adjust.add_argument("usd", metavar="USD", help="signed amount in USD (e.g. -2.50)")
    adjust.add_argument("--note", required=True, help="why (required for adjustments)")

    keys = commands.add_parser("keys", help="API keys").add_subparsers(title="keys commands")
    key_commands.add_commands(keys, command)
    usage = command(commands, "usage", "usage records, newest first", _usage)
    account_arguments(usage, help_="only this account's records (id or name)")
    usage.add_argument("--key", help="only this key's records (key id)")
    usage.add_argument("--since", help="ISO date/time (UTC) or a duration ago: 1h, 7d")
    usage.add_argument("--limit", type=int, default=100)

    user_commands.add_commands(commands, command)

    ledger = commands.add_parser("ledger", help="ledger").add_subparsers(title="ledger commands")
    command(
        ledger,
        "check",
        "verify balance = credits - usage, and the daily rollups = usage, for every account",
        _ledger_check,
    )


def _run(
    operation: Callable[[Management, argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    from bastion.cli import running  # the database, Redis and Management: only once a command runs

    return running.run(operation, args)


async def _migrate(management: Management, args: argparse.Namespace) -> int:
    from bastion.db import migrate

    engine = management.store.engine
    if args.down:
        await migrate.downgrade(engine, args.revision if args.revision != "head" else "base")
    else:
        await migrate.upgrade(engine, args.revision)
    revision = await migrate.current_revision(engine)
    emit_json({"revision": revision}) if args.json else print(f"database at revision {revision or 'base'}")
    return 0


async def _accounts_create(management: Management, args: argparse.Namespace) -> int:
    credits = usd_to_nano(args.credits)
    account = await management.create_account(args.name, credits, cli_actor())
    if args.json:
        emit_json(account.as_json())
    else:
        print(f"account {account.id} '{account.name}' created with {format_usd(account.balance_nano)}")
    return 0


async def _accounts_list(management: Management, args: argparse.Namespace) -> int:
    accounts = await management.list_accounts()
    if args.json:
        emit_json([a.as_json() for a in accounts])
    else:
        table(
            [(a.id, a.name, format_usd(a.balance_nano), when(a.created_at)) for a in accounts],
            ["ID", "NAME", "BALANCE", "CREATED"],
            empty="no accounts",
        )
    return 0


async def _credits_add(management: Management, args: argparse.Namespace) -> int:
    credit = await management.add_credits(args.account, usd_to_nano(args.usd), args.note, cli_actor())
    if args.json:
        emit_json(credit.as_json())
    else:
        print(
            f"added {format_usd(credit.amount_nano)} to {labelled(args.account, credit.account_id)};"
            f" balance {format_usd(credit.balance_nano)}"
        )
    return 0


async def _credits_adjust(management: Management, args: argparse.Namespace) -> int:
    credit = await management.add_credits(
        args.account, usd_to_nano(args.usd), args.note, cli_actor(), "adjustment"
    )
    if args.json:
        emit_json(credit.as_json())
    else:
        balance = format_usd(credit.balance_nano)
        account = labelled(args.account, credit.account_id)
        print(f"adjusted {account} by {format_usd(credit.amount_nano)}; balance {balance}")
    return 0


async def _usage(management: Management, args: argparse.Namespace) -> int:
    since = parse_when(args.since, future=False)
    rows = await management.usage(args.account, args.key, since, args.limit)
    if args.json:
        emit_json([r.as_json() for r in rows])
        return 0
    accounts = {account.id: account.name for account in await management.list_accounts()}
    keys = await management.key_names({r.key_id for r in rows})
    table(
        [
            (
                when(r.created_at),
                r.request_id,
                labelled(accounts.get(r.account_id), r.account_id),
                labelled(keys.get(r.key_id), r.key_id),
                r.model,
                r.endpoint,
                r.prompt_tokens,
                r.completion_tokens,
                f"{r.quantity} {r.unit}" if r.unit else "",
                format_usd(r.cost_nano) + ("~" if r.estimated else ""),
                r.status,
            )
            for r in rows
        ],
        ["TIME", "REQUEST", "ACCOUNT", "KEY", "MODEL", "ENDPOINT", "IN", "OUT", "QUANTITY", "COST", "STATUS"],
        empty="no usage records",
    )
    if any(r.estimated for r in rows):
        print(f"\n{ESTIMATED}")
    return 0


async def _ledger_check(management: Management, args: argparse.Namespace) -> int:
    lines = await management.ledger()
    bad = [line for line in lines if not line.ok]
    if args.json:
        emit_json({"ok": not bad, "accounts": [line.as_json() for line in lines]})
    else:
        table(
            [
                (
                    labelled(line.name, line.account_id),
                    format_usd(line.balance_nano),
                    format_usd(line.credits_nano),
                    format_usd(line.usage_nano),
                    format_usd(line.rolled_up_nano),
                    "ok" if line.ok else "MISMATCH",
                )
                for line in lines
            ],
            ["ACCOUNT", "BALANCE", "CREDITS", "USAGE", "DAILY ROLLUPS", "CHECK"],
        )
        print(f"{len(lines) - len(bad)} of {len(lines)} accounts balance" if lines else "no accounts")
    return 1 if bad else 0

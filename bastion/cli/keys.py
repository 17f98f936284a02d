"""`bastion keys create / update / list / revoke`: API keys and their limits."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bastion.cli.inputs import CLEAR, InputError, cli_actor, parse_when
from bastion.cli.output import emit_json, table
from bastion.config import Settings
from bastion.db.store import KeyView
from bastion.management import Management
from bastion.money import format_usd, usd_to_nano
from bastion.periods import PERIODS, Periods

Command = Callable[..., argparse.ArgumentParser]


def add_commands(keys: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    create = command(keys, "create", "create a qbt_ key (shown once)", _create)
    create.add_argument("account", help="account id or name")
    create.add_argument("--name")
    _limit_arguments(create, clearable=False)

    update = command(keys, "update", "change a key's name or limits (every instance, next request)", _update)
    update.add_argument("key_id")
    update.add_argument("--name")
    _limit_arguments(update, clearable=True)

    listing = command(keys, "list", "list keys, with their spend in the current budget period", _list)
    listing.add_argument("account", nargs="?", help="account id or name")
    revoke = command(keys, "revoke", "revoke a key (takes effect on every instance)", _revoke)
    revoke.add_argument("key_id")


def _limit_arguments(parser: argparse.ArgumentParser, clearable: bool) -> None:
    clear = f" ('{CLEAR}' removes it)" if clearable else ""
    parser.add_argument("--rpm", help=f"requests per minute (default BASTION_DEFAULT_RPM){clear}")
    parser.add_argument("--tpm", help=f"tokens per minute (default BASTION_DEFAULT_TPM){clear}")
    parser.add_argument("--models", help=f"comma-separated model ids this key may use (default: all){clear}")
    parser.add_argument("--expires", help=f"ISO date/time (UTC) or a duration from now: 30d, 12h, 2w{clear}")
    parser.add_argument("--budget", help=f"spend limit in USD per budget period (e.g. 5.00){clear}")
    parser.add_argument("--budget-period", choices=PERIODS, help="total (default), daily, weekly, monthly")
    parser.add_argument("--max-parallel", help=f"requests in flight at most{clear}")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The limits given on the command line, parsed; `none` clears one."""
    parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
        "rpm": ("rpm", _integer),
        "tpm": ("tpm", _integer),
        "models": ("models", lambda text: text.split(",")),
        "expires": ("expires_at", lambda text: parse_when(text, future=True)),
        "budget": ("budget_nano", usd_to_nano),
        "max_parallel": ("max_parallel", _integer),
    }
    changes: dict[str, Any] = {}
    for flag, (field, parse) in parsers.items():
        text = getattr(args, flag)
        if text is not None:
            changes[field] = None if text.strip().lower() == CLEAR else parse(text)
    if args.budget_period is not None:
        changes["budget_period"] = args.budget_period
    return changes


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"'{text}' is not a whole number") from None


async def _create(management: Management, args: argparse.Namespace) -> int:
    limits = _changes(args)
    key, plaintext = await management.create_key(
        args.account,
        args.name,
        limits.get("rpm"),
        limits.get("tpm"),
        limits.get("models"),
        limits.get("expires_at"),
        limits.get("budget_nano"),
        limits.get("budget_period"),
        limits.get("max_parallel"),
        cli_actor(),
    )
    if args.json:
        emit_json({**key.as_json(), "key": plaintext})
    else:
        print(f"key {key.id} '{key.name}' for {key.account_id}.")
        print(f"The key is shown this once:\n\n    {plaintext}\n")
    return 0


async def _update(management: Management, args: argparse.Namespace) -> int:
    changes = _changes(args)
    if not changes and args.name is None:
        raise InputError("nothing to change: give --name or a limit")
    key = await management.update_key(args.key_id, args.name, changes, cli_actor())
    emit_json(key.as_json()) if args.json else print(f"key {key.id} '{key.name}' updated: {_limits(key)}")
    return 0


async def _list(management: Management, args: argparse.Namespace) -> int:
    settings = Settings()
    periods = Periods(settings.budget_timezone, settings.clock_offset_seconds)
    keys = await management.list_keys(args.account)
    spends = [await management.key_spend(key, periods) for key in keys]
    if args.json:
        emit_json(
            [
                {
                    **key.as_json(),
                    "period": window.id,
                    "period_resets_at": window.resets.isoformat() if window.resets else None,
                    "spend_nano": spent,
                }
                for key, (window, spent) in zip(keys, spends, strict=True)
            ]
        )
        return 0
    rows = [
        (
            k.id,
            k.account_id,
            k.name,
            k.prefix + "...",
            "revoked" if k.revoked_at else "active",
            k.rpm or "-",
            k.tpm or "-",
            ",".join(k.allowed_models) if k.allowed_models else "all",
            k.expires_at or "-",
            f"{format_usd(k.budget_nano)} {k.budget_period}" if k.budget_nano is not None else "-",
            f"{format_usd(spent)} ({window.id})",
            k.max_parallel or "-",
        )
        for k, (window, spent) in zip(keys, spends, strict=True)
    ]
    headers = ["ID", "ACCOUNT", "NAME", "PREFIX", "STATE", "RPM", "TPM", "MODELS", "EXPIRES", "BUDGET"]
    table(rows, [*headers, "SPEND", "PARALLEL"])
    return 0


async def _revoke(management: Management, args: argparse.Namespace) -> int:
    key = await management.revoke_key(args.key_id, cli_actor())
    emit_json(key.as_json()) if args.json else print(f"key {key.id} revoked at {key.revoked_at}")
    return 0


def _limits(key: KeyView) -> str:
    budget = f"{format_usd(key.budget_nano)} {key.budget_period}" if key.budget_nano is not None else "none"
    return (
        f"rpm {key.rpm or 'default'}, tpm {key.tpm or 'default'}, budget {budget},"
        f" max parallel {key.max_parallel or 'none'}, version {key.version}"
    )

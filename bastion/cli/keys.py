"""`bastion keys create / update / list / revoke`: API keys and their limits."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.cli.inputs import CLEAR, InputError, account_arguments, cli_actor, parse_when
from bastion.cli.output import emit_json, labelled, table, when
from bastion.money import format_usd, usd_to_nano
from bastion.periods import PERIODS

if TYPE_CHECKING:
    from bastion.db.views import KeyView
    from bastion.management import Management

Command = Callable[..., argparse.ArgumentParser]


def add_commands(keys: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    create = command(keys, "create", "create a qbt_ key (shown once)", _create)
    account_arguments(create, positional=True, required=True)
    create.add_argument("--name", help="a name for the key, unique in its account (default: its prefix)")
    _limit_arguments(create, clearable=False)

    update = command(keys, "update", "change a key's name or limits (every instance, next request)", _update)
    update.add_argument("key_id")
    update.add_argument("--name", help="a new name, unique in the key's account")
    _limit_arguments(update, clearable=True)

    listing = command(keys, "list", "list keys, with their spend in the current budget period", _list)
    account_arguments(listing, positional=True, help_="only this account's keys (id or name)")
    revoke = command(keys, "revoke", "revoke a key (takes effect on every instance)", _revoke)
    revoke.add_argument("key_id")


def _limit_arguments(parser: argparse.ArgumentParser, clearable: bool) -> None:
    clear = f" ('{CLEAR}' removes it)" if clearable else ""
    parser.add_argument("--rpm", help=f"requests per minute (default BASTION_DEFAULT_RPM){clear}")
    parser.add_argument("--tpm", help=f"tokens per minute (default BASTION_DEFAULT_TPM){clear}")
    parser.add_argument(
        "--models", metavar="IDS", help=f"comma-separated model ids this key may use (default: all){clear}"
    )
    parser.add_argument(
        "--allow-unknown-models",
        action="store_true",
        help="allow --models the models file does not serve (else refused)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the models file --models is checked against (default: what `bastion serve` would serve:"
        " BASTION_CONFIG, ./bastion.yaml, or the demo's)",
    )
    parser.add_argument(
        "--expires", metavar="WHEN", help=f"ISO date/time (UTC) or a duration from now: 30d, 12h, 2w{clear}"
    )
    parser.add_argument(
        "--budget", metavar="USD", help=f"spend limit in USD per budget period (e.g. 5.00){clear}"
    )
    parser.add_argument("--budget-period", choices=PERIODS, help="total (default), daily, weekly, monthly")
    parser.add_argument("--max-parallel", metavar="N", help=f"requests in flight at most{clear}")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The limits given on the command line, parsed; `none` clears one."""
    parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
        "rpm": ("rpm", _integer),
        "tpm": ("tpm", _integer),
        "models": ("models", _models),
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


def _models(text: str) -> list[str]:
    models = [model.strip() for model in text.split(",") if model.strip()]
    if not models:
        raise InputError(f"--models '{text}' names no model (give model ids, or '{CLEAR}' for every model)")
    return models


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
        args.allow_unknown_models,
    )
    if args.json:
        emit_json({**key.as_json(), "key": plaintext})
    else:
        print(f"key {key.id} '{key.name}' for {labelled(args.account, key.account_id)}.")
        print(f"The key is shown this once:\n\n    {plaintext}\n")
    return 0


async def _update(management: Management, args: argparse.Namespace) -> int:
    changes = _changes(args)
    if not changes and args.name is None:
        raise InputError("nothing to change: give --name or a limit")
    key = await management.update_key(args.key_id, args.name, changes, cli_actor(), args.allow_unknown_models)
    emit_json(key.as_json()) if args.json else print(f"key {key.id} '{key.name}' updated: {_limits(key)}")
    return 0


async def _list(management: Management, args: argparse.Namespace) -> int:
    from bastion.config import Settings
    from bastion.db.views import rfc3339
    from bastion.money import decimal_usd
    from bastion.periods import Periods

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
                    "period_resets_at": rfc3339(window.resets),
                    "spend_usd": decimal_usd(spent),
                }
                for key, (window, spent) in zip(keys, spends, strict=True)
            ]
        )
        return 0
    accounts = {account.id: account.name for account in await management.list_accounts()}
    rows = [
        (
            k.id,
            k.name,
            labelled(accounts.get(k.account_id), k.account_id),
            k.prefix + "...",
            "revoked" if k.revoked_at else "active",
            k.rpm or "-",
            k.tpm or "-",
            ",".join(k.allowed_models) if k.allowed_models else "all",
            when(k.expires_at),
            f"{format_usd(k.budget_nano)} {k.budget_period}" if k.budget_nano is not None else "-",
            f"{format_usd(spent)} ({window.id})",
            k.max_parallel or "-",
        )
        for k, (window, spent) in zip(keys, spends, strict=True)
    ]
    headers = ["ID", "NAME", "ACCOUNT", "PREFIX", "STATE", "RPM", "TPM", "MODELS", "EXPIRES", "BUDGET"]
    table(rows, [*headers, "SPEND", "PARALLEL"], empty="no keys")
    return 0


async def _revoke(management: Management, args: argparse.Namespace) -> int:
    key = await management.revoke_key(args.key_id, cli_actor())
    emit_json(key.as_json()) if args.json else print(f"key {key.id} revoked at {when(key.revoked_at)}")
    return 0


def _limits(key: KeyView) -> str:
    budget = f"{format_usd(key.budget_nano)} {key.budget_period}" if key.budget_nano is not None else "none"
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "all"
    return (
        f"rpm {key.rpm or 'default'}, tpm {key.tpm or 'default'}, models {models}, budget {budget},"
        f" max parallel {key.max_parallel or 'none'}, expires {when(key.expires_at, 'never')},"
        f" version {key.version}"
    )

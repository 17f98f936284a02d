"""What the management commands read from their arguments: the account, times, amounts, "none"."""

from __future__ import annotations

import argparse
import getpass
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.money import usd_to_nano

_RELATIVE = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CLEAR = "none"  # `keys update --budget none`: the setting is removed


class InputError(ValueError):
    pass


class _Account(argparse.Action):
    """The account, as ACCOUNT or as --account ACCOUNT; both are allowed when they name the same one."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if values is None:  # the positional form, left out
            return
        given = getattr(namespace, self.dest, None)
        if given is not None and given != values:
            parser.error(f"two accounts given: '{given}' and '{values}'")
        setattr(namespace, self.dest, values)


def account_arguments(
    parser: argparse.ArgumentParser, positional: bool = False, required: bool = False, help_: str = ""
) -> None:
    """`--account NAME_OR_ID` on every command that takes an account; `positional`: `ACCOUNT` too (the
    form `keys list acme` and `credits add acme 10` have always had). `required` is checked by
    `bastion.cli.main`, once parsing is done."""
    what = help_ or "account id or name"
    if positional:
        parser.add_argument("account", nargs="?", action=_Account, metavar="ACCOUNT", help=what)
    parser.add_argument(
        "--account",
        action=_Account,
        metavar="NAME_OR_ID",
        help=what + (" (or ACCOUNT)" if positional else ""),
    )
    if required:
        parser.set_defaults(account_required=True)


def parse_when(text: str | None, future: bool) -> datetime | None:
    """ISO date/time (naive means UTC), or a duration from now (future) or ago (past): 30m, 12h, 7d, 2w."""
    if text is None:
        return None
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return datetime.now(UTC) + (delta if future else -delta)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"'{text}' is neither an ISO date/time nor a duration like 30d") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def optional_usd(text: str | None) -> int | None:
    return None if text is None else usd_to_nano(text)


def cli_actor() -> str:
    """Who runs the command, as the audit log and credit transactions name them."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"

"""What the management commands read from their arguments: times, amounts, "none"."""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta

from bastion.money import usd_to_nano

_RELATIVE = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CLEAR = "none"  # `keys update --budget none`: the setting is removed


class InputError(ValueError):
    pass


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

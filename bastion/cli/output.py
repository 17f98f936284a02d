"""How the CLI answers: a table for people, `--json` for scripts, one line on stderr for errors.

JSON is what the HTTP API answers (the views' `as_json`): money as decimal strings of USD under `*_usd`
names, times in RFC 3339, UTC. Tables are for reading: names beside ids, times to the second.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def fail(message: str) -> int:
    print(f"bastion: {message}", file=sys.stderr)
    return 2


def emit_json(data: Any) -> None:
    import orjson  # here: `bastion --help` imports nothing it does not need

    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str], empty: str | None = None) -> None:
    """Columns padded to their widest cell; `empty` is printed instead when there is no row."""
    if not rows and empty is not None:
        print(empty)
        return
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def when(value: datetime | None, missing: str = "-") -> str:
    """A time for people: UTC, to the second (`2026-12-06 22:30:00Z`)."""
    if value is None:
        return missing
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def labelled(name: str | None, id_: str | None) -> str:
    """A row's name beside its id (`acme (acct_9f2...)`), so a table is read by name and copied by id."""
    if id_ is None:
        return "-"
    return f"{name} ({id_})" if name and name != id_ else id_

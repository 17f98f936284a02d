"""How the CLI answers: a table for people, `--json` for scripts, one line on stderr for errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson


def fail(message: str) -> int:
    print(f"bastion: {message}", file=sys.stderr)
    return 2


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

"""The `bastion` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import ValidationError

from bastion import __version__
from bastion.cli import manage, serve
from bastion.cli.output import fail


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bastion", description="OpenAI-compatible LLM API gateway.")
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(title="commands")
    serve.add_commands(commands)
    manage.add_commands(commands)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ValidationError as exc:  # a BASTION_* setting that is not a valid value: one line, no traceback
        first = exc.errors()[0]
        name = "BASTION_" + str(first["loc"][0]).upper() if first.get("loc") else "a setting"
        return fail(f"{name}: {first['msg']} (got {first.get('input')!r})")

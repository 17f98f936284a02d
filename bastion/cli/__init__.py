"""The `bastion` command line.

Building the parser imports only light modules: `bastion --version` and `bastion --help` load no
database, Redis, web or settings library; each command imports what it needs when it runs
(tests/test_cli_json.py checks it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bastion import __version__
from bastion.cli import manage, serve
from bastion.cli.output import fail


class CommandParser(argparse.ArgumentParser):
    """Every parser of the tree (subcommands' too: argparse makes them of their parent's class) names
    itself in the parsed arguments, so an error is reported with the usage of the command it was
    given to (`bastion keys list --nope` shows `usage: bastion keys list ...`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(command_parser=self)


def parser() -> CommandParser:
    top = CommandParser(prog="bastion", description="OpenAI-compatible LLM API gateway.")
    top.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = top.add_subparsers(title="commands")
    serve.add_commands(commands)
    manage.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args, unknown = top.parse_known_args(argv)
    command: argparse.ArgumentParser = args.command_parser
    if unknown:  # argparse would blame the top-level command: name the one they were given to
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "account_required", False) and args.account is None:
        command.error("the following arguments are required: ACCOUNT (or --account NAME_OR_ID)")
    if not hasattr(args, "run"):
        command.print_help()
        return 2
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `bastion usage | head`: the reader is gone, which is not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        from pydantic import ValidationError  # loaded already if a setting was read

        if not isinstance(exc, ValidationError):
            raise
        # A BASTION_* setting that is not a valid value: one line, no traceback.
        first = exc.errors()[0]
        name = "BASTION_" + str(first["loc"][0]).upper() if first.get("loc") else "a setting"
        return fail(f"{name}: {first['msg']} (got {first.get('input')!r})")

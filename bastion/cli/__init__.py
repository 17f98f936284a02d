"""The `bastion` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bastion import __version__
from bastion.cli import manage, serve


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
    return int(args.run(args))

"""`bastion` command line: serve the gateway, check a models file."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bastion import __version__
from bastion.config import Catalog, ConfigError, Settings, load_catalog


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="OpenAI-compatible LLM API gateway.")
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", help="interface to bind (BASTION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (BASTION_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (BASTION_WORKERS, default 1)")
    serve.add_argument("--config", help="models file (BASTION_CONFIG, default ./bastion.yaml)")
    serve.add_argument("--demo", action="store_true", help="serve the built-in demo models (mock provider)")
    serve.add_argument("--log-level", help="debug, info, warning, error (BASTION_LOG_LEVEL)")
    serve.set_defaults(run=_serve)

    config = commands.add_parser("config", help="models-file tools")
    config_commands = config.add_subparsers(title="config commands")
    check = config_commands.add_parser("check", help="validate a models file and print what it declares")
    check.add_argument("path", nargs="?", help="models file (default: BASTION_CONFIG or ./bastion.yaml)")
    check.set_defaults(run=_config_check)
    return parser


def _serve(args: argparse.Namespace) -> int:
    # Worker processes read their settings from the environment: put the flags there.
    for flag, env in (
        ("host", "HOST"),
        ("port", "PORT"),
        ("workers", "WORKERS"),
        ("config", "CONFIG"),
        ("log_level", "LOG_LEVEL"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"BASTION_{env}"] = str(value)
    if args.demo:
        os.environ["BASTION_DEMO"] = "1"
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    from bastion.api.app import BastionApp, catalog_for

    try:
        catalog = catalog_for(settings)
    except ConfigError as exc:
        hint = ""
        if not settings.demo and not Path(settings.config).exists():
            hint = " (copy bastion.example.yaml to bastion.yaml, or run `bastion serve --demo`)"
        print(f"bastion: config error: {exc}{hint}", file=sys.stderr)
        return 2

    import uvicorn

    app: object = "bastion.api.app:create_app" if settings.workers > 1 else BastionApp(settings, catalog)
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        server_header=False,
    )
    return 0


def _config_check(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else Settings().config
    try:
        catalog = load_catalog(path)
    except ConfigError as exc:
        print(f"bastion: config error: {exc}", file=sys.stderr)
        return 2
    print(describe(catalog))
    return 0


def describe(catalog: Catalog) -> str:
    lines = [
        f"{catalog.source}: {len(catalog.providers)} providers, {len(catalog.models)} models",
        "providers:",
    ]
    for provider in catalog.providers.values():
        where = provider.base_url or "(built in)"
        key = "key from environment" if provider.api_key is not None else "no key"
        lines.append(f"  {provider.name:<16} {provider.type:<7} {where}  [{key}]")
    lines.append("models:")
    for model in catalog.models.values():
        deployments = ", ".join(f"{d.provider}:{d.model}(w{d.weight})" for d in model.deployments)
        price = f"${model.price.input}/${model.price.output} per 1M in/out"
        lines.append(f"  {model.id:<36} {model.category:<13} {','.join(model.endpoints):<18} {price}")
        lines.append(f"  {'':<36} -> {deployments}")
    return "\n".join(lines)

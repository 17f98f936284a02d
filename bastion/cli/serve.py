"""`bastion serve` and `bastion config check`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli.output import fail
from bastion.logs import configure as configure_logs

if TYPE_CHECKING:  # imported where used: `bastion --help` builds this module's parsers, nothing more
    from bastion.config import Catalog, Settings

DEMO_ACCOUNT = "demo"
DEMO_CREDIT_NANO = 10 * 10**9
DEMO_KEY_FILE = Path("bastion-demo.key")
DEMO_OWNER = "owner@demo.example"
DEMO_PASSWORD_FILE = Path("bastion-demo.password")
log = logging.getLogger("bastion")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", help="interface to bind (BASTION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (BASTION_PORT, default 8000)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (BASTION_WORKERS, default 1; >1 needs Redis)"
    )
    serve.add_argument("--config", help="models file (BASTION_CONFIG, default ./bastion.yaml)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="built-in demo: mock models, a demo account and key (embedded database)",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error (BASTION_LOG_LEVEL)")
    serve.add_argument(
        "--log-format",
        choices=["auto", "text", "json"],
        help="text: readable lines; json: JSON lines; auto: text on a terminal (BASTION_LOG_FORMAT)",
    )
    serve.add_argument("--ssl-keyfile", help="serve HTTPS with this key (BASTION_SSL_KEYFILE)")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (BASTION_SSL_CERTFILE)")
    serve.set_defaults(run=serve_command)

    config = commands.add_parser("config", help="models-file tools")
    config_commands = config.add_subparsers(title="config commands")
    check = config_commands.add_parser("check", help="validate a models file and print what it declares")
    check.add_argument("path", nargs="?", help="models file (default: BASTION_CONFIG or ./bastion.yaml)")
    check.set_defaults(run=config_check)
    reload = config_commands.add_parser(
        "reload",
        help="check a models file, then make the running `bastion serve` reload its models file (SIGHUP)",
    )
    reload.add_argument("path", nargs="?", help="models file (default: BASTION_CONFIG or ./bastion.yaml)")
    which = reload.add_mutually_exclusive_group()
    which.add_argument(
        "--port", type=int, help="signal the server on this port (its pid file, ./bastion-PORT.pid)"
    )
    which.add_argument(
        "--pid",
        help="pid file of the running server (BASTION_PID_FILE, default ./bastion-{port}.pid: the one"
        " server running here)",
    )
    reload.set_defaults(run=config_reload)


def serve_command(args: argparse.Namespace) -> int:
    import asyncio

    from bastion.config import ConfigError, Settings
    from bastion.db.engine import is_sqlite

    # Worker processes read their settings from the environment: put the flags there.
    for flag in (
        "host",
        "port",
        "workers",
        "config",
        "log_level",
        "log_format",
        "ssl_keyfile",
        "ssl_certfile",
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"BASTION_{flag.upper()}"] = str(value)
    if args.demo:
        os.environ["BASTION_DEMO"] = "1"
    settings = Settings()
    log_config = configure_logs(settings.log_level, settings.log_format)
    if (settings.ssl_keyfile is None) != (settings.ssl_certfile is None):
        return fail("HTTPS needs both --ssl-keyfile and --ssl-certfile")
    if settings.workers > 1 and not settings.redis_url:
        return fail(
            f"--workers {settings.workers} needs BASTION_REDIS_URL: rate limits and credit reservations"
            " must be shared by every worker, and without Redis each worker would keep its own"
        )
    if settings.heartbeat_window_seconds < 3 * settings.checkpoint_seconds:
        return fail(
            f"BASTION_HEARTBEAT_WINDOW_SECONDS ({settings.heartbeat_window_seconds:g}) must be at least 3"
            f" checkpoint intervals (BASTION_CHECKPOINT_SECONDS={settings.checkpoint_seconds:g}): a live"
            " instance beats once per interval, and a window of fewer would take a busy one for dead"
        )

    from bastion.api.app import catalog_for

    try:
        catalog = catalog_for(settings)
    except ConfigError as exc:
        hint = ""
        if not settings.demo and not Path(settings.config).exists():
            hint = " (copy bastion.example.yaml to bastion.yaml, or run `bastion serve --demo`)"
        return fail(f"config error: {exc}{hint}")
    # The port before anything that writes or prints: a taken one leaves the directory as it was.
    sockets = _listen(settings)
    if not isinstance(sockets, list):
        return sockets
    if settings.port == 0:  # the one the system chose, for the demo's address and the workers' links
        os.environ["BASTION_PORT"] = str(sockets[0].getsockname()[1])
        settings = Settings()
    problem = asyncio.run(_redis_problem(settings)) or asyncio.run(_schema_problem(settings))
    if problem:
        return fail(problem)
    if settings.demo:
        if not is_sqlite(settings.database_url):
            return fail("--demo runs on the embedded SQLite database; unset BASTION_DATABASE_URL")
        _announce_demo(settings)
    return _serve(settings, catalog, sockets, log_config)


def _serve(
    settings: Settings, catalog: Catalog, sockets: list[socket.socket], log_config: dict[str, Any]
) -> int:
    """uvicorn on the bound sockets: one process, or a supervisor and its workers; the pid file meanwhile."""
    import uvicorn

    from bastion.api.app import BastionApp
    from bastion.cli.listen import where
    from bastion.cli.process import pid_file, pid_path, run_workers

    port = sockets[0].getsockname()[1]
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics here; /metrics, answered by any of them, adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bastion-metrics-")
    scheme = "https" if settings.ssl_keyfile else "http"
    log.info("listening on %s://%s (CTRL+C to stop)", scheme, where(settings.host, port))
    options = _uvicorn_options(settings, log_config)
    pid = pid_path(settings.pid_file, port) if settings.pid_file else None
    if settings.workers > 1:
        # Each worker builds its app from the environment; SIGHUP to the supervisor reloads them all.
        config = uvicorn.Config("bastion.api.app:create_app", factory=True, **options)
        run_workers(config, sockets, pid)
        return 0
    app = BastionApp(settings, catalog, own_process=True)  # from here, SIGHUP reloads the models file
    server = uvicorn.Server(uvicorn.Config(app, **options))
    with pid_file(pid), contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    return 0 if server.started else 3  # uvicorn's status for a failed startup


def _listen(settings: Settings) -> list[socket.socket] | int:
    """The bound sockets, or the exit status after one line saying why the address cannot be had."""
    from bastion.cli.listen import ListenError, listen
    from bastion.cli.process import PORT_FIELD, live_pid, pid_path

    try:
        return listen(settings.host, settings.port)
    except ListenError as exc:
        if not exc.in_use:
            fail(str(exc))
            return 2
        per_port = PORT_FIELD in settings.pid_file  # (a fixed pid file may name a server on another port)
        pid = live_pid(pid_path(settings.pid_file, settings.port)) if per_port else None
        who = f"another Bastion? pid {pid}" if pid else "not by a Bastion started here"
        fail(f"{exc} ({who}); pass --port")
        return 2


def _announce_demo(settings: Settings) -> None:
    """The demo account, key and dashboard owner (made or kept), printed for the person who started it."""
    import asyncio

    saved = DEMO_KEY_FILE.read_text().strip() if DEMO_KEY_FILE.exists() else None
    key = asyncio.run(demo_key(settings, saved))
    _keep(DEMO_KEY_FILE, key, saved)
    print(f"Demo account '{DEMO_ACCOUNT}' is ready. Its API key (also in ./{DEMO_KEY_FILE}):\n\n    {key}\n")
    if settings.dashboard:
        from bastion.dashboard.links import dashboard_url

        saved = DEMO_PASSWORD_FILE.read_text().strip() if DEMO_PASSWORD_FILE.exists() else None
        password = asyncio.run(demo_owner(settings, saved))
        _keep(DEMO_PASSWORD_FILE, password, saved)
        print(
            f"Dashboard: {dashboard_url(settings)}\n  sign in as {DEMO_OWNER} (owner of '{DEMO_ACCOUNT}')"
            f" with the password (also in ./{DEMO_PASSWORD_FILE}):\n\n    {password}\n"
        )


def _uvicorn_options(settings: Settings, log_config: dict[str, Any]) -> dict[str, Any]:
    from bastion.api.http_protocol import BoundedHttpToolsProtocol

    return dict(
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,  # uvicorn's httptools protocol, its request heads bounded
        lifespan="on",
        access_log=False,  # Bastion writes its own, one line per request
        log_level=settings.log_level.lower(),
        log_config=log_config,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        timeout_keep_alive=settings.keepalive_seconds,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        server_header=False,
        # Nothing reads the client's address (the access line names the key, not the peer): uvicorn's
        # X-Forwarded-For middleware would only copy every request's headers into a dict.
        proxy_headers=False,
    )


async def _schema_problem(settings: Settings) -> str | None:
    """None if the database is ready (the embedded one migrates itself), else what the operator must do."""
    from bastion.db.store import Store
    from bastion.services import SchemaError, ensure_schema

    try:
        store = Store.from_settings(settings)
    except ValueError as exc:
        return f"BASTION_DATABASE_URL: {exc}"
    try:
        await ensure_schema(store, settings.database_url)
    except SchemaError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot reach the database: {exc}"
    finally:
        await store.close()
    return None


async def _redis_problem(settings: Settings) -> str | None:
    """None if BASTION_REDIS_URL (when set) leads to a Redis Bastion can use, else what is wrong."""
    if not settings.redis_url:
        return None
    from bastion.billing.live import RedisLive
    from bastion.billing.redis_target import RedisSetupError

    try:
        live = await RedisLive.connect(settings.redis_url, settings.redis_prefix)
    except RedisSetupError as exc:
        return str(exc)
    await live.close()
    return None


async def demo_key(settings: Settings, saved: str | None) -> str:
    """The demo account (with credit) and a key for it: the saved one while it is valid, else a new one."""
    from bastion.auth.keys import hash_key
    from bastion.db.store import Store, StoreError
    from bastion.services import ensure_schema

    store = Store.from_url(settings.database_url)
    try:
        await ensure_schema(store, settings.database_url)
        try:
            await store.account(DEMO_ACCOUNT)
        except StoreError:
            await store.create_account(DEMO_ACCOUNT, DEMO_CREDIT_NANO, actor="demo")
        if saved:
            view = await store.find_key(hash_key(saved))
            if view is not None and view.revoked_at is None:
                return saved
        _, key = await store.create_key(DEMO_ACCOUNT, name=f"demo-{os.urandom(3).hex()}")
        return key
    finally:
        await store.close()


def _keep(path: Path, secret: str, saved: str | None) -> None:
    if secret != saved:
        path.write_text(secret + "\n")
        path.chmod(0o600)


async def demo_owner(settings: Settings, saved: str | None) -> str:
    """The demo account's owner in the dashboard: the saved password while it still signs in, else a
    new one (set through the same one-time link an invite or a reset gives)."""
    import secrets

    from bastion.auth.passwords import hash_password, verify_password
    from bastion.db.audit import Actor
    from bastion.db.store import Store, StoreError

    store = Store.from_settings(settings)
    people, demo = store.people, Actor("demo")
    try:
        found = await people.credentials(DEMO_OWNER)
        if found is not None and saved and await verify_password(found[1], saved):
            return saved
        try:
            _, token = await people.reset(DEMO_OWNER, demo)
        except StoreError:
            _, token = await people.invite(DEMO_OWNER, False, DEMO_ACCOUNT, "owner", demo)
        password = secrets.token_urlsafe(12)
        await people.set_password(token, await hash_password(password), None)
        return password
    finally:
        await store.close()


def config_check(args: argparse.Namespace) -> int:
    from bastion.config import ConfigError, Settings, load_catalog

    path = Path(args.path) if args.path else Settings().config
    try:
        catalog = load_catalog(path)
    except ConfigError as exc:
        return fail(f"config error: {exc}")
    print(describe(catalog))
    return 0


def config_reload(args: argparse.Namespace) -> int:
    """Check the models file here first (a broken one is not sent: exit 1, one line), then SIGHUP the
    server the pid file names; it reloads its own models file (`--config`), and keeps it if broken."""
    from bastion.cli.process import read_pid
    from bastion.config import ConfigError, Settings, load_catalog

    settings = Settings()
    path = Path(args.path) if args.path else settings.config
    try:
        catalog = load_catalog(path)
    except ConfigError as exc:
        return _reload_failed(f"config error: {exc} (the server was not signalled)")
    pid_path = _reload_target(args, settings)
    if not isinstance(pid_path, Path):
        return _reload_failed(pid_path)
    try:
        pid = read_pid(pid_path)
    except (OSError, ValueError):
        return _reload_failed(f"no server pid in {pid_path}: is `bastion serve` running here? (--pid FILE)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return _reload_failed(f"{pid_path} names process {pid}, which is not running (a stale pid file)")
    except PermissionError:
        return _reload_failed(f"not allowed to signal process {pid} (from {pid_path}): run as its user")
    print(
        f"{path}: sha256 {catalog.sha256[:12]}, {len(catalog.models)} models: bastion serve (pid {pid})"
        " reloads its models file now (GET /readyz shows the sha256 each process serves)"
    )
    return 0


def _reload_target(args: argparse.Namespace, settings: Settings) -> Path | str:
    """The pid file to read: --pid; the one of --port; else the one server's running here. Or why not."""
    from bastion.cli.process import PORT_FIELD, pid_files, pid_path

    if args.pid:
        return Path(args.pid)
    if not settings.pid_file:
        return "no pid file: pass --pid FILE (BASTION_PID_FILE is empty)"
    if args.port is not None or PORT_FIELD not in settings.pid_file:
        return pid_path(settings.pid_file, args.port or settings.port)
    found = pid_files(settings.pid_file)
    running = [f for f in found if f.pid is not None]
    if len(running) > 1:
        ports = ", ".join(str(f.port) for f in running)
        return f"{len(running)} servers run here (ports {ports}): pass --port PORT (or --pid FILE)"
    if running or len(found) == 1:
        return (running or found)[0].path
    if found:
        files = ", ".join(str(f.path) for f in found)
        return f"no server is running here: the pid files {files} name processes that have ended"
    return pid_path(settings.pid_file, settings.port)


def _reload_failed(message: str) -> int:
    fail(message)
    return 1


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

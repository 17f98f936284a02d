"""The deployment files (Dockerfile, docker-compose.yml, deploy/nginx.conf, .env.example) agree with the code.

No Docker engine is needed: the files are parsed and checked against the real settings, CLI parser,
routes and limits. `docker compose config` validates the compose file when a Compose v2 is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import TypeAdapter

from bastion.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
ENV_EXAMPLE = ROOT / ".env.example"

# BASTION_-prefixed names that only docker-compose.yml reads (Bastion ignores them). None may be a setting.
COMPOSE_ONLY_BASTION_NAMES = {"BASTION_PUBLISH_PORT"}
# What the tests interpolate docker-compose.yml with (POSTGRES_PASSWORD is required there).
DUMMY_ENV = {"POSTGRES_PASSWORD": "ci-dummy-password"}
SECRET_PLACEHOLDERS = {"", "change-me"}
BASTION_NAME = re.compile(r"\bBASTION_[A-Z0-9_]+\b")


# ------------------------------------------------------------------------------------------- helpers
def settings_env_names() -> dict[str, str]:
    """Environment variable name -> Settings field name, as pydantic-settings reads them."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names[(alias or f"{prefix}{name}").upper()] = name
    return names


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            stages.append([])
        assert stages, f"{keyword} before the first FROM"
        stages[-1].append((keyword, rest))
    return stages


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword != "ENV":
            continue
        tokens = shlex.split(rest)
        if "=" not in tokens[0]:  # legacy `ENV NAME value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            env[name] = value
    return env


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for k, rest in stage if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {found}"
    return found[0]


def healthcheck_parts(stage: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK options (--interval=...) and its exec-form command."""
    rest = one(stage, "HEALTHCHECK")
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", rest))
    command = rest.split("CMD", 1)[1].strip()
    return options, json.loads(command)


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator == ":-":
            return value if value else argument
        if operator == "-":
            return value if value is not None else argument
        if operator in (":?", "?"):
            missing = not value if operator == ":?" else value is None
            if missing:
                raise KeyError(f"{name}: {argument}")
            return value or ""
        return value or ""

    return _VARIABLE.sub(replace, value)


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it: interpolated with `env` (the dummy one by default)."""
    return resolve(compose_raw(), DUMMY_ENV if env is None else env)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def condition(service: dict[str, Any], dependency: str) -> str | None:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if dependency in depends else None
    entry = depends.get(dependency)
    return None if entry is None else entry.get("condition", "service_started")


def container_port(mapping: str) -> tuple[str, int]:
    """Short-syntax port mapping -> (host part, container port)."""
    host, _, container = mapping.rpartition(":")
    return host, int(container.split("/")[0])


def env_example() -> dict[str, tuple[str, bool]]:
    """Documented NAME -> (value, commented out). A name documented twice fails here."""
    documented: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(#\s?)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if not match:
            continue
        name = match.group(2)
        assert name not in documented, f".env.example documents {name} twice"
        documented[name] = (match.group(3), match.group(1) is not None)
    return documented


def nginx_directives(text: str) -> list[tuple[str, list[str]]]:
    """(context path, tokens) of every simple directive, e.g. ('http/upstream bastion', ['server', ...])."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    directives: list[tuple[str, list[str]]] = []
    stack: list[str] = []
    current: list[str] = []
    for token in re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};'\"]+", text):
        if token == "{":
            assert current, "a block without a name in nginx.conf"
            stack.append(" ".join(current))
            current = []
        elif token == "}":
            assert stack and not current, "unbalanced } in nginx.conf"
            stack.pop()
        elif token == ";":
            assert current, "an empty directive in nginx.conf"
            directives.append(("/".join(stack), current))
            current = []
        else:
            current.append(token)
    assert not stack and not current, "unclosed block or a directive without ; in nginx.conf"
    return directives


def nginx_values(name: str, context: str | None = None) -> list[list[str]]:
    return [
        tokens[1:]
        for where, tokens in nginx_directives(NGINX.read_text())
        if tokens[0] == name and (context is None or where == context)
    ]


def nginx_size(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, f"not an nginx size: {value}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


def nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, f"not an nginx time: {value}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]


def compose_seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        total += float(number) * {"us": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert total > 0, f"not a compose duration: {value}"
    return total


def bastion_commands() -> list[list[str]]:
    """Every `bastion ...` command line the Dockerfile and the compose file run."""
    final = dockerfile_stages()[-1]
    commands = [json.loads(one(final, "CMD"))]
    for service in compose()["services"].values():
        if service.get("image") == bastion_image() and "command" in service:
            command = service["command"]
            commands.append(command if isinstance(command, list) else shlex.split(command))
    return commands


def bastion_image() -> str:
    return compose()["services"]["bastion"]["image"]


def dockerfile_port() -> int:
    return int(stage_env(dockerfile_stages()[-1])["BASTION_PORT"])


def healthz_url(command: list[str]) -> str:
    code = command[command.index("-c") + 1]
    match = re.search(r"""['"](http://[^'"]+)['"]""", code)
    assert match, f"no URL in the health check {command}"
    return match.group(1)


def compose_v2() -> list[str] | None:
    """The command that runs Compose v2 here, or None. COMPOSE_BIN may name a standalone binary."""
    candidates = []
    if os.environ.get("COMPOSE_BIN"):
        candidates.append([os.environ["COMPOSE_BIN"]])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for candidate in candidates:
        try:
            result = subprocess.run([*candidate, "version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if result.returncode == 0 and re.search(r"v?2\.\d+", result.stdout):
            return candidate
    return None


# ------------------------------------------------------------------------- settings and .env.example
def test_compose_only_names_are_not_settings() -> None:
    clash = COMPOSE_ONLY_BASTION_NAMES & set(settings_env_names())
    assert not clash, f"{clash} became Bastion settings: compose can no longer use them for itself"


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE, ENV_EXAMPLE, NGINX], ids=lambda p: p.name)
def test_every_bastion_name_is_a_setting(path: Path) -> None:
    valid = set(settings_env_names()) | COMPOSE_ONLY_BASTION_NAMES
    used = set(BASTION_NAME.findall(path.read_text()))
    assert used, f"{path.name} names no BASTION_ variable at all"
    unknown = used - valid
    assert not unknown, f"{path.name} names {sorted(unknown)}, which bastion.config.Settings does not have"


def test_container_environment_sets_only_real_settings() -> None:
    names = set(settings_env_names())
    for name, service in compose()["services"].items():
        bad = {key for key in environment(service) if key.startswith("BASTION_") and key not in names}
        assert not bad, f"service {name} sets {bad}, which Bastion does not read"
    bad = {key for key in stage_env(dockerfile_stages()[-1]) if key.startswith("BASTION_")} - names
    assert not bad, f"the Dockerfile sets {bad}, which Bastion does not read"


def test_every_setting_is_documented_with_its_default() -> None:
    documented = env_example()
    for env_name, field_name in settings_env_names().items():
        assert env_name in documented, f".env.example does not document {env_name}"
        value, commented = documented[env_name]
        assert commented, f"{env_name} should stay commented out at its default in .env.example"
        field = Settings.model_fields[field_name]
        default = field.get_default(call_default_factory=True)
        parsed = None if value == "" else TypeAdapter(field.annotation).validate_python(value)
        assert parsed == default, f".env.example says {env_name}={value!r}, the default is {default!r}"


def test_every_variable_compose_and_the_models_file_read_is_documented() -> None:
    documented = env_example()
    compose_names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= compose_names
    assert {"BASTION_PUBLISH_PORT", "LB_PUBLISH_PORT"} <= compose_names
    missing = compose_names - set(documented)
    assert not missing, f"docker-compose.yml reads {sorted(missing)}, which .env.example does not document"

    models_file = (ROOT / "bastion.example.yaml").read_text()
    live_lines = "\n".join(line.split("#", 1)[0] for line in models_file.splitlines())
    model_names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", live_lines))
    assert "OVH_API_KEY" in model_names
    missing = model_names - set(documented)
    assert not missing, f"bastion.example.yaml reads {sorted(missing)}, which .env.example does not document"


def test_env_example_carries_no_secret() -> None:
    documented = env_example()
    secrets = {name for name in documented if re.search(r"(^|_)(PASSWORD|KEY|TOKEN|SECRET)$", name)}
    assert {"POSTGRES_PASSWORD", "OVH_API_KEY", "BASTION_ADMIN_TOKEN"} <= secrets
    for name in secrets:
        assert documented[name][0] in SECRET_PLACEHOLDERS, f".env.example gives {name} a value"


# ----------------------------------------------------------------------------------------------- CLI
def test_entrypoint_is_the_installed_bastion_command() -> None:
    final = dockerfile_stages()[-1]
    assert json.loads(one(final, "ENTRYPOINT")) == ["bastion"]
    assert json.loads(one(final, "CMD")) == ["serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bastion"] == "bastion.cli:main"


def test_every_command_run_is_accepted_by_the_cli() -> None:
    commands = bastion_commands()
    assert {command[0] for command in commands} >= {"serve", "migrate"}
    for command in commands:
        subcommand = [word for word in command if not word.startswith("-")][:1]
        flags = [word.split("=", 1)[0] for word in command if word.startswith("--")]
        result = subprocess.run(
            [sys.executable, "-m", "bastion", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, f"bastion {' '.join(command)}: {result.stderr}"
        assert f"bastion {subcommand[0]}" in result.stdout, result.stdout
        for flag in flags:
            assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", result.stdout), f"{flag} unknown to {command}"


def test_the_cli_rejects_what_it_does_not_know() -> None:
    """The check above can fail: an unknown subcommand exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "no-such-command", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0


# ---------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_stages() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build, final = stages[0], stages[-1]
    assert re.fullmatch(r"python:3\.11-slim AS build", one(build, "FROM"), re.IGNORECASE)
    assert one(final, "FROM").split()[0] == "python:3.11-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11", f"the image's Python 3.11 vs requires-python {requires}"

    copied = []
    for keyword, rest in build:
        if keyword == "COPY":
            *sources, _target = shlex.split(rest)
            copied += [source for source in sources if not source.startswith("--")]
    assert set(copied) == {"pyproject.toml", "README.md", "bastion/"}, copied
    assert any(k == "RUN" and "--prefix=/install" in rest for k, rest in build)

    copies = [rest for k, rest in final if k == "COPY"]
    assert copies == ["--from=build /install /usr/local"], copies


def test_runtime_stage_is_small_and_unprivileged() -> None:
    final = dockerfile_stages()[-1]
    text = " ".join(rest for _, rest in final).lower()
    for tool in ("gcc", "g++", "build-essential", "python3-dev", "apt-get install", "pip install"):
        assert tool not in text, f"the runtime stage installs {tool}"
    user = one(final, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:")), user
    creates = " ".join(rest for k, rest in final if k == "RUN")
    assert re.search(rf"useradd\b.*--uid 10001\b.*\b{re.escape(user)}\b", creates), creates
    assert one(final, "WORKDIR") == "/app"
    users = [i for i, (k, _) in enumerate(final) if k == "USER"]
    runs = [i for i, (k, _) in enumerate(final) if k == "RUN"]
    assert all(run < users[0] for run in runs), "RUN after USER would run as the unprivileged user"


def test_runtime_environment() -> None:
    env = stage_env(dockerfile_stages()[-1])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["BASTION_HOST"] == "0.0.0.0"
    assert env["BASTION_CONFIG"] == "/app/bastion.yaml"
    # The values must be valid settings, as Bastion would parse them from the environment.
    names = settings_env_names()
    values = {names[key]: value for key, value in env.items() if key in names}
    parsed = Settings(**values)
    assert parsed.port == dockerfile_port() == 8000
    assert str(parsed.config) == "/app/bastion.yaml"


def test_dockerfile_healthcheck_and_port() -> None:
    final = dockerfile_stages()[-1]
    port = dockerfile_port()
    assert one(final, "EXPOSE").split() == [str(port)]
    options, command = healthcheck_parts(final)
    assert command[:2] == ["python", "-c"], "no curl in the slim image: the check runs Python"
    url = urlsplit(healthz_url(command))
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", port, "/healthz")
    assert {"interval", "timeout", "retries"} <= set(options), options
    assert compose_seconds(options["timeout"]) < compose_seconds(options["interval"])
    assert int(options["retries"]) >= 2


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_commands_pass_on_200_and_fail_otherwise(health_server: int) -> None:
    """The exact Python one-liners of the Dockerfile and the compose file, pointed at a stub server."""
    port = dockerfile_port()
    checks = [
        healthcheck_parts(dockerfile_stages()[-1])[1],
        compose()["services"]["bastion"]["healthcheck"]["test"],
    ]
    assert checks[1][0] == "CMD"
    for check in (checks[0], checks[1][1:]):
        code = check[check.index("-c") + 1]
        assert f"127.0.0.1:{port}/healthz" in code
        for target, expected in ((f"{health_server}/healthz", 0), (f"{health_server}/nope", 1)):
            probe = code.replace(f"{port}/healthz", target)
            result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
            assert (result.returncode != 0) == bool(expected), (probe, result.stderr)


def test_healthz_is_served_by_the_app(tmp_path: Path) -> None:
    """GET /healthz through Bastion's own ASGI dispatcher answers 200 (a subprocess: no state leaks)."""
    script = """
import asyncio, httpx
from bastion.api.app import BastionApp, catalog_for
from bastion.config import Settings

async def main():
    settings = Settings(demo=True, database_url="sqlite+aiosqlite:///./health.db")
    app = BastionApp(settings, catalog_for(settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/healthz")
    print(response.status_code)

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "200"


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}
    patterns = {p for p in patterns if not p.startswith("#")}
    for required in (".git", ".venv", ".env", "bastion-demo.key", "**/*.db", ".pytest_cache"):
        assert required in patterns, f".dockerignore misses {required}"
    for needed in ("pyproject.toml", "README.md", "bastion", "bastion/", "bastion/**"):
        assert needed not in patterns, f".dockerignore drops {needed}, which the image build copies"
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any("db/migrations/versions" in pattern for pattern in packaged["bastion"])
    assert sorted((ROOT / "bastion" / "db" / "migrations" / "versions").glob("0001_*.py"))


# ------------------------------------------------------------------------------------------- compose
def test_compose_services_and_volumes() -> None:
    raw = compose_raw()
    assert "version" not in raw, "the Compose spec has no version key"
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "bastion", "nginx"} <= set(services)
    assert set(compose()["volumes"]) >= {"pgdata", "redisdata"}

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16-alpine"
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    check = " ".join(postgres["healthcheck"]["test"])
    assert "pg_isready" in check and "-U" in check and "-d" in check, check
    assert set(environment(postgres)) >= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}

    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert "redisdata:/data" in redis["volumes"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    command = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options.get("--appendonly") == "yes", command
    assert options.get("--appendfsync") == "everysec", command


def test_compose_requires_the_postgres_password() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        compose({})


def test_compose_start_order() -> None:
    services = compose()["services"]
    migrate, bastion, nginx = services["migrate"], services["bastion"], services["nginx"]
    assert migrate["command"] == ["migrate"]
    assert str(migrate["restart"]) == "no"
    assert condition(migrate, "postgres") == "service_healthy"
    assert condition(bastion, "migrate") == "service_completed_successfully"
    assert condition(bastion, "postgres") == "service_healthy"
    assert condition(bastion, "redis") == "service_healthy"
    assert condition(nginx, "bastion") == "service_healthy"
    assert nginx["profiles"] == ["lb"]
    for service in (migrate, bastion):
        assert service["build"]["context"] == "."
        assert service["image"] == bastion_image()


def test_compose_bastion_environment() -> None:
    services = compose()["services"]
    bastion, migrate = environment(services["bastion"]), environment(services["migrate"])
    from bastion.db.engine import async_url

    url = bastion["BASTION_DATABASE_URL"]
    assert migrate["BASTION_DATABASE_URL"] == url
    assert async_url(url).startswith("postgresql+asyncpg://"), async_url(url)
    parsed = urlsplit(url)
    assert (parsed.hostname, parsed.port) == ("postgres", 5432)
    pg = environment(services["postgres"])
    assert (parsed.username, parsed.password, parsed.path) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        "/" + pg["POSTGRES_DB"],
    )
    redis = urlsplit(bastion["BASTION_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)

    names = settings_env_names()
    settings = Settings(**{names[k]: v for k, v in bastion.items() if k in names})
    assert settings.workers >= 2, "the compose default runs several workers"
    assert settings.redis_url, "serve refuses several workers without BASTION_REDIS_URL"
    assert settings.host == "0.0.0.0"
    assert settings.port == dockerfile_port()
    assert str(settings.config) == stage_env(dockerfile_stages()[-1])["BASTION_CONFIG"]

    mounts = services["bastion"]["volumes"]
    config_mounts = [m for m in mounts if isinstance(m, dict) and m["target"] == str(settings.config)]
    assert len(config_mounts) == 1, mounts
    assert config_mounts[0]["source"] == "./bastion.yaml" and config_mounts[0]["read_only"] is True

    env_files = services["bastion"]["env_file"]
    assert [entry["path"] if isinstance(entry, dict) else entry for entry in env_files] == [".env"]


def test_compose_ports_and_health() -> None:
    port = dockerfile_port()
    services = compose()["services"]
    bastion = services["bastion"]
    (mapping,) = bastion["ports"]
    host, target = container_port(mapping)
    assert target == port
    assert host == "127.0.0.1:8000", "loopback and 8000 by default"
    assert urlsplit(healthz_url(bastion["healthcheck"]["test"])).port == port
    assert urlsplit(healthz_url(bastion["healthcheck"]["test"])).path == "/healthz"

    # Scaling: an empty BASTION_PUBLISH_PORT leaves the host port to Docker ("127.0.0.1::8000"), so
    # replicas do not fight over one host port.
    scaled = compose({**DUMMY_ENV, "BASTION_PUBLISH_PORT": ""})["services"]["bastion"]["ports"]
    assert scaled == [f"127.0.0.1::{port}"], scaled

    (lb_mapping,) = services["nginx"]["ports"]
    _, lb_target = container_port(lb_mapping)
    assert [int(value[0]) for value in nginx_values("listen", "http/server")] == [lb_target]


def test_compose_stop_grace_outlasts_the_drain() -> None:
    bastion = compose()["services"]["bastion"]
    drain = Settings.model_fields["shutdown_grace_seconds"].get_default(call_default_factory=True)
    assert compose_seconds(bastion["stop_grace_period"]) >= drain + 10
    assert bastion["restart"] == "unless-stopped"


def test_compose_redis_cluster_profile() -> None:
    from bastion.billing.redis_target import parse_redis_url

    services = compose()["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"redis-cluster-\d", name))
    assert len(nodes) == 3, "three masters"
    for name in nodes:
        node = services[name]
        assert node["profiles"] == ["redis-cluster"]
        command = " ".join(node["command"])
        assert "--cluster-enabled yes" in command and "--appendonly yes" in command, command
        assert "--cluster-preferred-endpoint-type hostname" in command
        assert environment(node)["NODE"] == name  # the hostname it announces is its service name
        assert f"{name}:/data" in node["volumes"] and name in compose()["volumes"]
    init = services["redis-cluster-init"]
    assert init["profiles"] == ["redis-cluster"] and str(init["restart"]) == "no"
    create = " ".join(init["command"])
    assert "--cluster create" in create and "--cluster-replicas 0" in create and "--cluster-yes" in create
    assert all(f"$(ip {name}):6379" in create for name in nodes), create
    assert all(condition(init, name) == "service_healthy" for name in nodes)

    # What .env.example gives for the profile is what the gateway reads, and it names those nodes.
    example = [
        line for line in ENV_EXAMPLE.read_text().splitlines() if "redis+cluster://redis-cluster" in line
    ]
    (line,) = example
    url = line.split()[-1]
    bastion = services["bastion"]
    assert (
        environment(compose({**DUMMY_ENV, "REDIS_URL": url})["services"]["bastion"])["BASTION_REDIS_URL"]
        == url
    )
    target = parse_redis_url(url)
    assert target.mode == "cluster" and sorted(host for host, _ in target.nodes) == nodes
    assert condition(bastion, "redis-cluster-init") == "service_completed_successfully"
    assert bastion["depends_on"]["redis-cluster-init"]["required"] is False


def test_compose_pgbouncer_profile() -> None:
    from bastion.db.engine import async_url

    services = compose()["services"]
    bouncer = services["pgbouncer"]
    assert bouncer["profiles"] == ["pgbouncer"]
    env = environment(bouncer)
    assert env["POOL_MODE"] == "transaction"
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    assert condition(bouncer, "postgres") == "service_healthy"
    listens = int(env["LISTEN_PORT"])

    profiled = {**DUMMY_ENV, "DATABASE_HOST": "pgbouncer", "DATABASE_POOLER": "transaction"}
    for name in ("bastion", "migrate"):
        service = compose(profiled)["services"][name]
        settings = environment(service)
        url = urlsplit(async_url(settings["BASTION_DATABASE_URL"]))
        assert (url.hostname, url.port) == ("pgbouncer", listens)
        assert settings["BASTION_DATABASE_POOLER"] == "transaction"
        assert Settings(database_pooler=settings["BASTION_DATABASE_POOLER"]).database_pooler == "transaction"
        assert service["depends_on"]["pgbouncer"]["required"] is False
        # Without the profile: straight to PostgreSQL, no pooler setting.
        direct = environment(compose()["services"][name])
        assert urlsplit(direct["BASTION_DATABASE_URL"]).hostname == "postgres"
        assert direct["BASTION_DATABASE_POOLER"] == "none"


# --------------------------------------------------------------------------------------------- nginx
def test_nginx_upstream_is_the_bastion_service() -> None:
    servers = nginx_values("server", "http/upstream bastion")
    assert len(servers) == 1, servers
    address, *parameters = servers[0]
    host, _, port = address.rpartition(":")
    assert host in compose()["services"] and host == "bastion"
    assert int(port) == dockerfile_port()
    assert nginx_values("proxy_pass", "http/server/location /") == [["http://bastion"]]
    assert [int(v[0]) for v in nginx_values("keepalive", "http/upstream bastion")] == [64]

    if "resolve" in parameters:
        # Re-resolution needs a shared zone, Docker's resolver, and nginx >= 1.27.3 in the image.
        assert nginx_values("zone", "http/upstream bastion"), "resolve needs a zone"
        assert nginx_values("resolver", "http")[0][0] == "127.0.0.11"
        image = compose()["services"]["nginx"]["image"]
        pinned = re.match(r"nginx:(\d+)\.(\d+)\.(\d+)", image)
        assert pinned, f"{image}: pin the full version, `resolve` needs nginx >= 1.27.3"
        version = tuple(int(p) for p in pinned.groups())
        assert version >= (1, 27, 3), image


def test_nginx_keepalive_ends_before_uvicorns() -> None:
    import uvicorn

    serve_source = (ROOT / "bastion" / "cli" / "serve.py").read_text()
    match = re.search(r"timeout_keep_alive\s*=\s*(\d+)", serve_source)
    uvicorn_timeout = int(match.group(1)) if match else uvicorn.Config(app=None).timeout_keep_alive
    (value,) = nginx_values("keepalive_timeout", "http/upstream bastion")
    assert nginx_seconds(value[0]) < uvicorn_timeout


def test_nginx_streams_and_uploads() -> None:
    location = "http/server/location /"
    assert nginx_values("proxy_buffering", location) == [["off"]]
    assert nginx_values("proxy_request_buffering", location) == [["off"]]
    assert nginx_values("proxy_http_version", location) == [["1.1"]]
    assert nginx_seconds(nginx_values("proxy_read_timeout", location)[0][0]) >= 300

    (size,) = nginx_values("client_max_body_size", "http/server")
    limit = nginx_size(size[0])
    assert limit >= 26 * 1024 * 1024
    for field in ("max_upload_bytes", "max_body_bytes"):
        default = Settings.model_fields[field].get_default(call_default_factory=True)
        assert limit >= default, f"nginx would refuse bodies Bastion accepts ({field}={default})"

    headers = {tokens[0].lower(): tokens[1] for tokens in nginx_values("proxy_set_header", location)}
    assert headers["connection"] == '""'
    assert headers["authorization"] == "$http_authorization"
    assert headers["x-request-id"] == "$http_x_request_id"
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"


def test_nginx_has_no_https_redirect() -> None:
    for tokens in nginx_values("return"):
        assert not (tokens[0].startswith("30") and "https" in " ".join(tokens)), tokens
    assert not nginx_values("rewrite")


# ---------------------------------------------------------------------------------- docker compose
def test_docker_compose_config_validates() -> None:
    command = compose_v2()
    if command is None:
        pytest.skip("no Compose v2 here (`docker compose version` fails and COMPOSE_BIN is unset)")
    profiles = ["--profile", "lb", "--profile", "redis-cluster", "--profile", "pgbouncer"]
    base = [*command, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *profiles, "config", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "COMPOSE_FILE")}
    result = subprocess.run(
        base, capture_output=True, text=True, timeout=60, cwd=ROOT, env={**env, **DUMMY_ENV}
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr, missing.stderr


def test_the_package_carries_every_file_the_dashboard_serves(tmp_path: Path) -> None:
    """The image installs Bastion as a wheel: its templates and static files must be in it, or the
    dashboard of every container answers 500. Built from a copy, so no earlier build's leftovers count."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bastion", source / "bastion", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("bastion_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    dashboard = ROOT / "bastion" / "dashboard"
    wanted = {
        str(path.relative_to(ROOT))
        for folder in ("templates", "static")
        for path in (dashboard / folder).iterdir()
        if path.is_file()
    }
    assert len(wanted) > 20 and wanted <= names, sorted(wanted - names)

"""Bastion in production shape: a fresh PostgreSQL database, a Redis key prefix, a models file, a key."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from bench.procs import free_port, stop, wait_http

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = {"input": 0.01, "output": 0.02}
RPM = 100_000_000
# The brief asked for 1e12 tokens per minute, but api_keys.tpm is an int32 column on PostgreSQL (the CLI
# crashes with "value out of int32 range"): use the largest round value that fits; it never binds here.
TPM = 2_000_000_000


@dataclass
class Backing:
    """The database, Redis prefix, models file and key one benchmark run uses."""

    workdir: Path
    database: str
    redis_prefix: str
    config: Path
    key: str = ""
    created_database: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. PYTHONPATH of another tree

    def env(self, workers: int, redis_url: str = REDIS_URL, name: str = "") -> dict[str, str]:
        """`redis_url`: another Redis than the shared one (the Redis Cluster run); `name`: the gateway's
        own metrics directory when two run at once with as many workers."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        return (
            inherited
            | self.extra_env
            | {
                "BASTION_DATABASE_URL": f"{POSTGRES}/{self.database}",
                "BASTION_REDIS_URL": redis_url,
                "BASTION_REDIS_PREFIX": self.redis_prefix,
                "BASTION_CONFIG": str(self.config),
                "BASTION_LOG_LEVEL": "info",  # production shape: one access line per request
                "BASTION_DEFAULT_MAX_OUTPUT_TOKENS": "64",
                # Idle keep-alive connections must outlive the scaling check (uvicorn's default is 5 s).
                "BASTION_KEEPALIVE_SECONDS": "600",
                "BASTION_WORKERS": str(workers),
                # Multi-worker metrics go here (removed with the workdir), not to a stray /tmp directory.
                "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"metrics-{name or f'w{workers}'}"),
            }
        )


@dataclass
class Gateway:
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop(self.process, grace=15)


def models_file(json_base: str, sse_base: str, paced_base: str) -> dict[str, object]:
    timeouts = {"connect": 5, "read": 120}
    providers = [
        {"name": "nginx-json", "base_url": json_base, "timeouts": timeouts, "max_connections": 2048},
        {"name": "nginx-sse", "base_url": sse_base, "timeouts": timeouts, "max_connections": 2048},
        {"name": "paced", "base_url": paced_base, "timeouts": timeouts, "max_connections": 4096},
    ]

    def model(public: str, provider: str, upstream: str) -> dict[str, object]:
        return {
            "id": public,
            "category": "LLM",
            "endpoints": ["chat"],
            "deployments": [{"provider": provider, "model": upstream}],
            "price": PRICE,
            "max_output_tokens": 64,
        }

    return {
        "providers": providers,
        "models": [
            model("bench-json", "nginx-json", "bench-upstream"),
            model("bench-sse", "nginx-sse", "bench-upstream"),
            model("bench-paced", "paced", "paced"),
            model("bench-hold", "paced", "hold"),
        ],
    }


def psql(sql: str) -> None:
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")


def bastion(backing: Backing, *args: str) -> str:
    env = backing.env(workers=1)
    # The directory must exist: a CLI command that imports the metrics module writes its files there.
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        # Not this tree's directory: `-m` puts the working directory ahead of PYTHONPATH, and a
        # backing for another tree (bench.compare) must migrate with that tree's migrations.
        cwd=backing.workdir,
    )
    if done.returncode != 0:
        last = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"bastion {' '.join(args)} failed ({done.returncode}):\n{last}")
    return done.stdout


def new_backing(workdir: Path, models: dict[str, object], env: dict[str, str] | None = None) -> Backing:
    """Names for this run's database and Redis prefix, and the models file (nothing created yet)."""
    token = secrets.token_hex(5)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "bastion-bench.yaml"
    config.write_text(yaml.safe_dump(models, sort_keys=False))
    return Backing(workdir, f"bastion_bench_{token}", f"bastion-bench-{token}:", config, extra_env=env or {})


def provision(backing: Backing) -> None:
    """Create the database, migrate it, create an account and a key (teardown undoes it, even half done)."""
    token = backing.database.removeprefix("bastion_bench_")
    psql(f'CREATE DATABASE "{backing.database}"')
    backing.created_database = True
    bastion(backing, "migrate", "--json")
    bastion(backing, "accounts", "create", f"bench-{token}", "--credits", "1000000", "--json")
    created = json.loads(
        bastion(
            backing,
            "keys",
            "create",
            f"bench-{token}",
            "--name",
            "bench",
            "--rpm",
            str(RPM),
            "--tpm",
            str(TPM),
            "--json",
        )
    )
    backing.key = str(created["key"])


def serve_command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "bastion", "serve", "--port", str(port), "--workers", str(workers)]


def start_gateway(backing: Backing, workers: int, redis_url: str = REDIS_URL, name: str = "") -> Gateway:
    """`bastion serve` on a free port, answering /healthz; `name` (default `w<workers>`) names its log
    and metrics directory, `redis_url` the Redis it uses (the database, prefix and key stay the same)."""
    port = free_port()
    name = name or f"w{workers}"
    log = backing.workdir / f"bastion-{name}.log"
    (backing.workdir / f"metrics-{name}").mkdir(exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(port, workers),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=backing.env(workers, redis_url, name),
            cwd=backing.workdir,
            start_new_session=True,
        )
    gateway = Gateway(workers, port, process, log)
    try:
        wait_http(gateway.root + "/healthz", process, log, timeout=60)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def teardown(backing: Backing) -> list[str]:
    """Drop the database and delete the Redis keys under the prefix; the problems met, if any."""
    problems: list[str] = []
    if backing.created_database:
        try:
            psql(f'DROP DATABASE IF EXISTS "{backing.database}" WITH (FORCE)')
        except RuntimeError as exc:
            problems.append(str(exc))
    try:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            batch: list[bytes] = []
            for name in client.scan_iter(match=f"{backing.redis_prefix}*", count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()
    except redis.RedisError as exc:
        problems.append(f"redis cleanup: {exc}")
    return problems

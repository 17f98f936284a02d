"""Process settings, read from `BASTION_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="ignore")

    config: Path = Field(Path("bastion.yaml"), description="Path of the models file (YAML).")
    demo: bool = Field(False, description="Serve the built-in demo models file (mock provider).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    ssl_keyfile: Path | None = Field(None, description="Serve HTTPS with this private key (PEM).")
    ssl_certfile: Path | None = Field(None, description="Serve HTTPS with this certificate chain (PEM).")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest JSON request body accepted.")
    max_upload_bytes: int = Field(
        26 * 1024 * 1024, ge=1024, description="Largest multipart upload (a 25 MiB audio file and its form)."
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request line and headers; larger gets 431."
    )
    max_headers: int = Field(100, ge=8, description="Most request headers; more gets 431.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="How long a client may take to send its request line and headers."
    )
    log_level: str = "info"
    log_format: Literal["auto", "text", "json"] = Field(
        "auto",
        description="text: one readable line per entry (coloured on a terminal); json: JSON lines; auto:"
        " text when stderr is a terminal, else JSON.",
    )
    pid_file: str = Field(
        "bastion-{port}.pid",
        description="Where `bastion serve` writes its pid (removed at exit), for `bastion config reload`;"
        " `{port}` is replaced by the port it listens on; empty: no pid file.",
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests and streams may take to finish."
    )
    keepalive_seconds: float = Field(
        5.0, gt=0, description="How long an idle client connection is kept open for its next request."
    )

    database_url: str = Field(
        "sqlite+aiosqlite:///./bastion.db", description="postgresql://... or the embedded SQLite file."
    )
    database_pooler: Literal["none", "transaction"] = Field(
        "none",
        description="transaction: BASTION_DATABASE_URL names PgBouncer (or a managed pooler) in transaction"
        " pooling mode; asyncpg's statement cache is then off.",
    )
    redis_url: str | None = Field(None, description="redis://...; unset: in-process limits (one process).")
    redis_prefix: str = Field("bastion:", description="Prefix of every Redis key Bastion writes.")
    admin_token: str | None = Field(None, description="Bearer token of /admin/v1; unset: admin API off.")
    metrics_token: str | None = Field(None, description="Bearer token of /metrics; unset: /metrics is open.")
    default_rpm: int = Field(600, ge=1, description="Requests per minute per key, unless the key says.")
    default_tpm: int = Field(1_000_000, ge=1, description="Tokens per minute per key, unless the key says.")
    breaker_threshold: int = Field(
        5, ge=1, description="Consecutive failures that open a deployment's breaker."
    )
    breaker_cooldown_seconds: float = Field(
        30.0, gt=0, description="How long an open breaker waits to probe."
    )
    ledger_flush_seconds: float = Field(
        0.5, gt=0, description="Longest wait before usage records are written to the database."
    )
    sync_seconds: float = Field(
        2.0,
        gt=0,
        description="How often each instance reads revocations, changed keys and new credit from the"
        " database.",
    )
    checkpoint_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a running stream's usage is checkpointed: what a crash can leave unbilled"
        " at most.",
    )
    heartbeat_window_seconds: float = Field(
        10.0,
        gt=0,
        description="An instance silent this long is taken for dead: its streams are settled from their"
        " checkpoints (at least 3 checkpoint intervals).",
    )
    budget_timezone: str = Field(
        "UTC", description="Time zone of keys' daily, weekly and monthly budget periods (e.g. Europe/Paris)."
    )
    clock_offset_seconds: float = Field(
        0.0, description="Moves Bastion's clock for budget periods (tests that cross a period's turn)."
    )
    default_max_output_tokens: int = Field(
        4096, ge=1, description="Output tokens reserved when neither request nor model caps them."
    )

    dashboard: bool = Field(
        True, description="Serve the web dashboard under /dashboard (and / redirects there)."
    )
    public_url: str | None = Field(
        None,
        description="The URL people reach Bastion at (invite links; https:// makes session cookies Secure);"
        " unset: http://HOST:PORT.",
    )
    session_idle_hours: float = Field(
        12.0, gt=0, description="A dashboard session unused this long is ended."
    )
    signin_failures_per_email: int = Field(
        5, ge=1, description="Failed sign-ins for one email within the window before it is throttled."
    )
    signin_failures_per_address: int = Field(
        20,
        ge=1,
        description="Failed sign-ins from one client address within the window before it is throttled.",
    )
    signin_window_seconds: int = Field(900, ge=1, description="The window failed sign-ins are counted in.")
    trusted_proxies: str | None = Field(
        None,
        description="Comma-separated addresses or networks of proxies whose X-Forwarded-For names the"
        " dashboard's client (sign-in throttling and the audit log).",
    )

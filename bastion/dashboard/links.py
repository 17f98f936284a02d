"""Where the dashboard is reached: its public base URL and one-time links (CLI, admin API and pages)."""

from __future__ import annotations

from bastion.config import Settings

PREFIX = "/dashboard"


def public_base(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    scheme = "https" if settings.ssl_certfile else "http"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.port}"


def dashboard_url(settings: Settings) -> str:
    return public_base(settings) + PREFIX + "/"


def set_password_link(settings: Settings, token: str) -> str:
    """The one-time link of an invite or a reset, where the user sets a password."""
    return f"{public_base(settings)}{PREFIX}/invite/{token}"


def served_over_https(settings: Settings) -> bool:
    return bool(settings.ssl_certfile) or (settings.public_url or "").lower().startswith("https://")

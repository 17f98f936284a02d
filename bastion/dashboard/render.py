"""Pages from Jinja2 templates (autoescaped: everything a user typed is shown as text), with the filters
the templates use for money, counts and times."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from bastion import __version__
from bastion.money import NANO_PER_USD, decimal_usd, format_usd

STATIC = Path(str(resources.files("bastion.dashboard") / "static"))


def usd(nano: int | None) -> str:
    """Exact to the nano-dollar, with thousands separators: '$1,234.50', '$0.000017'."""
    if nano is None:
        return "-"
    text = format_usd(nano)
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-$").partition(".")
    return f"{sign}${int(whole):,}.{fraction}"


def usd_short(nano: int) -> str:
    """An axis label, never in exponent notation: '$1.2k', '$25', '$0.05', '$0.00002'."""
    if nano == 0:
        return "$0"
    value = Decimal(nano) / NANO_PER_USD
    if value >= 1000:
        return f"${value / 1000:.3g}k"
    if value >= 100:
        return f"${value:.0f}"
    places = max(2, 2 - value.adjusted())  # two significant digits below $1
    return "$" + f"{value:.{places}f}".rstrip("0").rstrip(".")


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def day(value: date) -> str:
    return value.strftime("%b %d").replace(" 0", " ")


def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = (datetime.now(UTC) - value.astimezone(UTC)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _asset_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("bastion.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            usd=usd, usd_exact=decimal_usd, usd_short=usd_short, count=count, when=when, day=day, ago=ago
        )
        self.env.globals.update(version=__version__, asset=_asset_version(), prefix="/dashboard")

    def html(
        self, template: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> HTMLResponse:
        return HTMLResponse(
            self.env.get_template(template).render(context), status_code=status, headers=headers
        )

"""Pages from Jinja2 templates (autoescaped: everything a user typed is shown as text), with the filters
of bastion.dashboard.formats for money, counts, times and long identifiers."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from bastion import __version__
from bastion.dashboard import formats
from bastion.dashboard.audit_detail import audit_detail
from bastion.db.refusals import refusal_label, refusal_status
from bastion.money import decimal_usd

STATIC = Path(str(resources.files("bastion.dashboard") / "static"))


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
            usd=formats.usd,
            usd_exact=decimal_usd,
            money=formats.money,
            price=formats.price,
            count=formats.count,
            count_compact=formats.count_compact,
            duration=formats.duration,
            when=formats.when,
            day=formats.day,
            ago=formats.ago,
            email=formats.email,
            breakable=formats.breakable,
            audit_detail=audit_detail,
        )
        self.env.globals.update(
            version=__version__,
            asset=_asset_version(),
            prefix="/dashboard",
            refusal_label=refusal_label,
            refusal_status=refusal_status,
        )

    def html(
        self, template: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> HTMLResponse:
        return HTMLResponse(
            self.env.get_template(template).render(context), status_code=status, headers=headers
        )

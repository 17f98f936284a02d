"""An audit entry's detail as the audit page shows it: a key's limits in words, amounts in USD.

The log keeps the detail as data (nano-USD, ISO times, setting names: what `bastion audit --json`
gives); this says it the way the rest of the dashboard does, with "none" for a limit removed."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from bastion.dashboard.formats import breakable, count, money

SHOWN_ELSEWHERE = {"key_id"}  # the target names the key; its id is the target's title
ONE_LINE = {"rpm", "tpm", "max_parallel", "expires_at", "role", "amount_nano", "credits_nano"}
ORDER = ("name", "budget_nano", "max_parallel", "rpm", "tpm", "models", "expires_at")  # then the rest


def _limit(name: str, value: Any, detail: dict[str, Any]) -> Markup | str | None:
    if name in SHOWN_ELSEWHERE:
        return None
    match name:
        case "budget_nano":
            if value is None:
                return "no budget"
            return Markup("budget {} {}").format(money(value), detail.get("budget_period") or "total")
        case "budget_period":
            return None  # said with the budget
        case "rpm" | "tpm":
            return f"{count(value)} {name}" if value is not None else f"default {name}"
        case "max_parallel":
            return f"{count(value)} in flight" if value is not None else "no cap on requests in flight"
        case "models":
            if value is None:
                return "all models"
            listed = Markup(", ").join(breakable(str(m)) for m in value)
            return Markup("models: {}").format(listed)
        case "expires_at":
            return f"expires {str(value)[:10]}" if value else "no expiry"
        case "name":
            return f"named “{value}”"
        case "role":
            return f"role {value}"
        case "credits_nano":
            return Markup("initial credit {}").format(money(value))
    if name.endswith("_nano") and isinstance(value, int):
        return Markup("{} {}").format(name.removesuffix("_nano").replace("_", " "), money(value))
    return f"{name}={value}"


def audit_detail(detail: dict[str, Any]) -> list[tuple[Markup | str, bool]]:
    """The entry's detail, a phrase per item: (phrase, whether it may wrap; the short ones do not)."""
    names = sorted(detail, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))
    said = ((_limit(name, detail[name], detail), name not in ONE_LINE) for name in names)
    return [(phrase, wraps) for phrase, wraps in said if phrase is not None]

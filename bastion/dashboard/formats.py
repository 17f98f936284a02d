"""How the pages show money, counts, durations, times and long identifiers (the templates' filters).

Money is shown compact (cents from a dollar up, three significant digits below) in a `.money` figure
that never wraps, with the exact amount, to the nano-dollar, in its `title`. Emails, addresses and model
ids may wrap only at their separators, never mid-word.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

from bastion.money import NANO_PER_USD, format_usd

_CENT = Decimal("0.01")


def usd(nano: int | None) -> str:
    """Exact to the nano-dollar, with thousands separators: '$1,234.50', '$0.000017'."""
    if nano is None:
        return "-"
    text = format_usd(nano)
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-$").partition(".")
    return f"{sign}${int(whole):,}.{fraction}"


def usd_compact(nano: int) -> str:
    """Cents from a dollar up ('$1,234.57'), three significant digits below ('$0.0803', '$0.000017')."""
    sign = "-" if nano < 0 else ""
    value = abs(Decimal(nano)) / NANO_PER_USD
    if value >= 1 or value == 0:
        return f"{sign}${value.quantize(_CENT, ROUND_HALF_UP):,.2f}"
    places = max(2, 2 - value.adjusted())
    whole, _, fraction = f"{value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):f}".partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def money(nano: int | None) -> Markup:
    """A money figure: compact, on one line, the exact amount in its title."""
    if nano is None:
        return Markup('<span class="faint">—</span>')
    return Markup('<span class="money" title="{}">{}</span>').format(usd(nano), usd_compact(nano))


def price(value: Decimal | None) -> Markup:
    """A rate as the models file states it ('$0.88', '$0.0000667'): exact already, so no title."""
    if value is None:
        return Markup('<span class="faint" title="not billed in this unit">—</span>')
    text = f"{value.normalize():f}"
    whole, _, fraction = text.partition(".")
    return Markup('<span class="money">${}.{}</span>').format(f"{int(whole):,}", fraction.ljust(2, "0"))


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


def count_compact(value: int) -> Markup:
    """A count for a card: exact below a million, else '40.9M', '1.23B', the exact count in its title."""
    if abs(value) < 1_000_000:
        return Markup("{}").format(count(value))
    scaled, suffix = (value / 1e9, "B") if abs(value) >= 999_500_000 else (value / 1e6, "M")
    shown = f"{scaled:.3g}" if abs(scaled) < 999.5 else f"{scaled:,.0f}"
    return Markup('<span class="figure" title="{}">{}{}</span>').format(count(value), shown, suffix)


def duration(ms: int | None) -> str:
    """'940 ms', '1.2 s', '185 s'."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{ms // 1000:,} s"


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


def _break_at(text: str, pattern: str) -> Markup:
    """`text` escaped, with a line break allowed at `pattern`'s zero-width matches (a <wbr>: copying the
    text gives it back unchanged)."""
    return Markup("<wbr>").join(escape(part) for part in re.split(pattern, text) if part)


def email(address: str | None) -> Markup:
    """An email that wraps, when it must, before its '@' first, then before a '.' (or after a hyphen),
    never mid-word: the local part and the '@domain' are inline blocks, each wrapping inside only when
    it is longer than the line. Anything without an '@' (an actor such as "cli:root") is plain text."""
    if not address:
        return Markup('<span class="faint">-</span>')
    if "@" not in address:  # an actor that is not a person: "cli:root", "admin-api", "demo"
        return escape(address)
    local, at, domain = address.rpartition("@")
    parts = [local, at + domain] if at else [address]
    return Markup('<span class="email">{}</span>').format(
        Markup("<wbr>").join(Markup("<span>{}</span>").format(_break_at(p, r"(?=[.])")) for p in parts)
    )


def breakable(text: str | None) -> Markup:
    """An identifier (a model id, an address) that may wrap after a '/' or ':' (and a hyphen)."""
    return _break_at(text or "", r"(?<=[/:])")

"""Exact money: integers of nano-USD (1e-9 USD), never floats.

Balances, reservations and costs are ints everywhere (database BIGINT, Redis INCRBY, Python int), so
they add up exactly. A request's cost is computed exactly from its usage and the model's Decimal
prices, then rounded up to the next nano-USD: the rounding is below a billionth of a dollar per request.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from functools import lru_cache

NANO_PER_USD = 10**9
_NANO = Decimal(NANO_PER_USD)
_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # prices are per 1M tokens


class MoneyError(ValueError):
    """An amount that is not a valid USD figure."""


def usd_to_nano(amount: str | int | Decimal) -> int:
    """A USD amount as nano-USD, exactly; more than 9 decimals or a non-number is an error."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise MoneyError(f"'{amount}' is not a USD amount") from None
    if not value.is_finite():
        raise MoneyError(f"'{amount}' is not a USD amount")
    nano = value * _NANO
    if nano != nano.to_integral_value():
        raise MoneyError(f"'{amount}' has more than 9 decimals")
    return int(nano)


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano) / _NANO


def _parts(nano: int) -> tuple[str, int, str]:
    """Sign, whole dollars, and the nano-dollar fraction's digits without trailing zeros."""
    units, rest = divmod(abs(nano), NANO_PER_USD)
    return "-" if nano < 0 else "", units, f"{rest:09d}".rstrip("0")


def decimal_usd(nano: int) -> str:
    """Exact and machine-readable: '0.000028', '12.5', '0' (the x-bastion-cost-usd header)."""
    sign, units, fraction = _parts(nano)
    return f"{sign}{units}.{fraction}" if fraction else f"{sign}{units}"


def format_usd(nano: int) -> str:
    """Human form: '$12.50', '$0.000001234'; trailing zeros beyond cents trimmed."""
    sign, units, fraction = _parts(nano)
    return f"{sign}${units}.{fraction.ljust(2, '0')}"


def cost_nano(units_by_price: list[tuple[int, Decimal]], per: Decimal = _TOKENS_PER_PRICE_UNIT) -> int:
    """Cost of (quantity, USD price per `per` units) pairs, rounded up to a whole nano-USD.

    In integers: each price is an exact fraction (its Decimal's), so the sum is exact and so is its
    rounding up; twice per request, Decimal arithmetic cost ~4 us of the request path."""
    numerator, denominator = 0, 1
    for quantity, price in units_by_price:
        top, bottom = _fraction(price)
        if bottom != denominator:
            common = math.lcm(bottom, denominator)
            numerator *= common // denominator
            top *= common // bottom
            denominator = common
        numerator += quantity * top
    scale = denominator * _per(per)
    return -(-(numerator * NANO_PER_USD) // scale)


@lru_cache(maxsize=4096)
def _fraction(price: Decimal) -> tuple[int, int]:
    return price.as_integer_ratio()


@lru_cache(maxsize=64)
def _per(per: Decimal) -> int:
    whole, rest = per.as_integer_ratio()
    if rest != 1:
        raise ValueError(f"prices are per a whole number of units, not {per}")
    return whole

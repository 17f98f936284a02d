"""The answers to admissions that did not admit: rate limits, concurrency, the key's budget, credit."""

from __future__ import annotations

import math
from datetime import UTC

from bastion.billing.live import (
    BUDGET_EXHAUSTED,
    BUDGET_IN_FLIGHT,
    CREDIT_EXHAUSTED,
    CREDIT_IN_FLIGHT,
    REQUEST_LIMIT,
    REVOKED,
    TOKEN_LIMIT,
    TOO_LARGE,
    TOO_MANY_IN_FLIGHT,
    AdmitResult,
    Reservation,
)
from bastion.errors import (
    ApiError,
    insufficient_funds,
    invalid_api_key,
    key_budget_exceeded,
    rate_limited,
    service_unavailable,
)
from bastion.money import format_usd
from bastion.periods import Window


def refusal(
    result: AdmitResult,
    hold: Reservation,
    ratelimit: list[tuple[bytes, bytes]],
    window: Window,
    now_epoch: float,
) -> ApiError:
    """The answer to an admission that did not admit, in the envelope, with the headers it needs."""
    headers = {name.decode(): value.decode() for name, value in ratelimit}
    retry_after = str(max(1, -(-result.retry_ms // 1000)))
    if result.code == REVOKED:
        return invalid_api_key()
    if result.code == TOO_LARGE:
        return rate_limited(
            f"This request may use {hold.tokens} tokens (prompt estimate plus max output), more than this "
            f"key's limit of {hold.tpm} tokens per minute; lower max_tokens.",
            {**headers, "x-should-retry": "false"},
        )
    if result.code == REQUEST_LIMIT:
        return rate_limited(
            f"Rate limit reached: {headers['x-ratelimit-limit-requests']} requests per minute for this key. "
            f"Retry after {retry_after} s.",
            {**headers, "retry-after": retry_after},
        )
    if result.code == TOKEN_LIMIT:
        return rate_limited(
            f"Rate limit reached: {hold.tpm} tokens per minute for this key; this request reserves "
            f"{hold.tokens}. Retry after {retry_after} s.",
            {**headers, "retry-after": retry_after},
        )
    if result.code == TOO_MANY_IN_FLIGHT:
        return rate_limited(
            f"Concurrency limit reached: this key may have {hold.max_parallel} requests in flight and has "
            f"{result.in_flight}. Retry after one of them finishes.",
            {**headers, "retry-after": "1"},
        )
    could_cost = format_usd(hold.nano)
    if result.code in (BUDGET_IN_FLIGHT, BUDGET_EXHAUSTED):
        return _over_budget(result, hold, headers, window, now_epoch)
    if result.code == CREDIT_IN_FLIGHT:
        return insufficient_funds(
            f"This request could cost up to {could_cost}; the balance is {format_usd(result.balance_nano)}"
            f" but requests in flight hold all but {format_usd(max(result.available_nano, 0))} of it. "
            f"Retry when they finish.",
            {**headers, "retry-after": retry_after, "x-should-retry": "true"},
        )
    if result.code != CREDIT_EXHAUSTED:  # the live state kept asking to load what was loaded
        return service_unavailable("Bastion could not load this key's live state; retry.", retry_after="1")
    return insufficient_funds(
        f"Insufficient credit: this request could cost up to {could_cost} and "
        f"{format_usd(max(result.available_nano, 0))} is available. Add credit to the account.",
        {**headers, "x-should-retry": "false"},
    )


def _over_budget(
    result: AdmitResult, hold: Reservation, headers: dict[str, str], window: Window, now_epoch: float
) -> ApiError:
    budget = hold.budget_nano or 0
    spent = f"{format_usd(result.key_spent_nano)} of its {format_usd(budget)} budget"
    where = "in total" if window.resets is None else f"this {_NOUN[window.id[0]]}"
    if result.code == BUDGET_IN_FLIGHT:
        return key_budget_exceeded(
            f"This request could cost up to {format_usd(hold.nano)}; this key has spent {spent} {where} "
            f"and requests in flight hold {format_usd(result.key_reserved_nano)}. Retry when they finish.",
            {**headers, "retry-after": "1", "x-should-retry": "true"},
        )
    if window.resets is None:
        return key_budget_exceeded(
            f"Key budget exceeded: this request could cost up to {format_usd(hold.nano)} and this key has "
            f"spent {spent} {where}; the budget does not reset. Raise it or use another key.",
            {**headers, "x-should-retry": "false"},
        )
    resets = window.resets.astimezone(UTC)
    seconds = max(1, math.ceil(window.resets_epoch - now_epoch))
    return key_budget_exceeded(
        f"Key budget exceeded: this request could cost up to {format_usd(hold.nano)} and this key has "
        f"spent {spent} {where}; it resets at {resets:%Y-%m-%dT%H:%M:%SZ}.",
        {**headers, "retry-after": str(seconds), "x-should-retry": "false"},
    )


_NOUN = {"d": "day", "w": "week", "m": "month"}

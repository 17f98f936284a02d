"""OpenAI's six rate-limit headers, with resets in its duration format ("250ms", "1.5s", "6m0s")."""

from __future__ import annotations

from bastion.billing.live import AdmitResult


def format_reset(ms: int) -> str:
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}m{rest / 1000:g}s"


def ratelimit_headers(rpm: int, tpm: int, result: AdmitResult) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-requests", str(rpm).encode()),
        (b"x-ratelimit-remaining-requests", str(result.requests_remaining).encode()),
        (b"x-ratelimit-reset-requests", format_reset(result.requests_reset_ms).encode()),
        (b"x-ratelimit-limit-tokens", str(tpm).encode()),
        (b"x-ratelimit-remaining-tokens", str(result.tokens_remaining).encode()),
        (b"x-ratelimit-reset-tokens", format_reset(result.tokens_reset_ms).encode()),
    ]

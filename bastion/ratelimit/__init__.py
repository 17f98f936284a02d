"""Rate limits: per-key requests and tokens per minute, and OpenAI's x-ratelimit-* headers.

The buckets themselves live with the credit state (`bastion.billing.live`) so one atomic script checks
limits and reserves credit in a single round trip.
"""

from bastion.ratelimit.headers import format_reset, ratelimit_headers

__all__ = ["format_reset", "ratelimit_headers"]

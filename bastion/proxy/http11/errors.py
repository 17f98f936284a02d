"""How an upstream exchange fails."""

from __future__ import annotations


class UpstreamFailure(Exception):
    """The upstream could not be reached or broke off; `kind` says how (for the client's message)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # connect_timeout | connect | read_timeout | disconnected | protocol


class _Stale(Exception):
    """A pooled connection turned out closed before any byte of the answer: resend on a fresh one."""

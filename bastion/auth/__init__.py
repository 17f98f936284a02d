"""Who is calling: `qbt_` keys, verified once and then served from cache (see `authenticator`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its key, its account, and what the key allows."""

    key_id: str
    account_id: str
    key_prefix: str
    allowed_models: frozenset[str] | None  # None: every model
    rpm: int
    tpm: int
    name: str = ""
    expires_at: float | None = None  # epoch seconds
    budget_nano: int | None = None  # spend limit per `budget_period`
    budget_period: str = "total"  # the period its spend is counted in (with or without a budget)
    max_parallel: int | None = None
    version: int = 0  # the key's settings version: a newer one in the database replaces this one

    def may_use(self, model_id: str) -> bool:
        return self.allowed_models is None or model_id in self.allowed_models


class Authenticator(Protocol):
    async def authenticate(self, authorization: bytes | None) -> Principal:
        """The caller behind an Authorization header, or ApiError(401)."""
        ...

    async def reload(self, key_id: str) -> Principal | None:
        """The key read again from the database (its settings changed); None if it is gone or revoked."""
        ...

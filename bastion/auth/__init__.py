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

    def may_use(self, model_id: str) -> bool:
        return self.allowed_models is None or model_id in self.allowed_models


class Authenticator(Protocol):
    async def authenticate(self, authorization: bytes | None) -> Principal:
        """The caller behind an Authorization header, or ApiError(401)."""
        ...

"""Who is calling. Until accounts and keys land, every caller is the anonymous principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: which key, which account, which models it may use (None: all)."""

    key_id: str | None = None
    account_id: str | None = None
    allowed_models: frozenset[str] | None = None

    def may_use(self, model_id: str) -> bool:
        return self.allowed_models is None or model_id in self.allowed_models


ANONYMOUS = Principal()


class Authenticator(Protocol):
    async def authenticate(self, authorization: bytes | None) -> Principal:
        """The caller behind an Authorization header, or ApiError(401)."""
        ...


class OpenAuthenticator:
    """Accepts every request (any bearer key, or none)."""

    async def authenticate(self, authorization: bytes | None) -> Principal:
        return ANONYMOUS

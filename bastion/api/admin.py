"""The admin API under /admin/v1: the CLI's operations over HTTP, for automation.

Mounted only when `BASTION_ADMIN_TOKEN` is set; every call needs `Authorization: Bearer <token>`,
compared in constant time. Amounts are USD as strings or numbers ("12.50"), held exactly; answers give
them as decimal strings under `*_usd` names ("9.83966288") and times in RFC 3339, UTC.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field

from bastion.db.audit import Actor
from bastion.db.errors import UnknownModels
from bastion.db.store import Conflict, NotFound, StoreError
from bastion.errors import ApiError, invalid_request
from bastion.management import Management
from bastion.money import MoneyError, usd_to_nano

Amount = str | int | float


class NewAccount(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    credits_usd: Amount = "0"


class NewCredit(BaseModel):
    usd: Amount
    note: str | None = None


class NewAdjustment(BaseModel):
    usd: Amount  # signed
    note: str = Field(min_length=1)


class KeySettings(BaseModel):
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None
    expires_at: datetime | None = None
    budget_usd: Amount | None = None
    budget_period: Literal["total", "daily", "weekly", "monthly"] | None = None
    max_parallel: int | None = None
    # A model the models file does not serve is refused (400, param "models") unless this is true.
    allow_unknown_models: bool = False


class NewKey(KeySettings):
    account: str
    name: str | None = None


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    operator: bool = False
    account: str | None = None
    role: Literal["owner", "developer", "viewer"] | None = None


class KeyChange(KeySettings):
    """Only the fields sent change; `null` removes a limit."""

    name: str | None = None


def _key_changes(body: KeySettings) -> dict[str, Any]:
    sent = body.model_dump(exclude_unset=True)
    sent.pop("name", None)
    sent.pop("allow_unknown_models", None)
    if "budget_usd" in sent:
        budget = sent.pop("budget_usd")
        sent["budget_nano"] = None if budget is None else _nano(budget)
    return sent


def _nano(amount: Amount) -> int:
    try:
        return usd_to_nano(repr(amount) if isinstance(amount, float) else amount)
    except MoneyError as exc:
        raise invalid_request(str(exc)) from None


def admin_router(
    management: Management,
    token: str,
    link_for: Callable[[str], str],
    reload_models: Callable[[], Awaitable[Any]] | None = None,
) -> APIRouter:
    """`link_for` turns a one-time token into the link a user opens to set a password; `reload_models`
    reloads the models file (every worker's) and returns a `bastion.api.reload.ReloadResult`."""
    expected = f"Bearer {token}".encode()

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        given = (authorization or "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "invalid_api_key", "authentication_error", "Invalid admin token.")

    router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(authorized)])

    @router.post("/accounts", status_code=201)
    async def create_account(body: NewAccount, request: Request) -> dict[str, Any]:
        return (
            await _guard(management.create_account(body.name, _nano(body.credits_usd), _actor(request)))
        ).as_json()

    @router.get("/accounts")
    async def list_accounts() -> list[dict[str, Any]]:
        return [a.as_json() for a in await management.list_accounts()]

    @router.post("/accounts/{account}/credits", status_code=201)
    async def add_credits(account: str, body: NewCredit, request: Request) -> dict[str, Any]:
        credit = await _guard(management.add_credits(account, _nano(body.usd), body.note, _actor(request)))
        return credit.as_json()

    @router.post("/accounts/{account}/adjustments", status_code=201)
    async def adjust(account: str, body: NewAdjustment, request: Request) -> dict[str, Any]:
        credit = await _guard(
            management.add_credits(account, _nano(body.usd), body.note, _actor(request), "adjustment")
        )
        return credit.as_json()

    @router.post("/keys", status_code=201)
    async def create_key(body: NewKey, request: Request) -> dict[str, Any]:
        budget = None if body.budget_usd is None else _nano(body.budget_usd)
        key, plaintext = await _guard(
            management.create_key(
                body.account,
                body.name,
                body.rpm,
                body.tpm,
                body.models,
                body.expires_at,
                budget,
                body.budget_period,
                body.max_parallel,
                _actor(request),
                body.allow_unknown_models,
            )
        )
        return {**key.as_json(), "key": plaintext}

    @router.patch("/keys/{key_id}")
    async def update_key(key_id: str, body: KeyChange, request: Request) -> dict[str, Any]:
        name = body.name if "name" in body.model_fields_set else None
        changes = _key_changes(body)
        key = management.update_key(key_id, name, changes, _actor(request), body.allow_unknown_models)
        return (await _guard(key)).as_json()

    @router.get("/keys")
    async def list_keys(account: str | None = None) -> list[dict[str, Any]]:
        return [k.as_json() for k in await _guard(management.list_keys(account))]

    @router.post("/keys/{key_id}/revoke")
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        return (await _guard(management.revoke_key(key_id, _actor(request)))).as_json()

    @router.get("/usage")
    async def usage(
        account: str | None = None,
        key: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        return [r.as_json() for r in await _guard(management.usage(account, key, since, limit))]

    @router.post("/users", status_code=201)
    async def invite_user(body: NewUser, request: Request) -> dict[str, Any]:
        """A dashboard user, and the one-time link (72 h) where they set a password."""
        user, token = await _guard(
            management.invite_user(body.email, body.operator, body.account, body.role, _actor(request))
        )
        return {**user.as_json(), "link": link_for(token)}

    @router.get("/users")
    async def list_users(account: str | None = None) -> list[dict[str, Any]]:
        return [u.as_json() for u in await _guard(management.list_users(account))]

    @router.delete("/users/{user}")
    async def remove_user(user: str, request: Request) -> dict[str, Any]:
        """The user is removed and every session of theirs ends."""
        return (await _guard(management.remove_user(user, _actor(request)))).as_json()

    @router.post("/users/{user}/reset")
    async def reset_user(user: str, request: Request) -> dict[str, Any]:
        """The password is cleared, every session ends; a new one-time link."""
        view, token = await _guard(management.reset_user(user, _actor(request)))
        return {**view.as_json(), "link": link_for(token)}

    @router.get("/audit")
    async def audit(
        account: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        return [e.as_json() for e in await _guard(management.audit(account, since, limit))]

    if reload_models is not None:

        @router.post("/config/reload")
        async def reload_config() -> dict[str, Any]:
            """Read the models file again (every worker does): the version now in service, or 400 with
            the file's problem (then nothing changed)."""
            result = await reload_models()
            if not result.ok:
                message = f"The models file was not reloaded (the one in service is kept): {result.error}"
                raise ApiError(400, "invalid_models_file", "invalid_request_error", message)
            return dict(result.as_json())

    @router.get("/ledger")
    async def ledger() -> dict[str, Any]:
        lines = await management.ledger()
        return {
            "ok": all(line.ok for line in lines),
            "accounts": [line.as_json() for line in lines],
        }

    return router


def _actor(request: Request) -> Actor:
    return Actor("admin-api", address=request.client.host if request.client else None)


async def _guard(operation: Any) -> Any:
    try:
        return await operation
    except NotFound as exc:
        raise ApiError(404, "not_found", "invalid_request_error", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", "invalid_request_error", str(exc)) from None
    except UnknownModels as exc:
        message = f'{exc}; send "allow_unknown_models": true to allow it anyway'
        raise invalid_request(message, "models") from None
    except StoreError as exc:
        raise invalid_request(str(exc)) from None

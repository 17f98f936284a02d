"""What the store hands out: plain, immutable views of its rows (no session attached)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bastion.db.models import Account, ApiKey
from bastion.money import decimal_usd


@dataclass(frozen=True, slots=True)
class AccountView:
    id: str
    name: str
    balance_nano: int
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return usd_fields(asdict(self)) | {"created_at": rfc3339(self.created_at)}


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    account_id: str
    name: str
    prefix: str
    allowed_models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    budget_nano: int | None = None
    budget_period: str | None = None  # total | daily | weekly | monthly (with a budget)
    max_parallel: int | None = None
    version: int = 0
    created_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for field in ("expires_at", "revoked_at", "created_at"):
            data[field] = rfc3339(data[field])
        data["allowed_models"] = list(self.allowed_models) if self.allowed_models is not None else None
        return usd_fields(data)


@dataclass(frozen=True, slots=True)
class CreditView:
    transaction_id: int
    account_id: str
    amount_nano: int
    balance_nano: int
    kind: str
    note: str | None
    actor: str

    def as_json(self) -> dict[str, Any]:
        return usd_fields(asdict(self))


@dataclass(frozen=True, slots=True)
class CreditState:
    """What Redis needs to hold an account's live balance: credits (with a version) and usage so far."""

    credits_nano: int
    version: int  # the newest credit transaction id: a larger version is a newer total
    usage_nano: int


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class UsageRow:
    request_id: str
    account_id: str
    key_id: str
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    status: int
    latency_ms: int
    estimated: bool
    created_at: datetime
    quantity: int = 0  # images, audio milliseconds, characters: for meters that do not count tokens
    unit: str | None = None
    client_request_id: str | None = None  # the client's own x-request-id, when it sent one
    recovered: bool = False  # settled from its last checkpoint after its instance died

    def as_json(self) -> dict[str, Any]:
        """As `GET /v1/requests/{id}` has it: `cost_usd`, and `cost_nano` beside it."""
        return {
            **asdict(self),
            "created_at": rfc3339(self.created_at),
            "cost_usd": decimal_usd(self.cost_nano),
        }


@dataclass(frozen=True, slots=True)
class LedgerLine:
    account_id: str
    name: str
    balance_nano: int
    credits_nano: int
    usage_nano: int
    rolled_up_nano: int = 0  # the daily rollups' sum, which must equal the usage records'

    @property
    def ok(self) -> bool:
        books = self.balance_nano == self.credits_nano - self.usage_nano
        return books and self.rolled_up_nano == self.usage_nano

    def as_json(self) -> dict[str, Any]:
        return usd_fields(asdict(self)) | {"ok": self.ok}


def rfc3339(value: datetime | None) -> str | None:
    """A time as every JSON answer gives it: RFC 3339 in UTC, `Z` (as `/v1` does)."""
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]


def usd_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Every `<name>_nano` amount as `<name>_usd`, a decimal string of USD (`"9.83966288"`)."""
    converted: dict[str, Any] = {}
    for name, value in data.items():
        if name.endswith("_nano"):
            name, value = name.removesuffix("_nano") + "_usd", None if value is None else decimal_usd(value)
        converted[name] = value
    return converted


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every one Bastion stores is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def key_view(key: ApiKey) -> KeyView:
    models = tuple(key.allowed_models) if key.allowed_models is not None else None
    return KeyView(
        key.id,
        key.account_id,
        key.name,
        key.prefix,
        models,
        key.rpm,
        key.tpm,
        as_utc(key.expires_at),
        as_utc(key.revoked_at),
        as_utc(key.created_at),  # type: ignore[arg-type]
        key.budget_nano,
        key.budget_period,
        key.max_parallel,
        key.version or 0,
        key.created_by,
    )


def account_view(account: Account) -> AccountView:
    return AccountView(account.id, account.name, account.balance_nano, as_utc(account.created_at))  # type: ignore[arg-type]

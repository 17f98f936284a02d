"""What a key may do (its limits), checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from bastion.db.errors import StoreError
from bastion.db.models import utcnow
from bastion.db.views import rfc3339
from bastion.periods import PERIODS

COLUMN = {"models": "allowed_models"}  # field -> column, where they differ
BUDGET = ("budget_nano", "budget_period")  # recorded together: an amount means nothing without its period


def plain(value: Any) -> Any:
    """A setting as the audit log keeps it (JSON): times in UTC, lists."""
    if isinstance(value, datetime):
        return rfc3339(value)
    return list(value) if isinstance(value, tuple | list) else value


@dataclass(slots=True)
class KeyLimits:
    """What a key may do, checked before anything is written."""

    rpm: int | None = None
    tpm: int | None = None
    models: Sequence[str] | None = None
    expires_at: datetime | None = None
    budget_nano: int | None = None
    budget_period: str | None = None
    max_parallel: int | None = None

    def check(self, existing_expiry: datetime | None = None) -> None:
        for label, value in (("rpm", self.rpm), ("tpm", self.tpm), ("max_parallel", self.max_parallel)):
            if value is not None and value < 1:
                raise StoreError(f"{label} must be a positive integer")
        if self.models is not None:
            self.models = [m.strip() for m in self.models if m.strip()]
            if not self.models:
                raise StoreError("an allowed-model list cannot be empty (omit it to allow every model)")
        if self.expires_at is not None and self.expires_at != existing_expiry and self.expires_at <= utcnow():
            raise StoreError("the expiry must be in the future")
        if self.budget_nano is None:
            self.budget_period = None
            return
        if self.budget_nano < 0:
            raise StoreError("a budget cannot be negative")
        self.budget_period = self.budget_period or "total"
        if self.budget_period not in PERIODS:
            raise StoreError(f"the budget period must be one of {', '.join(PERIODS)}")

    def audit_detail(self, before: KeyLimits | None = None) -> dict[str, Any]:
        """What the audit log records of these limits: on a new key, every limit it has; on a change,
        each limit that changed from `before` (None: removed), the budget with its period."""
        now = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        was = {f.name: plain(getattr(before, f.name)) for f in fields(before)} if before else {}
        changed = {k: v for k, v in now.items() if (v != was.get(k) if before else v is not None)}
        if any(field in changed for field in BUDGET):
            changed |= {field: now[field] for field in BUDGET}
        return changed

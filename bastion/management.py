"""Account, credit, key and dashboard-user operations: the one implementation the CLI, the admin API and
the dashboard share.

Each one writes the database first (its audit entry in the same transaction), then tells the live state
(Redis) so it takes effect at once on every instance; without Redis the serving process picks it up from
its database poll (`bastion.sync`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bastion.db.audit import Actor, AuditView, as_actor
from bastion.db.errors import UnknownModels
from bastion.db.people import UserView
from bastion.db.store import AccountView, CreditView, KeyView, LedgerLine, Store, UsageRow
from bastion.periods import Periods, Window

if TYPE_CHECKING:  # the CLI runs without Redis when BASTION_REDIS_URL is unset: no redis import
    from bastion.billing.live import LiveState


class Management:
    def __init__(
        self,
        store: Store,
        live: LiveState | None = None,
        forget_key: Callable[[str], None] | None = None,
        served_models: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.store = store
        self.live = live
        self.forget_key = forget_key  # this process's key cache, when it has one
        # The model ids the models file in service declares, asked only when a key's models are set;
        # None: nothing to check them against.
        self.served_models = served_models

    def check_models(self, models: Sequence[str] | None, allow_unknown: bool = False) -> None:
        """A key's allowed models must be served (a typo would make a key that can never be used),
        unless the caller allows unknown ones (a model about to be added to the models file)."""
        if models is None or allow_unknown or self.served_models is None:
            return
        served = self.served_models()
        unknown = [model for model in models if model not in served]
        if unknown:
            raise UnknownModels(unknown, sorted(served))

    async def create_account(
        self, name: str, credits_nano: int = 0, actor: Actor | str = "cli"
    ) -> AccountView:
        return await self.store.create_account(name, credits_nano, actor)

    async def list_accounts(self) -> list[AccountView]:
        return await self.store.list_accounts()

    async def add_credits(
        self, account: str, amount_nano: int, note: str | None, actor: Actor | str, kind: str = "topup"
    ) -> CreditView:
        credit = await self.store.add_credits(account, amount_nano, note, actor, kind)
        if self.live is not None:
            await self.live.load_account(credit.account_id, await self.store.credit_state(credit.account_id))
        return credit

    async def create_key(
        self,
        account: str,
        name: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        budget_nano: int | None = None,
        budget_period: str | None = None,
        max_parallel: int | None = None,
        actor: Actor | str = "cli",
        allow_unknown_models: bool = False,
    ) -> tuple[KeyView, str]:
        self.check_models(models, allow_unknown_models)
        return await self.store.create_key(
            account, name, rpm, tpm, models, expires_at, budget_nano, budget_period, max_parallel, actor
        )

    async def update_key(
        self,
        key_id: str,
        name: str | None,
        changes: dict[str, Any],
        actor: Actor | str = "cli",
        allow_unknown_models: bool = False,
    ) -> KeyView:
        """New settings for a key; the next request on every instance runs under them (with Redis: the
        admission script sees the new version at once; without: this process at once, others through
        the database poll)."""
        self.check_models(changes.get("models"), allow_unknown_models)
        key, key_hash = await self.store.update_key(key_id, name, changes, actor)
        if self.live is not None:
            await self.live.key_changed(key.id, key.account_id, key.version, key_hash)
        if self.forget_key is not None:
            self.forget_key(key.id)
        return key

    async def key_spend(self, key: KeyView, periods: Periods) -> tuple[Window, int]:
        """A key's spend in its current budget period, from the ledger."""
        window = periods.current(key.budget_period or "total")
        return window, await self.store.key_spend(key.id, window.starts)

    async def list_keys(self, account: str | None = None) -> list[KeyView]:
        return await self.store.list_keys(account)

    async def revoke_key(self, key_id: str, actor: Actor | str = "cli") -> KeyView:
        key = await self.store.revoke_key(key_id, actor)
        if self.live is not None:
            await self.live.revoke(key_id, key.account_id)
        return key

    async def usage(
        self,
        account: str | None = None,
        key_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRow]:
        return await self.store.usage(account, key_id, since, limit)

    async def key_names(self, key_ids: Collection[str]) -> dict[str, str]:
        """Key id -> name, for the keys named (a table's worth)."""
        found = await self.store.log.key_names(list(key_ids))
        return {key_id: name for key_id, (name, _) in found.items()}

    async def ledger(self) -> list[LedgerLine]:
        return await self.store.ledger()

    # ----------------------------------------------------------- dashboard users
    async def invite_user(
        self, email: str, operator: bool, account: str | None, role: str | None, actor: Actor | str
    ) -> tuple[UserView, str]:
        """A new dashboard user and the token of their one-time link (72 h) to set a password."""
        return await self.store.people.invite(email, operator, account, role, as_actor(actor))

    async def list_users(self, account: str | None = None) -> list[UserView]:
        account_id = (await self.store.account(account)).id if account is not None else None
        return await self.store.people.users(account_id)

    async def remove_user(self, user: str, actor: Actor | str) -> UserView:
        """The user is gone, and so is every session of theirs (on every instance: sessions are rows)."""
        return await self.store.people.remove(user, as_actor(actor))

    async def reset_user(self, user: str, actor: Actor | str) -> tuple[UserView, str]:
        """The password is cleared, every session ends, and a new one-time link is issued."""
        return await self.store.people.reset(user, as_actor(actor))

    async def audit(
        self, account: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditView]:
        account_id = (await self.store.account(account)).id if account is not None else None
        return await self.store.audit.entries(account_id, since, limit=limit)

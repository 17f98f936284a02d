"""Account, credit and key operations, shared by the CLI and the admin API.

Each one writes the database first, then tells the live state (Redis) so it takes effect at once on
every instance; without Redis the serving process picks it up from its database poll (`bastion.sync`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bastion.billing.live import LiveState
from bastion.db.store import AccountView, CreditView, KeyView, LedgerLine, Store, UsageRow


class Management:
    def __init__(self, store: Store, live: LiveState | None = None) -> None:
        self.store = store
        self.live = live

    async def create_account(self, name: str, credits_nano: int = 0, actor: str = "cli") -> AccountView:
        return await self.store.create_account(name, credits_nano, actor)

    async def list_accounts(self) -> list[AccountView]:
        return await self.store.list_accounts()

    async def add_credits(
        self, account: str, amount_nano: int, note: str | None, actor: str, kind: str = "topup"
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
    ) -> tuple[KeyView, str]:
        return await self.store.create_key(account, name, rpm, tpm, models, expires_at)

    async def list_keys(self, account: str | None = None) -> list[KeyView]:
        return await self.store.list_keys(account)

    async def revoke_key(self, key_id: str) -> KeyView:
        key = await self.store.revoke_key(key_id)
        if self.live is not None:
            await self.live.revoke(key_id)
        return key

    async def usage(
        self,
        account: str | None = None,
        key_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRow]:
        return await self.store.usage(account, key_id, since, limit)

    async def ledger(self) -> list[LedgerLine]:
        return await self.store.ledger()

"""Background sync from the database: revocations, keys' changed settings and new credit, every
`BASTION_SYNC_SECONDS` (`POLL_SECONDS`, 2 s, by default).

With Redis, the revoke and top-up operations already update Redis directly; this poll is the safety net
(and what makes a CLI operation reach a server running in-process state, which no other process can reach).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bastion.auth.authenticator import KeyAuthenticator
from bastion.billing.live import LiveState
from bastion.db.models import utcnow
from bastion.db.store import Store

log = logging.getLogger("bastion.sync")

POLL_SECONDS = 2.0
_CLOCK_SLACK = timedelta(seconds=30)  # another host's clock may run behind ours


class Sync:
    def __init__(
        self, store: Store, live: LiveState, authenticator: KeyAuthenticator, seconds: float = POLL_SECONDS
    ) -> None:
        self.store = store
        self.seconds = seconds
        self.live = live
        self.authenticator = authenticator
        self._task: asyncio.Task[None] | None = None
        self._revoked: set[str] = set()
        self._versions: dict[str, int] = {}  # keys whose changed settings this process has seen
        self._credit_seen = 0

    async def start(self) -> None:
        self._credit_seen = await self.store.newest_credit_id()
        self._since = utcnow() - _CLOCK_SLACK
        self._task = asyncio.create_task(self._run(), name="bastion-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                await self.poll()
            except Exception:
                log.exception("database sync failed; retrying")

    async def poll(self) -> None:
        for key_id, account_id in await self.store.revoked_since(self._since):
            if key_id not in self._revoked:
                self._revoked.add(key_id)
                self.authenticator.forget(key_id)
                await self.live.revoke(key_id, account_id)
        for key_id, account_id, version in await self.store.keys_changed_since(self._since):
            if self._versions.get(key_id) != version:
                self._versions[key_id] = version
                self.authenticator.forget(key_id)
                await self.live.key_changed(key_id, account_id, version)
        for account_id, newest in await self.store.credit_changes_since(self._credit_seen):
            await self.live.load_account(account_id, await self.store.credit_state(account_id))
            self._credit_seen = max(self._credit_seen, newest)

"""The long-lived parts of a Bastion process, built from settings, started and stopped in order."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from bastion.auth.authenticator import KeyAuthenticator
from bastion.billing.admission import CreditAdmission
from bastion.billing.checkpoints import Checkpointer, RedisSink, Sink, StoreSink
from bastion.billing.instance import own_instance_id
from bastion.billing.ledger import LedgerWriter, MemoryLedger, RedisLedger
from bastion.billing.live import LiveState, RedisLive
from bastion.billing.memory_live import MemoryLive
from bastion.billing.running import Running
from bastion.config import Settings
from bastion.db import migrate
from bastion.db.engine import is_sqlite
from bastion.db.store import Store
from bastion.management import Management
from bastion.periods import Periods
from bastion.sync import Sync

log = logging.getLogger("bastion")


class SchemaError(RuntimeError):
    """The database is not at the schema this Bastion needs."""


class Services:
    def __init__(
        self, settings: Settings, served_models: Callable[[], Collection[str]] | None = None
    ) -> None:
        self.settings = settings
        self.store = Store.from_settings(settings)
        self.live: LiveState
        self.ledger: LedgerWriter
        self.instance_id = own_instance_id()
        window = settings.heartbeat_window_seconds
        sink: Sink
        if settings.redis_url:
            redis_live = RedisLive(settings.redis_url, settings.redis_prefix)
            self.live, self.ledger = (
                redis_live,
                RedisLedger(self.store, redis_live, settings.ledger_flush_seconds),
            )
            shared = redis_live.redis
            sink = RedisSink(redis_live, self.instance_id, window)
        else:
            memory_live = MemoryLive()
            self.live, self.ledger = (
                memory_live,
                MemoryLedger(self.store, memory_live, settings.ledger_flush_seconds),
            )
            shared = None
            sink = StoreSink(self.store, self.instance_id, window)
        self.authenticator = KeyAuthenticator(
            self.store, settings.default_rpm, settings.default_tpm, shared, settings.redis_prefix
        )
        self.periods = Periods(settings.budget_timezone, settings.clock_offset_seconds)
        self.admission = CreditAdmission(
            self.live,
            self.store,
            settings.default_max_output_tokens,
            self.periods,
            self.authenticator.reload,
        )
        self.running = Running()  # the requests in flight: the gateway's, read by the checkpoints
        self.admission.running = self.running
        self.checkpoints = Checkpointer(
            self.running,
            self.admission,
            sink,
            settings.checkpoint_seconds,
            sweep_every_seconds=max(settings.checkpoint_seconds, window / 5),
        )
        self.management = Management(self.store, self.live, self.authenticator.forget, served_models)
        self.sync = Sync(self.store, self.live, self.authenticator, settings.sync_seconds)

    async def start(self) -> None:
        await ensure_schema(self.store, self.settings.database_url)
        await self.live.start()
        await self.checkpoints.start()  # a dead predecessor's streams settled before this one serves
        await self.ledger.start()
        await self.sync.start()

    async def close(self) -> None:
        await self.sync.close()
        await self.ledger.close()  # writes every usage record still waiting
        await self.checkpoints.close()  # (after the ledger: the checkpoints of what it wrote go)
        await self.live.close()
        await self.store.close()


async def ensure_schema(store: Store, database_url: str) -> None:
    """The embedded SQLite database migrates itself; a shared database must be migrated by the operator."""
    head = migrate.head_revision()
    current = await migrate.current_revision(store.engine)
    if current == head:
        return
    if is_sqlite(database_url):
        log.info("migrating the embedded database from %s to %s", current, head)
        await migrate.upgrade(store.engine)
        return
    raise SchemaError(
        f"the database schema is at {current or 'nothing'}, this Bastion needs {head}: run `bastion migrate`"
    )

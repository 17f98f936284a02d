"""Nothing served goes unbilled when an instance dies: running usage, checkpointed; orphans, swept.

While a stream runs, what the partial-usage rule would bill for it now (its usage record, status 500 and
`recovered`) is checkpointed beside its reservation: once per `checkpoint_seconds` (1 s), for every
stream that streamed something since its last checkpoint, in one write per slot group (one Redis round
trip per interval for all of an instance's streams, nothing per chunk). With Redis the write is
checkpoint.lua, which also beats this instance's heartbeat in the group; with the in-process live state
it is a row per stream in `running_usage`.

A request is settled exactly once, by whichever takes its checkpoint first, atomically: its own
instance (settle.lua removes the checkpoint with the settlement) or a sweep (sweep.lua settles from the
checkpoint and leaves `~` in its place). The sweep settles an instance's checkpoints only when its
heartbeat in the group is older than `heartbeat_window_seconds` (10 s: ten missed beats), or when its
process is certainly gone (bastion/billing/instance.py: a restarted instance settles its predecessor's
at once). A live instance beats every interval, so only one whose event loop could not run for the
whole window (paused, or stalled ten seconds) can be swept while it lives; if it resumes, it finds `~`
for the requests swept (checkpoint.lua names them), ends them at once with an error event, and its own
settlement of each charges nothing (settle.lua sees the `~`): billed once, the checkpoint's amount.

Stopping cleanly writes every settlement (bastion/api/stopping.py); what a forced exit or a crash leaves
unsettled is here when the sweep comes. What can be lost: the tokens a stream sent since its last
checkpoint (at most `checkpoint_seconds` of it), and a stream that crashed before its first checkpoint.

With the in-process live state (one process: the embedded default) the sweep runs when the process
starts, before it serves, for the checkpoints of processes that are certainly gone or whose heartbeat
(`beat_at`) is older than the window.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bastion import metrics
from bastion.billing import Outcome, Ticket
from bastion.billing.admission import CreditAdmission
from bastion.billing.instance import certainly_dead
from bastion.billing.live import RedisLive, Reservation
from bastion.billing.running import SWEPT, Running
from bastion.db.ledger_sql import encode_row
from bastion.db.running_usage import Recovered
from bastion.db.store import Store, UsageRow
from bastion.money import NANO_PER_USD

log = logging.getLogger("bastion.checkpoints")

CRASH_STATUS = 500  # a record settled from a checkpoint: its gateway failed mid-answer
SWEPT_KEPT_MS = 24 * 3600 * 1000  # a swept instance's '~' marks stay this long (for its resumption)
# Checkpoints per write (per checkpoint.lua call at most): ~0.3 ms of Redis, which runs one script at a
# time (1,000 in one took 4.8 ms: bench/checkpoint_cost.py), and ~0.6 ms of the gateway's bills.
PER_CALL = 64
ENDED_TICKS = 120  # an ended request's checkpoint waits this many intervals at most for its record


@dataclass(slots=True)
class Checkpoint:
    request_id: str
    hold: Reservation
    cost_nano: int
    tokens_used: int
    period: str
    record: UsageRow

    def encoded(self) -> bytes:
        """As checkpoint.lua stores it and sweep.lua reads it."""
        h = self.hold
        head = (
            f"{h.account_id}|{h.key_id}|{self.period}|{self.cost_nano}|{self.tokens_used - h.tokens}|{h.tpm}|"
        )
        return head.encode() + encode_row(self.record)


@dataclass(slots=True)
class Written:
    swept: list[str] = field(default_factory=list)  # request ids a sweep settled: to end
    done: set[str] = field(default_factory=set)  # ended requests whose checkpoints are gone


class Sink(ABC):
    def __init__(self, instance_id: str, window_seconds: float) -> None:
        self.instance_id = instance_id
        self.window_seconds = window_seconds

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def write(
        self,
        checkpoints: list[Checkpoint],
        beating: list[Reservation],
        ended: set[str],
        forget: list[Reservation],
    ) -> Written:
        """Write `checkpoints` and beat for `beating` (every checkpointed request running), starting the
        write before the first await (a settlement sent after it must land after it)."""

    @abstractmethod
    async def sweep(self) -> Recovered:
        """Settle the checkpoints of dead instances."""


class RedisSink(Sink):
    def __init__(self, live: RedisLive, instance_id: str, window_seconds: float) -> None:
        super().__init__(instance_id, window_seconds)
        self.live = live
        live.instance_id = instance_id

    async def write(
        self,
        checkpoints: list[Checkpoint],
        beating: list[Reservation],
        ended: set[str],
        forget: list[Reservation],
    ) -> Written:
        layout = self.live.layout
        pairs: dict[str, list[Any]] = {}
        for checkpoint in checkpoints:
            pairs.setdefault(layout.head(checkpoint.hold.account_id), []).extend(
                (checkpoint.hold.member, checkpoint.encoded())
            )
        forgotten: dict[str, list[Any]] = {}
        for hold in forget:
            forgotten.setdefault(layout.head(hold.account_id), []).append(hold.member)
        heads = {*pairs, *forgotten, *(layout.head(hold.account_id) for hold in beating)}
        channel, script, instance = self.live.channel, self.live.checkpoint_script, self.instance_id
        calls = []
        for head in heads:  # (at most PER_CALL checkpoints in all: `Checkpointer.checkpoint` slices)
            keys = [layout.runners(head), layout.running(head, instance)]
            written = pairs.get(head, [])
            args = [instance, SWEPT_KEPT_MS, len(written) // 2, *written, *forgotten.get(head, [])]
            calls.append(channel.submit_script(script, keys, args).reply)
        answers = await asyncio.gather(*calls)
        swept = [member.decode().rsplit("|", 1)[0] for answer in answers for member in answer]
        return Written(swept, set(ended))

    async def sweep(self) -> Recovered:
        layout, channel = self.live.layout, self.live.channel
        window_ms = int(self.window_seconds * 1000)
        runners = await asyncio.gather(
            *(
                channel.call(("ZRANGE", layout.runners(head), 0, -1), key=layout.runners(head))
                for head in layout.heads
            )
        )
        answers = []
        for head, stream, known in zip(layout.heads, layout.streams, runners, strict=True):
            gone = [i for i in (r.decode() for r in known) if i != self.instance_id and certainly_dead(i)]
            args = [head, stream, window_ms, SWEPT_KEPT_MS, self.instance_id, *gone]
            answers.append(channel.evalsha(self.live.sweep_script, [layout.runners(head)], args))
        settled = await asyncio.gather(*answers)
        return Recovered(sum(int(a[0]) for a in settled), sum(int(a[1]) for a in settled))


class StoreSink(Sink):
    """The in-process live state's: checkpoints in the database, swept at start."""

    def __init__(self, store: Store, instance_id: str, window_seconds: float) -> None:
        super().__init__(instance_id, window_seconds)
        self.store = store
        self.swept_at_start = False

    async def write(
        self,
        checkpoints: list[Checkpoint],
        beating: list[Reservation],
        ended: set[str],
        forget: list[Reservation],
    ) -> Written:
        if not (checkpoints or beating or ended):
            return Written()
        records = {c.request_id: encode_row(c.record) for c in checkpoints}
        done = await self.store.running_usage.write(self.instance_id, records, ended)
        return Written([], done)

    async def sweep(self) -> Recovered:
        """Once, at start: the in-process live state is this process's alone, and a settlement written
        behind it would leave its figures behind the database's."""
        if self.swept_at_start:
            return Recovered(0, 0)
        self.swept_at_start = True
        table = self.store.running_usage
        window = timedelta(seconds=self.window_seconds)
        settled = billed = 0
        for instance, beat_at in (await table.instances()).items():
            if instance != self.instance_id and (certainly_dead(instance) or table.stale(beat_at, window)):
                recovered = await table.settle(instance)
                settled, billed = settled + recovered.settled, billed + recovered.billed_nano
        return Recovered(settled, billed)


class Checkpointer:
    def __init__(
        self,
        running: Running,
        admission: CreditAdmission,
        sink: Sink,
        every_seconds: float,
        sweep_every_seconds: float,
    ) -> None:
        self.running = running
        self.admission = admission
        self.sink = sink
        self.every_seconds = every_seconds
        self.sweep_every_seconds = sweep_every_seconds
        self._checkpointed: dict[str, int] = {}  # request id -> intervals since it ended (0: running)
        self._last: dict[str, tuple[int, Any]] = {}  # request id -> (text streamed, usage) checkpointed
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sink.start()
        await self.settle_orphans()
        self._task = asyncio.create_task(self._run(), name="bastion-checkpoints")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:  # what ended since (its records are written by now): its checkpoints go
            await self.checkpoint()
        except Exception:
            log.warning("last checkpoint write failed", exc_info=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        swept_at, said_at = loop.time(), float("-inf")
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                await self.checkpoint()
                if loop.time() - swept_at >= self.sweep_every_seconds:
                    swept_at = loop.time()
                    await self.settle_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once a minute while it lasts (Redis or the database down): not every interval.
                if loop.time() - said_at >= 60:
                    said_at = loop.time()
                    log.warning("checkpoint or orphan sweep failed (%s); retrying every interval", exc)
            else:
                said_at = float("-inf")

    def collect(self, request_ids: Iterable[str]) -> tuple[list[Checkpoint], list[Reservation]]:
        """Of `request_ids`, the checkpoints due now (streams with something new since their last one),
        and the holds of those checkpointed and still running; synchronous, and the write of what it
        gives must start in the same step (a settlement sent after it then lands after it)."""
        due, beating = [], []
        requests, checkpointed, last = self.running.requests, self._checkpointed, self._last
        for request_id in request_ids:
            request = requests.get(request_id)
            if request is None:  # settled since the interval began
                continue
            ticket, outcome, _ = request
            relay = outcome.stream
            if relay is None or outcome.on_final is None:  # not streaming yet, or settling already
                continue
            counts = (relay.text_chars, relay.usage)
            before = last.get(request_id)
            if before is None or before[0] != counts[0] or before[1] is not counts[1]:
                last[request_id] = counts
                due.append(self._checkpoint(ticket, *counts))
                checkpointed[request_id] = 0
            if ticket.hold.checkpointed:
                beating.append(ticket.hold)
        return due, beating

    def _checkpoint(self, ticket: Ticket, chars: int, usage: Any) -> Checkpoint:
        bill = self.admission.bill(ticket, Outcome(CRASH_STATUS, usage, chars, client_disconnected=True))
        bill.record.status, bill.record.recovered = CRASH_STATUS, True
        ticket.hold.checkpointed = True
        period = self.admission.periods.current(ticket.principal.budget_period).id
        return Checkpoint(
            ticket.request_id, ticket.hold, bill.record.cost_nano, bill.tokens, period, bill.record
        )

    async def checkpoint(self) -> None:
        """One interval's checkpoints, `PER_CALL` streams at a time: each slice collected and its write
        sent in one step, then its answer awaited, so 1,000 streams' bills (~10 ms) do not hold the
        event loop in one piece."""
        requests, checkpointed = self.running.requests, self._checkpointed
        ended = {r for r in checkpointed if r not in requests}
        forget, self.running.unsettled = self.running.unsettled, []
        running = list(requests)
        for start in range(0, max(len(running), 1), PER_CALL):
            due, beating = self.collect(running[start : start + PER_CALL])
            first = start == 0
            try:
                written = await self.sink.write(
                    due, beating, ended if first else set(), forget if first else []
                )
            except BaseException:
                if first:
                    self.running.unsettled[:0] = forget
                raise
            metrics.CHECKPOINT_WRITES.inc(len(due))
            if first:
                self._forget_ended(ended, written.done)
            if written.swept:
                self._end_swept(written.swept)

    def _forget_ended(self, ended: set[str], done: set[str]) -> None:
        checkpointed = self._checkpointed
        for request_id in ended:
            if request_id in done or checkpointed[request_id] >= ENDED_TICKS:
                del checkpointed[request_id]
                self._last.pop(request_id, None)
            else:
                checkpointed[request_id] += 1

    def _end_swept(self, request_ids: list[str]) -> None:
        ended = 0
        for request_id in request_ids:
            request = self.running.requests.get(request_id)
            task = request[2].request_task() if request is not None else None
            if task is not None and not task.done():
                task.cancel(msg=SWEPT)
                ended += 1
        log.warning(
            "%d request(s) of this instance were settled from their checkpoints by an orphan sweep (no"
            " heartbeat from this instance for %.0f s: it was taken for dead); %d still running ended now",
            len(request_ids),
            self.sink.window_seconds,
            ended,
        )

    async def settle_orphans(self) -> Recovered:
        recovered = await self.sink.sweep()
        if recovered.settled:
            metrics.ORPHANS_SETTLED.inc(recovered.settled)
            metrics.ORPHANS_BILLED_USD.inc(recovered.billed_nano / NANO_PER_USD)
            log.warning(
                "settled %d request(s) of dead instance(s) from their last checkpoints: %d nano-USD billed",
                recovered.settled,
                recovered.billed_nano,
            )
        return recovered

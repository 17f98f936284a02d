"""Opening an upstream answer, resiliently: retries, circuit breakers, per-provider concurrency caps.

A request goes to its weighted choice of deployment first. If that fails before any byte has reached the
client (no connection, a timeout, a 5xx, or a stream that stalls before its first chunk), the next
healthy deployment is tried, up to 3; once the client has bytes, never. Each deployment has a circuit
breaker: `BASTION_BREAKER_THRESHOLD` consecutive failures open it, and after
`BASTION_BREAKER_COOLDOWN_SECONDS` one request probes it (half-open); with every deployment open, the
answer is an immediate 503. A provider with `max_concurrency` takes no more requests in flight than that:
past it the next deployment is tried, else 503 with `Retry-After`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bastion.errors import ApiError, service_unavailable, upstream_error
from bastion.proxy.providers import UpstreamRequest, UpstreamResponse
from bastion.proxy.providers.base import PreparedSend
from bastion.proxy.relay import read_error
from bastion.proxy.routing import Route, Target

MAX_ATTEMPTS = 3


@dataclass(slots=True)
class Breaker:
    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= self.cooldown else "open"

    def admits(self, now: float) -> bool:
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def attempt(self, now: float) -> None:
        if self.state(now) == "half_open":
            self.probing = True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = now


@dataclass(slots=True)
class Opened:
    """An upstream answer ready to relay: which deployment gave it, and its first chunk if streamed."""

    route: Route
    response: UpstreamResponse
    first_chunk: bytes | None = None
    attempts: int = 1
    release: Callable[[], None] = field(default=lambda: None)


@dataclass(slots=True)
class Prepared:
    """The first deployment's request, ready to leave the moment admission allows (`fire`); `open`
    then takes it up, or `discard` undoes it."""

    target: Target
    send: PreparedSend
    release: Callable[[], None]  # its place under the provider's concurrency cap
    used: bool = False

    def fire(self) -> None:
        if not self.used:
            self.send.send()

    def discard(self) -> None:
        if not self.used:
            self.used = True
            self.send.cancel()
            self.release()


class Dispatcher:
    def __init__(
        self,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        on_event: Callable[[str, Target, bool], None] | None = None,
    ) -> None:
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self._breakers: dict[int, Breaker] = {}
        # The target of each breaker, held so that its id is not reused while the breaker is kept.
        self._breaker_targets: dict[int, Target] = {}
        self._in_flight: dict[str, int] = {}
        self._on_event = on_event or (lambda event, target, breaker_open: None)

    def breaker(self, target: Target) -> Breaker:
        breaker = self._breakers.get(id(target))
        if breaker is None:
            breaker = self._breakers[id(target)] = Breaker(self.breaker_threshold, self.breaker_cooldown)
            self._breaker_targets[id(target)] = target
        return breaker

    def retain(self, live: list[Target]) -> list[Target]:
        """Forget the breakers of deployments no router uses any more (after a models-file reload);
        returns those of them whose breaker was open. An unchanged deployment keeps its Target, and so
        its breaker."""
        keep = {id(t) for t in live}
        gone = [t for key, t in self._breaker_targets.items() if key not in keep]
        were_open = [t for t in gone if self._breakers[id(t)].opened_at is not None]
        for target in gone:
            del self._breakers[id(target)], self._breaker_targets[id(target)]
        return were_open

    def in_flight(self, provider: str) -> int:
        return self._in_flight.get(provider, 0)

    def prepare(
        self, route: Route, candidates: list[Target], build: Callable[[Target], UpstreamRequest]
    ) -> Prepared | None:
        """The first deployment's request made ready to leave (a pooled connection taken, its bytes
        built), for `open` to take up: only on a deployment whose breaker is closed and whose provider
        has room and an idle connection. None otherwise (then `open` does it all)."""
        if not candidates:
            return None
        target = candidates[0]
        cap = target.provider.config.max_concurrency
        if self.breaker(target).opened_at is not None or (
            cap is not None and self._in_flight.get(target.provider.name, 0) >= cap
        ):
            return None
        send = target.provider.prepare(build(target))
        if send is None:
            return None
        return Prepared(target, send, self._acquire(target, route))

    async def open(
        self,
        route: Route,
        candidates: list[Target],
        build: Callable[[Target], UpstreamRequest],
        stream: bool,
        on_stream: Callable[[Route], None] | None = None,
        prepared: Prepared | None = None,
    ) -> Opened:
        """The first deployment that answers well, trying the next healthy one on a failure the client
        cannot have seen yet. `on_stream(route)`: a deployment answered with an event stream, whose
        first chunk is awaited next (time to prepare relaying it). `prepared` (from `prepare`, maybe
        sent already) is the first attempt."""
        now = time.monotonic()
        healthy = [t for t in candidates if self.breaker(t).admits(now)]
        if prepared is not None and not prepared.used:
            healthy = [prepared.target, *(t for t in healthy if t is not prepared.target)]
        else:
            prepared = None
        if not healthy:
            message = f"Every upstream for model '{route.model.id}' is failing; retry shortly."
            raise service_unavailable(message, retry_after=str(max(1, int(self.breaker_cooldown))))
        last_error: ApiError | None = None
        for attempt, target in enumerate(healthy[:MAX_ATTEMPTS], start=1):
            ready = prepared if prepared is not None and target is prepared.target else None
            if ready is not None:
                ready.used = True
                release = ready.release
            else:
                try:
                    release = self._acquire(target, route)
                except ApiError as saturated:  # this provider is full: another deployment may not be
                    last_error = saturated
                    continue
            self.breaker(target).attempt(time.monotonic())
            try:
                sending = ready.send.response() if ready is not None else target.provider.send(build(target))
                opened = await self._try(Route(route.model, target), sending, stream, on_stream)
            except ApiError as error:
                release()
                if error.status < 500 or error.code != "upstream_error":
                    raise  # the upstream understood and refused: another deployment would too
                breaker = self.breaker(target)
                breaker.failed(time.monotonic())
                self._on_event("failure", target, breaker.opened_at is not None)
                last_error = error
                if attempt < min(len(healthy), MAX_ATTEMPTS):
                    self._on_event("retry", target, breaker.opened_at is not None)
                continue
            except BaseException:
                release()
                raise
            breaker = self.breaker(target)
            if breaker.opened_at is not None:
                self._on_event("recovered", target, False)
            breaker.succeeded()
            opened.attempts, opened.release = attempt, release
            return opened
        assert last_error is not None
        raise last_error

    async def _try(
        self,
        route: Route,
        sending: Awaitable[UpstreamResponse],
        stream: bool,
        on_stream: Callable[[Route], None] | None,
    ) -> Opened:
        response = await sending
        if not 200 <= response.status < 300:
            raise await read_error(response, route)
        if not stream:
            return Opened(route, response)
        if response.content_type != "text/event-stream":
            await response.read()
            raise upstream_error(
                f"The upstream for model '{route.model.id}' did not answer with an event stream."
            )
        if on_stream is not None:
            on_stream(route)
        try:
            first = await response.next_chunk()
        except BaseException:
            response.abort()
            raise
        return Opened(route, _Resumed(response, first))

    def _acquire(self, target: Target, route: Route) -> Callable[[], None]:
        provider = target.provider
        cap = provider.config.max_concurrency
        current = self._in_flight.get(provider.name, 0)
        if cap is not None and current >= cap:
            self._on_event("saturated", target, self.breaker(target).opened_at is not None)
            message = f"The upstream for model '{route.model.id}' is at its concurrency limit; retry shortly."
            raise service_unavailable(message, retry_after="1")
        self._in_flight[provider.name] = current + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight[provider.name] -= 1

        return release


class _Resumed(UpstreamResponse):
    """A streamed answer whose first chunk was read to know the upstream really started."""

    __slots__ = ("_first", "_inner", "_resumed", "content_type", "headers", "status")

    def __init__(self, inner: UpstreamResponse, first: bytes | None) -> None:
        self._inner, self._first, self._resumed = inner, first, False
        self.status, self.content_type, self.headers = inner.status, inner.content_type, inner.headers

    async def read(self) -> bytes:
        return (self._first or b"") + await self._inner.read()

    async def next_chunk(self) -> bytes | None:
        if self._resumed:
            return await self._inner.next_chunk()
        self._resumed = True
        return self._first

    def release(self) -> None:
        self._inner.release()

    async def finish(self) -> None:
        await self._inner.finish()

    def abort(self) -> None:
        self._inner.abort()

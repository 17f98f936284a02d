"""What forwarding one request needs, made once: its upstream request for a deployment and, for an
event stream, the relay (prepared while the upstream's first chunk is awaited)."""

from __future__ import annotations

import logging
import time
from typing import Any

from bastion.api.endpoints import Endpoint
from bastion.api.exchange import Exchange
from bastion.billing import Admitting
from bastion.proxy.body import upstream_body, wants_stream_usage, without_model
from bastion.proxy.dispatch import Dispatcher, Prepared
from bastion.proxy.members import Members
from bastion.proxy.providers import UpstreamRequest
from bastion.proxy.relay import StreamRelay
from bastion.proxy.routing import Route, Target

log = logging.getLogger("bastion.gateway")


class Forwarding:
    __slots__ = (
        "_first",
        "_relay",
        "ask_usage",
        "body",
        "candidates",
        "endpoint",
        "exchange",
        "members",
        "prepared",
        "raw",
        "route",
        "sent",
        "stream",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        route: Route,
        raw: bytes,
        body: dict[str, Any],
        members: Members,
        exchange: Exchange,
        candidates: list[Target],
    ) -> None:
        self.endpoint, self.route, self.raw, self.body, self.exchange = endpoint, route, raw, body, exchange
        self.members = members
        self.candidates = candidates
        self.stream = endpoint.streams and body.get("stream") is True
        # Billing needs the stream's usage; if the client did not ask for it, ask and hide it.
        self.ask_usage = self.stream and endpoint.asks_usage and not wants_stream_usage(body)
        self.sent = 0.0  # when the request left for the upstream
        self.prepared: Prepared | None = None  # the first deployment's request, ready to leave
        self._relay: StreamRelay | None = None
        # The first deployment's request, made at once: this runs while admission is being decided.
        self._first: tuple[Target, UpstreamRequest] | None = None
        if candidates:
            try:
                self._first = (candidates[0], self._request(candidates[0]))
            except Exception:  # made again (and raised from) where it is needed; never lost in between
                self._first = None

    def request(self, target: Target) -> UpstreamRequest:
        first = self._first
        if first is not None and first[0] is target:
            return first[1]
        return self._request(target)

    def _request(self, target: Target) -> UpstreamRequest:
        upstream_model = target.deployment.model
        if self.endpoint.model_in_body:
            wire = upstream_body(
                self.raw, self.members, self.body, upstream_model, self.stream, self.ask_usage
            )
        else:
            wire = without_model(self.raw, self.members)
        return UpstreamRequest(
            path=self.endpoint.upstream_path,
            body=wire,
            payload=self.body,
            upstream_model=upstream_model,
            stream=self.stream,
            request_id=self.exchange.request_id,
            public_model=self.route.model.id,
        )

    def prepare(self, dispatcher: Dispatcher, admitting: Admitting) -> None:
        """Make the first deployment's request ready on a pooled connection, to be written from the
        callback that receives the admission (see bastion/proxy/http11/prepared.py)."""
        try:
            self.prepared = dispatcher.prepare(self.route, self.candidates, self.request)
        except Exception:  # made again (and raised from) where it is needed
            log.debug("could not prepare the upstream request", exc_info=True)
            self.prepared = None
        if self.prepared is not None:
            admitting.on_admitted(self._admitted)

    def _admitted(self) -> None:
        prepared = self.prepared
        if prepared is not None and not prepared.used:
            self.sent = time.perf_counter()
            prepared.fire()

    def discard(self) -> None:
        """The request is over: a prepared request nobody took up is undone."""
        if self.prepared is not None:
            self.prepared.discard()

    def sending(self) -> None:
        if not self.sent:
            self.sent = time.perf_counter()

    def stream_began(self, started: Route) -> None:
        """A deployment answered with an event stream; its first chunk is awaited next. What relaying
        it needs is made now, in that wait, so the chunk leaves with less work: a CPU just woken from
        idle mostly handles it."""
        self._relay = self._new_relay(started)
        self.exchange.prepare_stream(self.sent)

    def relay(self, route: Route) -> StreamRelay:
        """The relay for the stream `route` began (the deployment that answered)."""
        relay = self._relay
        return relay if relay is not None and relay.route is route else self._new_relay(route)

    def _new_relay(self, route: Route) -> StreamRelay:
        return StreamRelay(route, strip_usage_chunk=self.ask_usage, done_marker=self.endpoint.done_marker)

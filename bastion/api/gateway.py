"""The request path, top to bottom: authenticate, parse and validate, route, admit, forward, settle.

Every proxied endpoint is an `Endpoint` (path, upstream kind, body checks) served by the one
`Gateway.handle`, so authentication, limits, billing and error handling exist exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion import metrics
from bastion.api import access
from bastion.api.answers import relay_answer, relay_stream
from bastion.api.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    require_json_content_type,
)
from bastion.api.endpoints import Endpoint
from bastion.api.exchange import Exchange
from bastion.api.forwarding import Forwarding
from bastion.api.upload import Upload
from bastion.api.validation import require_model
from bastion.auth import Authenticator
from bastion.billing import Admission, Outcome, Ticket
from bastion.billing.running import SWEPT, Running
from bastion.errors import (
    ApiError,
    internal_error,
    invalid_request,
    model_not_found,
    service_unavailable,
)
from bastion.proxy.dispatch import Dispatcher, Opened
from bastion.proxy.members import DuplicateKey, Members
from bastion.proxy.providers import UpstreamRequest
from bastion.proxy.routing import Route, Router, Target

log = logging.getLogger("bastion.gateway")
SHARED_STATE_DOWN = (RedisConnectionError, RedisTimeoutError)
# Refused before admission (admission counts its own refusals): counted per key, day and code with the
# rate-limit headers' read of the live state, in that same round trip. Not for the key's own routes.
_COUNTED_REFUSALS = frozenset({"invalid_request", "model_not_found", "request_too_large"})
_SELF_ROUTES = frozenset({"models", "key", "requests"})
_STATE_DOWN = "Bastion cannot reach its rate-limit and credit store right now; retry shortly."


class Gateway:
    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        admission: Admission,
        max_body_bytes: int,
        max_upload_bytes: int,
        dispatcher: Dispatcher,
        running: Running | None = None,
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.dispatcher = dispatcher
        self.stopping = False  # set once a stop signal came: a cancellation is then the server's
        self.running = running or Running()  # the requests in flight, for checkpoints of their usage

    async def handle(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        await self._run(Exchange(scope, receive, send), self._serve, endpoint)

    async def handle_upload(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        await self._run(Exchange(scope, receive, send), self._serve_upload, endpoint)

    async def handle_models(self, scope: Scope, receive: Receive, send: Send, model_id: str | None) -> None:
        await self._run(Exchange(scope, receive, send), self._serve_models, model_id)

    async def handle_with(
        self,
        work: Callable[[Any, Exchange], Awaitable[None]],
        arg: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Another route's work (bastion/api/self_service.py), with the same failures and access line."""
        await self._run(Exchange(scope, receive, send), work, arg)

    async def reject(self, error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        await Exchange(scope, receive, send).fail(error)

    async def _run(
        self, exchange: Exchange, work: Callable[[Any, Exchange], Awaitable[None]], arg: Any
    ) -> None:
        """One request: the work, and every failure as the envelope (or a closing stream event)."""
        metrics.live.in_flight += 1
        try:
            await work(arg, exchange)
        except ApiError as error:
            await self._add_limit_headers(exchange, error)
            await exchange.fail(error)
        except ClientDisconnected:
            exchange.status = 499
        except asyncio.CancelledError as cancelled:
            if not self.stopping and SWEPT not in cancelled.args:
                raise
            # The server is stopping and ended this request (bastion/api/stopping.py), or an orphan
            # sweep settled it (bastion/billing/checkpoints.py): answered and settled on the way here;
            # no traceback for a cancellation Bastion asked for.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if not exchange.status:
                await _answer_shutdown(exchange)
        except SHARED_STATE_DOWN as exc:
            # Limits and credit cannot be checked: refuse (nothing was forwarded) rather than guess.
            log.error("shared state unreachable request_id=%s: %s", exchange.request_id, exc)
            await exchange.fail(service_unavailable(_STATE_DOWN, retry_after="1"))
        except Exception:
            log.exception("internal error request_id=%s path=%s", exchange.request_id, exchange.scope["path"])
            await exchange.fail(internal_error())
        finally:
            metrics.live.in_flight -= 1
            if exchange.streaming:
                metrics.live.open_streams -= 1
            access.finished(exchange, time.perf_counter())

    async def _add_limit_headers(self, exchange: Exchange, error: ApiError) -> None:
        """Authenticated answers carry the rate-limit headers, even when they admitted nothing."""
        principal = exchange.principal
        if principal is None or exchange.limited or exchange.streaming or error.status == 401:
            return
        if "x-ratelimit-limit-requests" in error.headers:
            return
        counted = error.code in _COUNTED_REFUSALS and exchange.endpoint not in _SELF_ROUTES
        try:
            exchange.headers += await self.admission.limit_headers(principal, error.code if counted else None)
        except Exception:
            log.warning("rate-limit headers unavailable request_id=%s", exchange.request_id, exc_info=True)

    async def _serve_models(self, model_id: str | None, exchange: Exchange) -> None:
        exchange.endpoint = "models"
        principal = await self.authenticator.authenticate(header(exchange.scope, b"authorization"))
        exchange.principal = principal
        if model_id is None:
            answer = {
                "object": "list",
                "data": [m for m in self.router.model_objects() if principal.may_use(m["id"])],
            }
        else:
            answer = self.router.model_object(model_id)
            if answer is None or not principal.may_use(model_id):
                raise ApiError(
                    404,
                    "model_not_found",
                    "invalid_request_error",
                    f"The model '{model_id}' does not exist.",
                    "model",
                )
        exchange.headers += await self.admission.limit_headers(principal)
        exchange.limited = True
        await exchange.respond(200, orjson.dumps(answer))

    async def _serve(self, endpoint: Endpoint, exchange: Exchange) -> None:
        exchange.endpoint = endpoint.kind
        principal = await self.authenticator.authenticate(header(exchange.scope, b"authorization"))
        exchange.principal = principal
        raw, body, members = await self._parse_body(exchange)
        model_id = require_model(body) if endpoint.model_in_body else self._optional_model(body, endpoint)
        endpoint.check(body)
        if not principal.may_use(model_id):
            raise model_not_found(model_id)
        router = self.router  # this request's routes to its end, even if a reload swaps in new ones
        route = router.resolve(model_id, endpoint.kind)
        exchange.model = route.model.id
        admitting = self.admission.begin(
            principal, route, body, exchange.record_id, endpoint, len(raw), exchange.client_request_id
        )
        # While the shared state decides, the request for the first deployment is made ready, to leave
        # the moment the admission's answer arrives.
        plan = Forwarding(endpoint, route, raw, body, members, exchange, router.candidates(route))
        plan.prepare(self.dispatcher, admitting)
        router.active += 1
        try:
            async with self._admitted(admitting, exchange, plan.stream) as outcome:
                await self._forward(plan, outcome)
        finally:
            plan.discard()
            router.release()

    @asynccontextmanager
    async def _admitted(
        self, admitting: Awaitable[Ticket], exchange: Exchange, stream: bool = False
    ) -> AsyncIterator[Outcome]:
        """Admitted (limits, credit) before the block; settled exactly once after it, however it ends. A
        stream is among the requests running meanwhile, for the checkpoints of its usage."""
        ticket = await admitting
        exchange.headers += ticket.headers
        exchange.limited = True
        started: list[Any] = []
        priced: list[Any] = []  # the bill a JSON answer's cost header was made from, settled as is

        def price(outcome: Outcome) -> int:
            priced.append(self.admission.bill(ticket, outcome))
            return int(priced[-1].record.cost_nano)

        def final(outcome: Outcome) -> None:
            started.append(self.admission.start_settlement(ticket, outcome, priced[-1] if priced else None))

        outcome = Outcome(status=502, on_final=final, on_price=price)
        if stream:
            self.running.requests[ticket.request_id] = (ticket, outcome, exchange)
        try:
            yield outcome
        finally:
            if stream:  # gone before its settlement is sent: no checkpoint of it after that
                self.running.requests.pop(ticket.request_id, None)
            exchange.record = await self.admission.settle(ticket, outcome, started[0] if started else None)

    async def _serve_upload(self, endpoint: Endpoint, exchange: Exchange) -> None:
        """The same path for a multipart upload, which goes upstream while it arrives."""
        exchange.endpoint = endpoint.kind
        principal = await self.authenticator.authenticate(header(exchange.scope, b"authorization"))
        exchange.principal = principal
        upload = await Upload.open(exchange.scope, exchange.receive, self.max_upload_bytes)
        model_id = upload.check()
        if not principal.may_use(model_id):
            raise model_not_found(model_id)
        router = self.router
        route = router.resolve(model_id, endpoint.kind)
        exchange.model = route.model.id
        form = upload.form
        admitting = self.admission.begin(
            principal, route, form, exchange.record_id, endpoint, upload.size, exchange.client_request_id
        )
        router.active += 1
        try:
            async with self._admitted(admitting, exchange) as outcome:
                await self._forward_upload(endpoint, route, upload, form, exchange, outcome)
        finally:
            router.release()

    async def _forward_upload(
        self,
        endpoint: Endpoint,
        route: Route,
        upload: Upload,
        form: dict[str, str],
        exchange: Exchange,
        outcome: Outcome,
    ) -> None:
        def build(target: Target) -> UpstreamRequest:
            return UpstreamRequest(
                path=endpoint.upstream_path,
                body=b"",
                payload=form,
                upstream_model=target.deployment.model,
                stream=False,
                request_id=exchange.request_id,
                public_model=route.model.id,
                upload=upload.body(target.deployment.model),
                content_type=f"multipart/form-data; boundary={upload.boundary.decode('latin-1')}",
            )

        try:
            # One deployment only: the upload can be sent once. No hang-up watch either: the upload
            # itself is what reads from the client.
            exchange.upstream = route.target.provider.name  # admitted: the access line names it
            sent = time.perf_counter()
            opened = await self.dispatcher.open(route, [route.target], build, stream=False)
            exchange.upstream_seconds = time.perf_counter() - sent
            try:
                await relay_answer(endpoint, opened.route, opened.response, exchange, outcome)
            finally:
                opened.release()
        except ApiError as error:
            outcome.status = error.status
            raise
        except ClientDisconnected:
            outcome.client_disconnected = True
            raise

    def _optional_model(self, body: dict[str, Any], endpoint: Endpoint) -> str:
        """Riva's TTS body names no model: Bastion's optional `model` field, else the first TTS model."""
        model = body.get("model")
        if isinstance(model, str) and model.strip():
            return model
        default = self.router.first_serving(endpoint.kind)
        if default is None:
            raise model_not_found("(none)", f"is not set and no model serves the {endpoint.kind} endpoint")
        return default

    async def _parse_body(self, exchange: Exchange) -> tuple[bytes, dict[str, Any], Members]:
        require_json_content_type(exchange.scope)
        raw = await read_body(exchange.scope, exchange.receive, self.max_body_bytes)
        if not raw.strip():
            raise invalid_request("The request body is empty; expected a JSON object.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid_request("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise invalid_request("The request body must be a JSON object.")
        try:
            members = Members.of(raw, body)
        except DuplicateKey as duplicate:
            # Parsers disagree on which of the two counts: what Bastion checks and bills, and what the
            # upstream reads, could be different requests.
            raise invalid_request(
                f"The request body has the top-level key '{duplicate.name}' more than once.", duplicate.name
            ) from None
        return raw, body, members

    async def _forward(self, plan: Forwarding, outcome: Outcome) -> None:
        endpoint, route, exchange = plan.endpoint, plan.route, plan.exchange
        watch = exchange.watch_disconnect()
        opened: Opened | None = None
        exchange.upstream = route.target.provider.name  # admitted: the access line names it
        try:
            plan.sending()
            opened = await self.dispatcher.open(
                route,
                plan.candidates,
                plan.request,
                plan.stream,
                plan.stream_began if plan.stream else None,
                plan.prepared,
            )
            exchange.upstream_seconds = time.perf_counter() - plan.sent
            exchange.upstream = opened.route.target.provider.name
            if plan.stream:
                await relay_stream(plan.relay(opened.route), opened.response, exchange, outcome)
            else:
                await relay_answer(endpoint, opened.route, opened.response, exchange, outcome)
        except ApiError as error:
            outcome.status = error.status
            raise
        except asyncio.CancelledError as cancelled:
            if opened is not None:
                opened.response.abort()
            if not watch.absorb():
                # Not the client: the server's grace period for shutdown ran out, or a second signal
                # came, or an orphan sweep settled this request (this instance was taken for dead).
                await _end_for_bastion(exchange, outcome, SWEPT in cancelled.args)
                raise
            outcome.client_disconnected = True
        finally:
            watch.close()
            if opened is not None:
                opened.release()


async def _end_for_bastion(exchange: Exchange, outcome: Outcome, swept: bool) -> None:
    """Shutdown's grace period is over (or a second signal came), or the request was swept: end a live
    stream with an error event, else answer 503."""
    outcome.status = 503
    await _answer_shutdown(exchange, _SWEPT_ANSWER if swept else _SHUTDOWN_ANSWER)


_SHUTDOWN_ANSWER = "Bastion is shutting down; retry the request."
_SWEPT_ANSWER = (
    "This Bastion instance stopped responding for too long and the request was settled by another one;"
    " retry the request."
)


async def _answer_shutdown(exchange: Exchange, message: str = _SHUTDOWN_ANSWER) -> None:
    try:
        await exchange.fail(service_unavailable(message))
    except Exception:  # the connection may already be gone
        log.debug("could not tell the client about the shutdown", exc_info=True)

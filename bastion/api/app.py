"""The ASGI application: the /v1 hot routes on raw ASGI, everything else on FastAPI.

FastAPI hosts health, the OpenAPI document and (later) the admin API; the dispatcher in front of it
sends the proxied routes straight to `Gateway.handle` so they pay for no per-route framework work.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import signal
import threading
import time
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion import __version__, metrics
from bastion.api import access
from bastion.api.admin import admin_router
from bastion.api.asgi import Message, Receive, Scope, Send, request_id_for
from bastion.api.docs import install_docs
from bastion.api.endpoints import JSON_ENDPOINTS, TRANSCRIPTION, TTS_PATH
from bastion.api.gateway import Gateway
from bastion.api.openapi import install_openapi
from bastion.api.reload import SUPERVISOR_ENV, LoadedModels, ReloadResult
from bastion.api.self_service import SelfService
from bastion.api.stopping import Stopping, requests_ended
from bastion.billing.live import RedisLive
from bastion.config import Catalog, Settings, load_catalog, served_models_file
from bastion.dashboard.links import set_password_link
from bastion.errors import (
    ApiError,
    internal_error,
    invalid_request,
    method_not_allowed,
    not_found,
    service_unavailable,
)
from bastion.logs import flush_access_lines
from bastion.proxy.dispatch import Dispatcher
from bastion.proxy.providers import Provider
from bastion.proxy.routing import Router
from bastion.services import Services

log = logging.getLogger("bastion")


def catalog_for(settings: Settings) -> Catalog:
    return load_catalog(served_models_file(settings))


class BastionApp:
    def __init__(self, settings: Settings, catalog: Catalog, own_process: bool = False) -> None:
        self.settings = settings
        # `bastion serve`: the process is ours to tune (garbage collector) and to signal (SIGHUP)
        self.own_process = own_process
        self.models = LoadedModels(catalog)  # its providers and version; reloaded in place
        self.services = Services(settings, served_models=lambda: self.catalog.models)
        self.draining = False
        self.stop_signals = Stopping(self._drain)
        self._metrics_flush: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[ReloadResult]] = set()
        self._sighup_pending = False  # a SIGHUP before startup could take it: reload once started
        self._sighup_installed = False
        if own_process and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._sighup_before_startup)  # SIGHUP's default would end us
        self.gateway = Gateway(
            self.models.router(catalog),
            authenticator=self.services.authenticator,
            admission=self.services.admission,
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            dispatcher=Dispatcher(
                settings.breaker_threshold, settings.breaker_cooldown_seconds, on_event=metrics.upstream_event
            ),
            running=self.services.running,
        )
        self.self_service = SelfService(
            self.services.authenticator,
            self.services.admission,
            self.services.store.request_usage,
            settings.ledger_flush_seconds,
        )
        self.endpoints = {endpoint.path: endpoint for endpoint in JSON_ENDPOINTS}
        self.documented = [*self.endpoints, TRANSCRIPTION.path]
        self.web = build_web_app(self)

    @property
    def router(self) -> Router:
        return self.gateway.router

    @property
    def catalog(self) -> Catalog:
        """The models file in service (the dashboard reads it through this, at each page)."""
        return self.gateway.router.catalog

    @property
    def providers(self) -> dict[str, Provider]:
        return self.models.providers

    @property
    def dispatcher(self) -> Dispatcher:
        return self.gateway.dispatcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            endpoint = self.endpoints.get(path)
            if path == "/v1/audio/speech":
                await self.gateway.reject(_SPEECH_ELSEWHERE, scope, receive, send)
            elif path == TRANSCRIPTION.path:
                if scope["method"] == "POST":
                    await self.gateway.handle_upload(TRANSCRIPTION, scope, receive, send)
                else:
                    await self.gateway.reject(
                        method_not_allowed(scope["method"], path, "POST"), scope, receive, send
                    )
            elif path == "/v1/key":
                if scope["method"] == "GET":
                    await self.gateway.handle_with(self.self_service.key, None, scope, receive, send)
                else:
                    await self.gateway.reject(
                        method_not_allowed(scope["method"], path, "GET"), scope, receive, send
                    )
            elif path.startswith("/v1/requests/"):
                await self._request_record(scope, receive, send, path[len("/v1/requests/") :])
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                await self._models(
                    scope, receive, send, path[len("/v1/models/") :] if path != "/v1/models" else None
                )
            elif endpoint is None:
                await self.web(scope, receive, _with_edge_headers(send, request_id_for(scope)))
            elif scope["method"] == "POST":
                await self.gateway.handle(endpoint, scope, receive, send)
            else:
                error = method_not_allowed(scope["method"], scope["path"], "POST")
                await self.gateway.reject(error, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.web(scope, receive, send)

    async def _models(self, scope: Scope, receive: Receive, send: Send, model_id: str | None) -> None:
        if scope["method"] == "GET" and model_id != "":
            await self.gateway.handle_models(scope, receive, send, model_id)
        elif model_id == "":
            await self.gateway.reject(not_found(scope["path"]), scope, receive, send)
        else:
            await self.gateway.reject(
                method_not_allowed(scope["method"], scope["path"], "GET"), scope, receive, send
            )

    async def _key(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            await self.gateway.handle_with(self.self_service.key, None, scope, receive, send)
        else:
            error = method_not_allowed(scope["method"], scope["path"], "GET")
            await self.gateway.reject(error, scope, receive, send)

    async def _request_record(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        if not request_id or "/" in request_id:
            await self.gateway.reject(not_found(scope["path"]), scope, receive, send)
        elif scope["method"] != "GET":
            error = method_not_allowed(scope["method"], scope["path"], "GET")
            await self.gateway.reject(error, scope, receive, send)
        else:
            work = self.self_service.request_record
            await self.gateway.handle_with(work, request_id, scope, receive, send)

    async def startup(self) -> None:
        self._watch_for_stop_signals()
        await self.services.start()
        await self.models.start()
        self._watch_for_sighup()
        self._metrics_flush = asyncio.create_task(metrics.flush_every(), name="bastion-metrics")
        if self.own_process:
            tune_garbage_collector()
        log.info(
            "bastion %s serving %d models from %s (sha256 %s)",
            __version__,
            len(self.catalog.models),
            self.catalog.source,
            self.models.version.sha256[:12],
        )

    async def reload_models(self, trigger: str = "call") -> ReloadResult:
        """Read the models file again and serve it if it is valid (else keep the one in service)."""
        return await self.models.reload(self.gateway, trigger)

    async def reload_all_workers(self, trigger: str) -> ReloadResult:
        """This process reloads; under `bastion serve --workers N`, the supervisor is then signalled,
        which makes every worker reload (this one again: its file is unchanged by then, a no-op)."""
        result = await self.reload_models(trigger)
        supervisor = os.environ.get(SUPERVISOR_ENV)
        if result.ok and supervisor and supervisor == str(os.getppid()):
            os.kill(int(supervisor), signal.SIGHUP)
        return result

    def _watch_for_sighup(self) -> None:
        """SIGHUP reloads the models file (installed on the event loop, in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            return
        self._sighup_installed = True
        if self._sighup_pending:
            self._on_sighup()

    def _sighup_before_startup(self, signum: int, frame: Any) -> None:
        self._sighup_pending = True

    def _on_sighup(self) -> None:
        self._sighup_pending = False
        task = asyncio.get_running_loop().create_task(self.reload_models("SIGHUP"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _unwatch_sighup(self) -> None:
        if self._sighup_installed:
            self._sighup_installed = False
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if self.own_process:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # shutting down: nothing left to reload

    def _watch_for_stop_signals(self) -> None:
        """The first SIGINT or SIGTERM marks the process as draining (then uvicorn's handler runs); the
        second ends every request at once, each settled (bastion/api/stopping.py)."""
        self.stop_signals.install()

    def _drain(self) -> None:
        self.draining = True
        self.gateway.stopping = True

    async def readiness(self) -> list[str]:
        """What keeps this process from serving: empty when ready."""
        problems = ["shutting down"] if self.draining else []
        checks = {"database": self.services.store.ping()}
        live = self.services.live
        if isinstance(live, RedisLive):
            checks["redis"] = live.redis.ping()
        for name, check in checks.items():
            try:
                async with asyncio.timeout(2):
                    await check
            except Exception as exc:
                problems.append(f"{name} unreachable ({type(exc).__name__})")
        if not all(p.started for p in self.providers.values()):
            problems.append("upstream providers not started")
        return problems

    async def shutdown(self) -> None:
        self._unwatch_sighup()
        if self._reloads:
            await asyncio.gather(*self._reloads, return_exceptions=True)
        self.gateway.stopping = True  # cancellations from here on are the server's, not a client's
        await requests_ended()  # (uvicorn cancels what outlives its grace period, then comes here)
        access.drain()
        flush_access_lines()
        if self._metrics_flush is not None:
            self._metrics_flush.cancel()
            await asyncio.gather(self._metrics_flush, return_exceptions=True)
        await self.models.close()
        await self.services.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


_SPEECH_ELSEWHERE = ApiError(
    404,
    "not_found",
    "invalid_request_error",
    f"Bastion serves text to speech with NVIDIA Riva's contract at POST {TTS_PATH} (JSON: text, "
    "language_code, voice_name, sample_rate_hz, encoding); OpenAI's /v1/audio/speech is not served.",
)


def _with_edge_headers(send: Send, request_id: str) -> Send:
    """What every answer carries, on the routes FastAPI serves too: the request id and Bastion's time
    (Server-Timing, up to the head: these answers are not streamed)."""
    encoded = request_id.encode("ascii")
    started = time.perf_counter()

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            timing = f"gateway;dur={(time.perf_counter() - started) * 1000:.2f}".encode()
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", encoded),
                (b"server-timing", timing),
            ]
        await send(message)

    return send_with_headers


def _envelope(error: ApiError) -> Response:
    return Response(
        error.body(), status_code=error.status, headers=error.headers, media_type="application/json"
    )


def build_web_app(bastion: BastionApp) -> FastAPI:
    web = FastAPI(title="Bastion", version=__version__, docs_url=None, redoc_url=None)  # bastion/api/docs.py

    @web.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _envelope(not_found(request.url.path))
        if exc.status_code == 405:
            allowed = next((v for k, v in (exc.headers or {}).items() if k.lower() == "allow"), "")
            return _envelope(method_not_allowed(request.method, request.url.path, allowed))
        return _envelope(
            ApiError(exc.status_code, "invalid_request", "invalid_request_error", str(exc.detail))
        )

    @web.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _envelope(exc)

    @web.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _envelope(invalid_request(str(first.get("msg", "Invalid request.")), param))

    @web.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("internal error path=%s", request.url.path, exc_info=exc)
        return _envelope(internal_error())

    @web.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive (no dependency is checked)."""
        return {"status": "ok"}

    @web.get("/metrics", tags=["operations"], response_model=None)
    async def metrics_page(request: Request) -> Response:
        """Prometheus metrics (every worker's). With BASTION_METRICS_TOKEN set, a bearer token is required."""
        token = bastion.settings.metrics_token
        if token and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
        ):
            return _envelope(
                ApiError(401, "invalid_api_key", "authentication_error", "Invalid metrics token.")
            )
        access.drain()  # requests that ended a moment ago count
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @web.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> dict[str, Any] | Response:
        """Ready to serve: database, Redis (when used) and upstream pools; 503 naming what is not. Also
        which models file this process serves (path, sha256, when it was loaded)."""
        problems = await bastion.readiness()
        if problems:
            return _envelope(service_unavailable("Not ready: " + "; ".join(problems) + "."))
        return {"status": "ready", "models_file": bastion.models.version.as_json()}

    if bastion.settings.admin_token:
        link_for = partial(set_password_link, bastion.settings)
        web.include_router(
            admin_router(
                bastion.services.management,
                bastion.settings.admin_token,
                link_for,
                partial(bastion.reload_all_workers, "admin API"),
            )
        )
    if bastion.settings.dashboard:
        from bastion.dashboard.app import build_dashboard  # its templates and hashing load only when it is on

        web.mount("/dashboard", build_dashboard(bastion, bastion.services))

        @web.get("/", include_in_schema=False)
        async def root() -> Response:
            return RedirectResponse("/dashboard/", status_code=307)

    install_openapi(web, bastion.documented)
    install_docs(web)
    return web


def tune_garbage_collector() -> None:
    """Keep the cycle collector off the request path.

    Everything loaded at startup (modules, FastAPI, SQLAlchemy, pydantic models, pools) is frozen out of
    the collector's view, so a full collection scans only what requests created since: at 4,500 req/s
    full collections came twice a second and took 45-70 ms each over the whole heap (JSON p99 at c=32
    47 ms -> 11 ms). Request objects die by reference counting, so young collections can run 30x less
    often (threshold 700 -> 20,000): +5 % req/s at c=32.
    """
    gc.set_threshold(20_000, 20, 10)
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> BastionApp:
    """uvicorn's factory (`bastion serve --workers N`): settings from the environment, the models file."""
    settings = settings or Settings()
    return BastionApp(settings, catalog_for(settings), own_process=True)

"""OpenAI-compatible HTTP upstreams (vLLM, hosted endpoints), each over one keep-alive pool.

The pool is `bastion.proxy.http11` (httptools parsing, one write per request): aiohttp's client, used
before, cost ~120 us of CPU per request on this machine, httpx's pool served ~10x less than aiohttp
under concurrency (shared/PERFORMANCE.md). Client-facing messages name the public model only: failure
details carry the upstream's address, so they go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bastion import __version__
from bastion.config import ProviderConfig
from bastion.errors import ApiError, upstream_error
from bastion.proxy.http11 import Http11Pool, Http11Response, UpstreamFailure
from bastion.proxy.http11.prepared import PreparedPost
from bastion.proxy.providers.base import PreparedSend, Provider, UpstreamRequest, UpstreamResponse

log = logging.getLogger("bastion.upstream")
_FINISH_GRACE_SECONDS = 1.0
_JSON_ACCEPT = (("accept", "*/*"),)
# A compressed event stream would be buffered by the compressor: ask for it plain.
_STREAM_ACCEPT = (("accept", "text/event-stream"), ("accept-encoding", "identity"))


class HttpProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        assert config.base_url is not None
        self._base_url = config.base_url
        self._headers: dict[str, str] = {"user-agent": f"bastion/{__version__}", **config.headers}
        if config.api_key is not None:
            self._headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._pool: Http11Pool | None = None

    async def start(self) -> None:
        await super().start()
        timeouts = self.config.timeouts
        self._pool = Http11Pool(
            self._base_url,
            self._headers.items(),
            max_connections=self.config.max_connections,
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
        )

    async def close(self) -> None:
        self.started = False
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def secrets(self) -> tuple[str, ...]:
        found = [self._base_url]
        if self.config.api_key is not None:
            found.append(self.config.api_key.get_secret_value())
        return tuple(s for s in found if s)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._pool is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        body = request.upload if request.upload is not None else request.body
        try:
            response = await self._pool.post(request.path, _request_headers(request), body)
        except UpstreamFailure as exc:
            raise self._failure(exc, request.public_model, "request") from None
        return _HttpResponse(response, self, request.public_model)

    def prepare(self, request: UpstreamRequest) -> PreparedSend | None:
        if self._pool is None or request.upload is not None:
            return None
        post = self._pool.prepare(request.path, _request_headers(request), request.body)
        return None if post is None else _PreparedHttp(post, self, request.public_model)

    def _failure(self, exc: UpstreamFailure, model: str, stage: str) -> ApiError:
        log.warning("upstream failure provider=%s stage=%s model=%s error=%s", self.name, stage, model, exc)
        if exc.kind == "connect_timeout":
            return upstream_error(f"Timed out connecting to the upstream for model '{model}'.")
        if exc.kind == "read_timeout":
            read_timeout = self.config.timeouts.read
            return upstream_error(f"The upstream for model '{model}' sent nothing for {read_timeout:g} s.")
        if exc.kind == "connect":
            return upstream_error(f"Could not connect to the upstream for model '{model}'.")
        if exc.kind == "disconnected":
            return upstream_error(f"The upstream for model '{model}' closed the connection mid-answer.")
        return upstream_error(f"The upstream for model '{model}' sent a malformed answer.")


def _request_headers(request: UpstreamRequest) -> tuple[tuple[str, str], ...]:
    return (
        ("content-type", request.content_type),
        ("x-request-id", request.request_id),
        *(_STREAM_ACCEPT if request.stream else _JSON_ACCEPT),
    )


class _PreparedHttp(PreparedSend):
    __slots__ = ("_model", "_post", "_provider")

    def __init__(self, post: PreparedPost, provider: HttpProvider, model: str) -> None:
        self._post, self._provider, self._model = post, provider, model

    def send(self) -> None:
        self._post.send()

    async def response(self) -> UpstreamResponse:
        try:
            response = await self._post.response()
        except UpstreamFailure as exc:
            raise self._provider._failure(exc, self._model, "request") from None
        return _HttpResponse(response, self._provider, self._model)

    def cancel(self) -> None:
        self._post.cancel()


class _HttpResponse(UpstreamResponse):
    __slots__ = ("_model", "_provider", "_response", "content_type", "headers", "status")

    def __init__(self, response: Http11Response, provider: HttpProvider, model: str) -> None:
        self._response = response
        self._provider = provider
        self._model = model
        self.status = response.status
        self.content_type = response.content_type
        self.headers: Mapping[str, str] = response.headers  # lower-case names

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except UpstreamFailure as exc:
            raise self._provider._failure(exc, self._model, "read") from None

    async def next_chunk(self) -> bytes | None:
        try:
            return await self._response.next_chunk()
        except UpstreamFailure as exc:
            self._response.abort()
            raise self._provider._failure(exc, self._model, "stream") from None

    def release(self) -> None:
        self._response.release()

    async def finish(self) -> None:
        # After [DONE] the upstream's end of body is normally already in; an upstream that keeps the
        # stream open after it loses its connection instead of holding this task.
        if await self._response.drain(_FINISH_GRACE_SECONDS):
            self._response.release()
        else:
            self._response.abort()

    def abort(self) -> None:
        self._response.abort()

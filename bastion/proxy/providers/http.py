"""OpenAI-compatible HTTP upstreams (vLLM, hosted endpoints) over one pooled aiohttp session each.

aiohttp rather than httpx for the upstream leg: on this machine a minimal proxy on httpx's pool served
~700 req/s at 32 connections against ~7,500 on aiohttp (shared/PERFORMANCE.md). Client-facing messages
name the public model only: aiohttp's own exception texts carry the upstream URL, so they go to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp

from bastion import __version__
from bastion.config import ProviderConfig
from bastion.errors import ApiError, ClientDisconnected, upstream_error
from bastion.proxy.providers.base import Provider, UpstreamRequest, UpstreamResponse

log = logging.getLogger("bastion.upstream")
_FINISH_GRACE_SECONDS = 1.0


class HttpProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        assert config.base_url is not None
        self._base_url = config.base_url
        self._headers: dict[str, str] = {"user-agent": f"bastion/{__version__}", **config.headers}
        if config.api_key is not None:
            self._headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await super().start()
        timeouts = self.config.timeouts
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.config.max_connections, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read),
            headers=self._headers,
        )

    async def close(self) -> None:
        self.started = False
        if self._session is not None:
            await self._session.close()
            self._session = None

    def secrets(self) -> tuple[str, ...]:
        found = [self._base_url]
        if self.config.api_key is not None:
            found.append(self.config.api_key.get_secret_value())
        return tuple(s for s in found if s)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._session is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        headers = {
            "content-type": request.content_type,
            "x-request-id": request.request_id,
            # A compressed event stream would be buffered by the compressor: ask for it plain.
            "accept": "text/event-stream" if request.stream else "*/*",
            **({"accept-encoding": "identity"} if request.stream else {}),
        }
        try:
            response = await self._session.post(
                self._base_url + request.path,
                data=request.upload if request.upload is not None else request.body,
                headers=headers,
            )
        except Exception as exc:
            raise self._failure(exc, request.public_model, "request") from None
        return _HttpResponse(response, self, request.public_model)

    def _failure(self, exc: BaseException, model: str, stage: str) -> ApiError:
        client_side = _client_side_cause(exc)
        if client_side is not None:  # the client's upload broke off or was malformed: not the upstream
            raise client_side
        log.warning(
            "upstream failure provider=%s stage=%s model=%s error=%s: %s",
            self.name,
            stage,
            model,
            type(exc).__name__,
            exc,
        )
        read_timeout = self.config.timeouts.read
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return upstream_error(f"Timed out connecting to the upstream for model '{model}'.")
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return upstream_error(f"The upstream for model '{model}' sent nothing for {read_timeout:g} s.")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return upstream_error(f"Could not connect to the upstream for model '{model}'.")
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return upstream_error(f"The upstream for model '{model}' closed the connection mid-answer.")
        if isinstance(exc, aiohttp.ClientError):
            return upstream_error(f"The upstream for model '{model}' failed ({type(exc).__name__}).")
        raise exc


def _client_side_cause(exc: BaseException) -> BaseException | None:
    """aiohttp wraps what a streamed request body raised; find the client's own error under it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ApiError | ClientDisconnected):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _HttpResponse(UpstreamResponse):
    __slots__ = ("_model", "_provider", "_response", "content_type", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, provider: HttpProvider, model: str) -> None:
        self._response = response
        self._provider = provider
        self._model = model
        self.status = response.status
        self.content_type = response.content_type.lower()
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Exception as exc:
            self._response.close()
            raise self._provider._failure(exc, self._model, "read") from None
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._response.close()
            raise self._provider._failure(exc, self._model, "stream") from None

    def release(self) -> None:
        self._response.release()

    async def finish(self) -> None:
        # After [DONE] the upstream's end of body is normally already in flight; an upstream that
        # keeps the stream open after it loses its connection instead of holding this task.
        content = self._response.content
        if not content.at_eof():
            try:
                async with asyncio.timeout(_FINISH_GRACE_SECONDS):
                    while await content.readany():
                        pass
            except (TimeoutError, aiohttp.ClientError):
                self._response.close()
                return
        self._response.release()

    def abort(self) -> None:
        self._response.close()

"""The provider interface: what the request path needs from an upstream, HTTP or built in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.config import ProviderConfig


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class UpstreamRequest:
    path: str  # relative to the provider's base URL, e.g. "/chat/completions"
    body: bytes  # exactly what goes on the wire (empty for an upload)
    payload: dict[str, Any]  # the client's body, parsed (its `model` is still the public id)
    upstream_model: str
    stream: bool
    request_id: str
    public_model: str  # for messages only; never sent upstream
    upload: AsyncIterator[bytes] | None = None  # a streamed multipart body, sent as it arrives
    content_type: str = "application/json"


class UpstreamResponse(ABC):
    """An upstream answer whose headers have arrived; the body is read or streamed next."""

    status: int
    content_type: str  # lower-case media type without parameters
    headers: Mapping[str, str]

    @abstractmethod
    async def read(self) -> bytes:
        """The whole body. Raises ApiError(502) if the upstream breaks off."""

    @abstractmethod
    async def next_chunk(self) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some), or None at its end.
        Raises ApiError(502) if the upstream breaks off or stalls. A plain coroutine rather than an
        async generator: a stream's relay calls it per read, through every wrapper."""

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (`next_chunk` until the end)."""
        while (data := await self.next_chunk()) is not None:
            yield data

    @abstractmethod
    def release(self) -> None:
        """The body was consumed: the connection may serve another request."""

    async def finish(self) -> None:
        """The client has its answer: let the upstream end its body (so the connection is reused)."""
        self.release()

    @abstractmethod
    def abort(self) -> None:
        """Stop now: close the upstream connection so the upstream stops generating."""


class PreparedSend(ABC):
    """A request made ready to leave at once (a connection taken, its bytes built): `send` writes it
    (once; callable from an event-loop callback), `response` awaits the answer's headers, `cancel`
    undoes it if it will not be used (closing the connection if it was already sent)."""

    @abstractmethod
    def send(self) -> None: ...

    @abstractmethod
    async def response(self) -> UpstreamResponse: ...

    @abstractmethod
    def cancel(self) -> None: ...


class Provider(ABC):
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.started = False

    async def start(self) -> None:
        """Open pools; called once at application start."""
        self.started = True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close pools; called once at application shutdown."""

    @abstractmethod
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send the request; return once the upstream's status and headers are in."""

    def prepare(self, request: UpstreamRequest) -> PreparedSend | None:
        """`request` made ready to be sent the moment admission allows it, or None when this provider
        cannot (then `send` does it all once allowed)."""
        return None

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a client (keys, internal URLs)."""
        return ()

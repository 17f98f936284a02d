"""A real local HTTP mock of an OpenAI-compatible upstream (vLLM-like) for Bastion's tests.

``MockUpstream`` runs an ``aiohttp.web`` server on 127.0.0.1 in a daemon thread with its own
event loop. The behaviour of each ``POST /v1/...`` request is selected by the body's ``"model"``
string (``echo``, ``slow``, ``gated``, ``drop``, ``status:503``, ...; see ``_handle``). Unknown
models behave like ``echo``. Stream-only modes answer non-streaming requests like ``echo``
(except ``hang-after-first``, which then behaves like ``hang``; ``garbage-stream`` always answers
HTML; ``late-eof`` ends its body 100 ms after ``[DONE]``; ``no-usage`` never reports usage and
``zero-usage`` reports zeros; ``flood`` streams FLOOD_EVENTS events of FLOOD_EVENT_BYTES as fast as
the reader takes them, see ``MockUpstream.flooded``). Requests are keyed by their
``x-request-id`` header (else ``"req-N"``), see ``RecordedRequest.key``.

Other endpoints answer by PATH (builders in tests/upstream_surface.py): ``/v1/completions``,
``/v1/embeddings``, ``/v1/images/generations``, ``/v1/audio/transcriptions`` (multipart, streamed:
see ``MockUpstream.multipart``), ``/v1/responses`` and the Riva TTS route
``/api/v1/tts/text_to_audio`` (mode from ``voice_name``: ``error500``, ``status:NNN``, ``hang``).
The failure modes (``error500``, ``status:NNN``, ``bad400``, ``garbage``, ``hang``, ``drop``, ...)
apply to every ``/v1`` path; any other ``/v1`` path answers like chat completions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import upstream_surface as surface
from aiohttp import ClientConnectionResetError, ClientPayloadError, web

CREATED = 1735689600
ECHO_PIECES = ["Hel", "lo", " world"]
THINK_PIECES = ["<think>", "pondering", "</think>", "The answer"]
FIXED_USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
FLOOD_EVENTS = 4000
FLOOD_EVENT_BYTES = 16 * 1024


def _oai_error(message: str, type_: str, code: str | None, **extra: object) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, **extra, "code": code}}


_SECRET_MSG = "internal boom at http://10.9.8.7:8000/v1 with key sk-prov-SECRET"
_TOOLS_MSG = "This model does not support tools"
_VLLM_ERROR = {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError"}
_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "error500": (500, _oai_error(_SECRET_MSG, "server_error", None)),
    "bad400": (400, _oai_error(_TOOLS_MSG, "invalid_request_error", "unsupported_parameter", param="tools")),
    "vllm400": (400, {**_VLLM_ERROR, "param": None, "code": 400}),
    "unauth401": (
        401,
        _oai_error("Incorrect API key provided: sk-prov-SECRET", "invalid_request_error", "invalid_api_key"),
    ),
    "ratelimited429": (429, _oai_error("Rate limit reached", "requests", "rate_limit_exceeded", param=None)),
}


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    json: object | None
    received_at: float
    key: str = ""
    peer: tuple[str, int] | None = None  # the client's address: same peer, same pooled connection


def _user_text(body: object) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    for msg in reversed(messages if isinstance(messages, list) else []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
            return ""
    return ""


class _Stream:
    """An SSE response that checks the peer before every write and records disconnects."""

    def __init__(self, mock: MockUpstream, request: web.Request, key: str, model: str, usage: bool) -> None:
        self.mock, self.request, self.key, self.model, self.usage = mock, request, key, model, usage
        self.resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        self.resp.enable_chunked_encoding()
        self.pieces = 0

    def peer_gone(self) -> bool:
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.mock._mark_closed(self.key)
            return True
        return False

    async def write(self, data: bytes) -> bool:
        if self.peer_gone():
            return False
        try:
            await self.resp.write(data)
        except (ConnectionResetError, ClientConnectionResetError):
            self.mock._mark_closed(self.key)
            return False
        return True

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED}
        return {**obj, "model": self.model, "choices": [choice], **extra}

    async def event(self, obj: dict[str, Any]) -> bool:
        return await self.write(b"data: " + self.mock._dumps(obj, self.model).encode() + b"\n\n")

    async def role(self) -> bool:
        return await self.event(self.chunk({"role": "assistant", "content": ""}))

    async def content(self, text: str) -> bool:
        self.pieces += 1
        return await self.event(self.chunk({"content": text}))

    async def finish(self, done: bool = True) -> bool:
        ok = await self.event(self.chunk({}, "stop"))
        if ok and self.usage:
            n = self.pieces
            usage = {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n}
            if self.model == "zero-usage":
                usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            ok = await self.event({**self.chunk({}), "choices": [], "usage": usage})
        if ok and done:
            ok = await self.write(b"data: [DONE]\n\n")
        return ok


class MockUpstream:
    """OpenAI-compatible mock upstream server. Use as a context manager or start()/stop()."""

    def __init__(self, port: int = 0) -> None:
        self._wanted_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._closed: dict[str, float] = {}
        self._finished: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._gates: dict[str, threading.Event] = {}
        self._gate_by_test: dict[str, bool] = {}
        self._flooded: dict[str, int] = {}
        self._multipart: dict[str, dict[str, Any]] = {}
        self._counter = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> MockUpstream:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, errors), daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"MockUpstream failed to start: {errors!r}")
        return self

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._wanted_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._loop = self._thread = self._runner = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MockUpstream not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server root (no ``/v1``), e.g. for the Riva TTS route ``/api/v1/tts/text_to_audio``."""
        return f"http://127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._closed.clear()
            self._gates.clear()
            self._gate_by_test.clear()
            self._multipart.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests
            if len(reqs) >= n:
                return reqs
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {n} upstream requests, got {len(reqs)}")
            time.sleep(0.005)

    def multipart(self, key: str) -> dict[str, Any] | None:
        """The streamed multipart/form-data of request ``key``, or None (not multipart / not seen).

        ``{"fields": {name: str}, "file": {"name", "filename", "content_type", "size", "sha256"} | None,
        "order": [part names in body order]}``; the file itself is never kept, only counted and hashed.
        """
        with self._lock:
            return self._multipart.get(key)

    def flooded(self, key: str) -> int:
        """Events of the `flood` stream for `key` written so far (each write returns once the
        connection took it: a reader that stops reading stops the count)."""
        with self._lock:
            return self._flooded.get(key, 0)

    def wait_closed(self, key: str, timeout: float = 5.0) -> float | None:
        """time.monotonic() at which the server noticed the client went away, or None."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ts = self._closed.get(key)
            if ts is not None or time.monotonic() >= deadline:
                return ts
            time.sleep(0.005)

    def wait_started(self, key: str, timeout: float = 5.0) -> float | None:
        """time.monotonic() at which a request for `key` began to arrive (headers in), or None."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ts = self._started.get(key)
            if ts is not None or time.monotonic() >= deadline:
                return ts
            time.sleep(0.002)

    def wait_finished(self, key: str, timeout: float = 5.0) -> float | None:
        """time.monotonic() at which the handler for `key` returned (its body then ends), or None."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ts = self._finished.get(key)
            if ts is not None or time.monotonic() >= deadline:
                return ts
            time.sleep(0.002)

    def _gate(self, key: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(key, threading.Event())

    def open_gate(self, key: str) -> None:
        self._gate(key).set()

    def gate_opened_by_test(self, key: str) -> bool:
        with self._lock:
            return self._gate_by_test.get(key, False)

    async def _hang(self, request: web.Request, key: str) -> None:
        """Say nothing for 60 s, but record when the client goes away (polling the transport)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self._mark_closed(key)
                return
            await asyncio.sleep(0.01)

    def _mark_closed(self, key: str) -> None:
        with self._lock:
            self._closed.setdefault(key, time.monotonic())

    @staticmethod
    def _dumps(obj: object, model: str) -> str:
        if model == "spaced":
            return json.dumps(obj)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    def _json(self, obj: object, model: str, status: int = 200, **headers: str) -> web.Response:
        return web.Response(
            status=status, text=self._dumps(obj, model), content_type="application/json", headers=headers
        )

    # ---------------------------------------------------------------- handlers
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        routed = request.path.startswith("/v1/") or request.path == surface.TTS_PATH
        if request.method != "POST" or not routed:
            err = {"error": {"message": f"no route {request.method} {request.path}", "type": "not_found"}}
            return self._json(err, "", status=404)
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._started[request.headers.get("x-request-id", "")] = time.monotonic()
        self._tasks.add(task)
        try:
            return await self._handle(request)
        finally:
            self._tasks.discard(task)
            with self._lock:
                self._finished[request.headers.get("x-request-id", "")] = time.monotonic()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, Any] | None = None
        body: Any
        if request.content_type.startswith("multipart/"):
            key = request.headers.get("x-request-id") or f"req-{next(self._counter)}"
            try:
                form = await surface.read_multipart(request)
            except (ConnectionError, ClientPayloadError):  # the client went away mid-upload
                self._mark_closed(key)
                return web.Response(status=400, text="client went away")
            except ValueError as exc:  # not a usable multipart body
                return self._json(surface.error(f"malformed multipart body: {exc}"), "", 400)
            raw, body = b"", dict(form["fields"])
        else:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            key = request.headers.get("x-request-id") or f"req-{next(self._counter)}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(request.path, headers, raw, body, time.monotonic(), key, peer)
        with self._lock:
            self._requests.append(rec)
            if form is not None:
                self._multipart[key] = form
        body = body if isinstance(body, dict) else {}
        if request.path == surface.TTS_PATH:
            return await self._tts(request, key, body)
        model = body.get("model") if isinstance(body.get("model"), str) else "mock"
        stream = body.get("stream") is True
        opts = body.get("stream_options")
        usage = isinstance(opts, dict) and opts.get("include_usage") is True

        if model in _ERRORS:
            status, payload = _ERRORS[model]
            extra = {"Retry-After": "7"} if status == 429 else {}
            return self._json(payload, model, status, **extra)
        if model.startswith("status:") and model[7:].isdigit():
            payload = {"error": {"message": f"upstream said {model[7:]}", "type": "upstream", "code": None}}
            return self._json(payload, model, int(model[7:]))
        if model == "garbage":
            return web.Response(text="<html>not json</html>", content_type="application/json")
        if model == "garbage-stream":
            return web.Response(text="<html>nope</html>", content_type="text/html")
        if model == "hang" or (model == "hang-after-first" and not stream):
            await self._hang(request, key)
        if model == "drop" and not stream:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = 1000
            await resp.prepare(request)
            await resp.write(b'{"id":"cha')
            await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.abort()
            return resp
        if request.path in surface.PATHS:
            return await self._by_path(request, key, body, model, stream, usage)
        if stream:
            s = _Stream(self, request, key, model, usage and model != "no-usage")
            await s.resp.prepare(request)
            try:
                await self._stream(s, model)
            except asyncio.CancelledError:
                s.peer_gone()
                raise
            return s.resp

        message: dict[str, Any] = {"role": "assistant", "content": "echo: " + _user_text(body)}
        if model == "think":
            message["content"] = "".join(THINK_PIECES)
        elif model == "reasoning":
            message.update(content="The answer", reasoning_content="Let me think.")
        answer = {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": FIXED_USAGE,
        }
        if model == "no-usage":
            del answer["usage"]
        elif model == "zero-usage":
            answer["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return self._json(answer, model)

    async def _stream(self, s: _Stream, model: str) -> None:
        if model == "fragmented":
            await self._fragmented(s)
            return
        if not await s.role():
            return
        if model == "slow":
            deadline = time.monotonic() + 30
            for n in itertools.count(1):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.1)
                if not await s.content(f"tick {n} "):
                    return
        elif model == "gated":
            if not await s.content("first"):
                return
            gate, deadline = self._gate(s.key), time.monotonic() + 10
            while not gate.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110 (threading.Event)
                await asyncio.sleep(0.005)
            with self._lock:
                self._gate_by_test[s.key] = gate.is_set()
            if not await s.content(" second"):
                return
        elif model == "flood":
            for n in range(FLOOD_EVENTS):
                label = f"[{n}]"
                if not await s.content(label + "x" * (FLOOD_EVENT_BYTES - len(label))):
                    return
                with self._lock:
                    self._flooded[s.key] = n + 1
        elif model == "hang-after-first":
            await s.content("first")
            await self._hang(s.request, s.key)
            return
        elif model == "drop":
            if await s.content("a") and await s.content("b"):
                await asyncio.sleep(0.05)
                if s.request.transport is not None:
                    s.request.transport.abort()
            return
        elif model == "reasoning":
            deltas = [
                {"reasoning_content": "Let me "},
                {"reasoning_content": "think."},
                {"reasoning": "ovh-style"},
            ]
            for delta in deltas:
                if not await s.event(s.chunk(delta)):
                    return
            for text in ("The ", "answer"):
                if not await s.content(text):
                    return
        else:
            for text in THINK_PIECES if model == "think" else ECHO_PIECES:
                if not await s.content(text):
                    return
        if model == "usage-in-final":
            if await s.event(s.chunk({}, "stop", usage=FIXED_USAGE)):
                await s.write(b"data: [DONE]\n\n")
            return
        if await s.finish(done=model != "nodone") and model == "late-eof":
            await asyncio.sleep(0.1)  # [DONE] is out; the end of the chunked body comes later

    async def _fragmented(self, s: _Stream) -> None:
        def ev(obj: dict[str, Any], sep: str = " ") -> bytes:
            return f"data:{sep}{self._dumps(obj, s.model)}\r\n\r\n".encode()

        parts = [ev(s.chunk({"role": "assistant", "content": ""})), b": keep-alive\r\n\r\n"]
        parts += [ev(s.chunk({"content": "Hel"})), ev(s.chunk({"content": "lo"}), sep=""), b":\r\n\r\n"]
        parts += [ev(s.chunk({"content": " world"})), ev(s.chunk({}, "stop"))]
        if s.usage:
            parts.append(ev({**s.chunk({}), "choices": [], "usage": {**FIXED_USAGE}}))
        data = b"".join(parts) + b"data: [DONE]\r\n\r\n"
        for i in range(0, len(data), 7):
            if not await s.write(data[i : i + 7]):
                return
            await asyncio.sleep(0.002)

    # ---------------------------------------------------------------- other endpoints (by path)
    async def _sse(
        self, request: web.Request, key: str, model: str, events: list[bytes]
    ) -> web.StreamResponse:
        s = _Stream(self, request, key, model, usage=False)
        await s.resp.prepare(request)
        for data in events:
            if not await s.write(data):
                break
        return s.resp

    async def _by_path(
        self, request: web.Request, key: str, body: dict[str, Any], model: str, stream: bool, usage: bool
    ) -> web.StreamResponse:
        if request.path == surface.TRANSCRIPTIONS_PATH:
            return self._transcription(key, model)
        if stream and request.path == surface.COMPLETIONS_PATH:
            chunks = surface.completion_chunks(model, usage)
            events = [f"data: {self._dumps(c, model)}\n\n".encode() for c in chunks]
            return await self._sse(request, key, model, [*events, b"data: [DONE]\n\n"])
        if stream and request.path == surface.RESPONSES_PATH:
            pairs = surface.responses_events(body, model)
            events = [f"event: {n}\ndata: {self._dumps(d, model)}\n\n".encode() for n, d in pairs]
            return await self._sse(request, key, model, events)
        return self._json(surface.JSON_BUILDERS[request.path](body, model), model)

    def _transcription(self, key: str, model: str) -> web.Response:
        form = self.multipart(key)
        if form is None:
            return self._json(surface.error("expected multipart/form-data"), model, 400)
        if form["file"] is None:
            return self._json(surface.error("file is required", param="file"), model, 400)
        ctype, answer = surface.transcription(form["fields"], form["file"]["size"], model)
        if isinstance(answer, dict):
            return self._json(answer, model, 200 if ctype else 400)
        return web.Response(text=str(answer), content_type=ctype, charset="utf-8")

    async def _tts(self, request: web.Request, key: str, body: dict[str, Any]) -> web.StreamResponse:
        voice = body.get("voice_name") if isinstance(body.get("voice_name"), str) else ""
        if voice == "error500":
            return self._json({"error": {"message": "tts boom"}}, "", 500)
        if voice.startswith("status:") and voice[7:].isdigit():
            return self._json({"error": {"message": f"upstream said {voice[7:]}"}}, "", int(voice[7:]))
        if voice == "hang":
            await self._hang(request, key)
        return web.Response(body=surface.tts_wav(body), content_type="audio/wav")

"""The uvicorn internals Bastion builds on, checked so that an upgrade cannot silently corrupt a stream.

bastion/api/direct.py writes streams to uvicorn's `RequestResponseCycle` and keeps its state as its own
`send` does; bastion/api/http_protocol.py subclasses its httptools protocol and replaces its
`data_received`; bastion/cli/process.py starts uvicorn's multiprocess supervisor as `uvicorn.run` does,
with its own SIGHUP handler (forwarding the signal to every worker). All were verified against the
uvicorn versions pyproject allows. These tests fail when
the installed uvicorn leaves that range, when the code they mirror changes (a fingerprint of its source),
when an attribute they touch is gone, or when the bytes they write differ from uvicorn's own `send`.
When one fails after an upgrade: read the new uvicorn code against direct.py and http_protocol.py, fix
them, then update the range and the fingerprints.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import signal
import tomllib
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.requirements import Requirement
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState
from uvicorn.supervisors import multiprocess
from uvicorn_harness import RecordingTransport, serve

from bastion.api.asgi import Receive, Scope, Send
from bastion.api.direct import DirectStream
from bastion.api.exchange import Exchange
from bastion.api.http_protocol import BoundedHttpToolsProtocol
from bastion.api.stopping import REQUEST_CORO
from bastion.cli.process import ReloadingSupervisor

# sha256 (first 16 hex digits) of the source of what Bastion mirrors or overrides, as verified.
FINGERPRINTS = {
    "HttpToolsProtocol.__init__": "4f08999410347141",
    "HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "HttpToolsProtocol._unset_keepalive_if_required": "00a6a4e47214e68e",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "RequestResponseCycle.__init__": "4d2f220910c33c12",
    "RequestResponseCycle.send": "abdd8601b326a8da",
    # bastion/api/exchange.py's CycleWatch waits on the event these set, as `receive` waits on it.
    "RequestResponseCycle.receive": "8124ae006be71184",
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.on_body": "dba9c32aeba35b6a",
}
# The same for the supervisor bastion/cli/process.py extends: its signal handlers queue signals that
# `run` hands to `handle_signals`, which calls `handle_<name>` (Bastion's `handle_hup`), and `processes`
# holds the workers with their `pid`.
SUPERVISOR_FINGERPRINTS = {
    "Multiprocess.__init__": "5e0f105cb4a381b5",
    "Multiprocess.handle_signals": "69be08d4fd9bc0b4",
    "Multiprocess.run": "306814569fbd547b",
    "Process.pid": "90398572c79efa31",
}
CYCLE_ATTRIBUTES = [
    "more_body",
    "scope",
    "transport",
    "flow",
    "default_headers",
    "message_event",
    "on_response",
    "access_log",
    "disconnected",
    "keep_alive",
    "waiting_for_100_continue",
    "response_started",
    "response_complete",
    "chunked_encoding",
    "expected_content_length",
]
PROTOCOL_ATTRIBUTES = [
    "parser",
    "headers",
    "cycle",
    "connections",
    "server_state",
    "transport",
    "loop",
    "logger",
    "flow",
]


def test_the_installed_uvicorn_is_in_the_verified_range() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    requirement = next(
        Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("uvicorn")
    )
    assert requirement.specifier.filter([uvicorn.__version__]), (uvicorn.__version__, str(requirement))
    assert any(s.operator == "<" for s in requirement.specifier), "uvicorn needs an upper bound"


def test_the_code_bastion_mirrors_is_unchanged() -> None:
    changed = {}
    for name, expected in FINGERPRINTS.items():
        owner, attribute = name.split(".")
        source = inspect.getsource(getattr(getattr(httptools_impl, owner), attribute))
        actual = hashlib.sha256(source.encode()).hexdigest()[:16]
        if actual != expected:
            changed[name] = actual
    assert not changed, (
        f"uvicorn {uvicorn.__version__} changed {changed}: re-verify direct.py, http_protocol.py"
    )
    for name in ("STATUS_LINE", "HEADER_RE", "HEADER_VALUE_RE"):
        assert hasattr(httptools_impl, name)
    # bastion/api/stopping.py finds the request tasks by their coroutine.
    assert httptools_impl.RequestResponseCycle.run_asgi.__qualname__ == REQUEST_CORO


def test_the_supervisor_bastion_extends_is_unchanged() -> None:
    changed = {}
    for name, expected in SUPERVISOR_FINGERPRINTS.items():
        owner, attribute = name.split(".")
        found = inspect.getattr_static(getattr(multiprocess, owner), attribute)
        source = inspect.getsource(found.fget if isinstance(found, property) else found)
        actual = hashlib.sha256(source.encode()).hexdigest()[:16]
        if actual != expected:
            changed[name] = actual
    assert not changed, f"uvicorn {uvicorn.__version__} changed {changed}: re-verify bastion/cli/process.py"
    assert multiprocess.SIGNALS[signal.SIGHUP] == "HUP"  # handled as `handle_hup`
    assert ReloadingSupervisor.handle_hup is not multiprocess.Multiprocess.handle_hup
    # run_workers starts the supervisor as uvicorn.run does for workers > 1.
    run_source = inspect.getsource(uvicorn.run)
    assert "sock = config.bind_socket()\n            Multiprocess(config, sockets=[sock]).run()" in run_source


def test_the_server_takes_the_sockets_bastion_bound() -> None:
    # bastion serve binds its sockets first (bastion/cli/listen.py), then `Server(config).run(sockets=...)`
    # and reads `started` for its exit status, as `uvicorn.run` does.
    assert "sockets" in inspect.signature(uvicorn.Server.run).parameters
    assert "if not server.started" in inspect.getsource(uvicorn.run)


def stream_app(seen: dict[str, Any]) -> Any:
    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        cycle = send.__self__  # type: ignore[attr-defined]
        seen["cycle_type"] = type(cycle)
        seen["missing"] = [name for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
        seen["direct"] = DirectStream.of(send) is not None
        exchange = Exchange(scope, receive, send)
        exchange.prepare_stream(exchange.started)
        exchange.start_stream()
        await exchange.write(b"data: 1\n\n")
        await exchange.write(b"data: 2\n\n")
        await exchange.end(b"data: [DONE]\n\n")

    return stream


async def test_streams_are_written_directly_under_bastions_protocol_with_uvicorns_bytes() -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: same-bytes\r\n\r\n"
    seen: dict[str, Any] = {}
    direct, protocol = await serve(stream_app(seen), [request], BoundedHttpToolsProtocol)
    assert seen == {"cycle_type": httptools_impl.RequestResponseCycle, "missing": [], "direct": True}
    assert [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)] == []
    assert len(direct.writes) == 3  # the head with the first chunk, the second, the last with the end

    through_send, _ = await serve(stream_app({}), [request], BoundedHttpToolsProtocol, access_log=True)
    assert len(through_send.writes) == 4  # ASGI's `send` writes the head on its own

    def without_varying(wire: bytes) -> bytes:  # the date and Bastion's own timing
        head, _, body = wire.partition(b"\r\n\r\n")
        kept = [line for line in head.split(b"\r\n") if not line.startswith((b"date:", b"server-timing:"))]
        return b"\r\n".join(kept) + b"\r\n\r\n" + body

    assert without_varying(b"".join(direct.writes)) == without_varying(b"".join(through_send.writes))


def json_app() -> Any:
    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        await exchange.respond(200, b'{"ok":true}')

    return answer


def without_varying(wire: bytes) -> bytes:
    """The answers' bytes but the date and Bastion's own timing."""
    head, _, body = wire.partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.startswith((b"date:", b"server-timing:"))]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


async def test_json_answers_are_written_in_one_write_with_uvicorns_bytes() -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: same-bytes\r\n\r\n"
    direct, _ = await serve(json_app(), [request, request], BoundedHttpToolsProtocol)
    through_send, _ = await serve(json_app(), [request, request], BoundedHttpToolsProtocol, access_log=True)
    assert len(direct.writes) == 2  # head and body together, then the keep-alive request's answer
    assert len(through_send.writes) == 4  # ASGI's `send` writes the head and the body apart
    assert without_varying(b"".join(direct.writes)) == without_varying(b"".join(through_send.writes))
    assert b"content-length: 11\r\n" in direct.writes[0] and direct.writes[0].endswith(b'\r\n\r\n{"ok":true}')
    # A request that asks to close: the answer says so, as uvicorn's would.
    closing = b"POST /v1/models HTTP/1.1\r\nhost: x\r\nx-request-id: same\r\nconnection: close\r\n\r\n"
    direct, _ = await serve(json_app(), [closing], BoundedHttpToolsProtocol)
    through_send, _ = await serve(json_app(), [closing], BoundedHttpToolsProtocol, access_log=True)
    assert without_varying(b"".join(direct.writes)) == without_varying(b"".join(through_send.writes))
    assert b"connection: close\r\n" in direct.writes[0]


async def test_an_asyncio_event_wakes_a_waiter_put_where_its_own_wait_puts_them() -> None:
    """CycleWatch appends its future to `asyncio.Event._waiters` and removes it again itself."""
    event = asyncio.Event()
    assert isinstance(event._waiters, collections.deque)
    waiter = asyncio.get_running_loop().create_future()
    event._waiters.append(waiter)
    own = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert len(event._waiters) == 2
    event.set()
    await own
    assert waiter.done() and waiter.result() is True
    assert list(event._waiters) == [waiter]  # wait() took only its own out
    event._waiters.remove(waiter)
    event.clear()
    assert not event.is_set() and not event._waiters


async def test_a_hang_up_during_a_silent_upstream_is_seen_without_a_watcher_task() -> None:
    """The watch on uvicorn's cycle cancels the request's task when the connection is lost, and a request
    answered before that leaves no waiter behind."""
    seen: dict[str, Any] = {}
    answered, sleeping = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        exchange = Exchange(scope, receive, send)
        watch = exchange.watch_disconnect()
        seen["watch"] = type(watch).__name__
        if scope["path"] == "/quick":
            await exchange.respond(200, b"{}")
            seen["waiters"] = len(receive.__self__.message_event._waiters)  # type: ignore[attr-defined]
            answered.set()
            return
        sleeping.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["absorbed"] = watch.absorb()
            seen["gone"] = watch.gone
            answered.set()

    config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="error", access_log=False)
    config.load()
    state = ServerState()
    protocol = BoundedHttpToolsProtocol(config, state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"POST /quick HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    await asyncio.wait_for(answered.wait(), 5)
    assert seen == {"watch": "CycleWatch", "waiters": 0}
    assert transport.writes[-1].startswith(b"HTTP/1.1 200") and transport.writes[-1].endswith(b"{}")
    await asyncio.gather(*state.tasks)
    answered.clear()
    seen.clear()
    protocol.data_received(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    await asyncio.wait_for(sleeping.wait(), 5)
    assert seen == {"watch": "CycleWatch"}
    protocol.connection_lost(None)
    await asyncio.wait_for(answered.wait(), 5)
    assert seen["absorbed"] is True and seen["gone"] is True
    await asyncio.gather(*state.tasks)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/json"), (b"x-request-id", b"req_AbC"), (b"x-empty", b"")],
        [(b"Content-Type", b"application/json")],  # upper case: lowered, as uvicorn writes it
        [(b"content-length", b"3")],  # framing: uvicorn's own
        [(b"Connection", b"close")],
        [(b"connection-id", b"7"), (b"x-tab", b"a\tb")],
        [(b"bad name", b"v")],
        [(b"x-bad", b"a\r\nset-cookie: injected")],
        [(b"x-bad", b"\x7f")],
        [(b"x-colon:", b"v")],
    ],
)
def test_a_head_checked_whole_is_the_head_checked_header_by_header(
    headers: list[tuple[bytes, bytes]],
) -> None:
    class Cycle:
        default_headers = [(b"server", b"uvicorn"), (b"date", b"Mon, 07 Dec 2026 15:00:00 GMT")]

    stream = DirectStream(Cycle())
    every = [*Cycle.default_headers, *headers]
    assert stream.render_head(200, headers) == stream._render_lowered(200, every)

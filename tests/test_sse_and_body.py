"""Unit tests of the byte-level pieces: SSE framing, the stream relay, model restore (the rewrite of the
body sent upstream: tests/test_members.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bastion.config import Deployment, ModelConfig, Price, ProviderConfig
from bastion.proxy.providers import MockProvider
from bastion.proxy.routing import ModelNameRestorer, Route, Target
from bastion.proxy.sse import SSEFramer, event_data

STREAM = (
    b'data: {"a":1}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b'data:{"b":"x\\ny"}\n\n'
    b'event: response.created\ndata: {"c":3}\n\n'
    b"data: line1\ndata: line2\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'data: {"a":1}',
    b": keep-alive",
    b'data:{"b":"x\\ny"}',
    b'event: response.created\ndata: {"c":3}',
    b"data: line1\ndata: line2",
    b"data: [DONE]",
]


def _feed_all(pieces: list[bytes]) -> list[bytes]:
    framer = SSEFramer()
    events = [e for piece in pieces for e in framer.feed(piece)]
    return events + framer.finish()


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_framer_gives_the_same_events_wherever_the_bytes_are_cut(cut: int) -> None:
    assert _feed_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_framer_byte_by_byte() -> None:
    assert _feed_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_framer_holds_an_incomplete_event_until_its_blank_line() -> None:
    framer = SSEFramer()
    assert framer.feed(b'data: {"a":1}\n') == []
    assert framer.feed(b"\n") == [b'data: {"a":1}']


def test_framer_keeps_an_unterminated_last_event() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: [DONE]\n") == []
    assert framer.finish() == [b"data: [DONE]"]


def test_event_data() -> None:
    assert event_data(b'data: {"a":1}') == b'{"a":1}'
    assert event_data(b"data:[DONE]") == b"[DONE]"
    assert event_data(b"data: a\ndata: b") == b"a\nb"
    assert event_data(b"event: x\ndata: y") == b"y"
    assert event_data(b": comment") is None


def _route(upstream_name: str = "up-model", public: str = "public-model") -> Route:
    model = ModelConfig(
        id=public,
        category="LLM",
        endpoints=("chat",),
        deployments=(Deployment(provider="p", model=upstream_name),),
        price=Price(input=Decimal(1), output=Decimal(2)),
    )
    provider = MockProvider(ProviderConfig(name="p", type="mock"))
    return Route(model, Target(model.deployments[0], provider, ModelNameRestorer(upstream_name, public)))


def test_restorer_rewrites_model_values_only() -> None:
    restore = ModelNameRestorer("org/up-model", "public")
    chunk = b'{"model":"org/up-model","choices":[{"delta":{"content":"\\"model\\":\\"org/up-model\\""}}]}'
    restored = restore(chunk)
    parsed = json.loads(restored)
    assert parsed["model"] == "public"
    assert parsed["choices"][0]["delta"]["content"] == '"model":"org/up-model"'
    assert restore(b'{"model": "org/up-model"}') == b'{"model": "public"}'
    assert restore(b'{"model":"other"}') == b'{"model":"other"}'
    assert ModelNameRestorer("same", "same")(b'{"model":"same"}') == b'{"model":"same"}'


def test_restorer_escapes_the_public_id() -> None:
    restored = ModelNameRestorer("u", 'we"ird\\id')(b'{"model":"u"}')
    assert json.loads(restored) == {"model": 'we"ird\\id'}


def test_stream_relay_frames_restores_notes_usage_and_stops_at_done() -> None:
    from bastion.proxy.relay import StreamRelay

    relay = StreamRelay(_route())
    out = relay.feed(b'data: {"model":"up-model","choices":[]}\n\ndata: {"model":"up-mo')
    assert out == b'data: {"model":"public-model","choices":[]}\n\n'
    out = relay.feed(
        b'del","choices":[],"usage":{"prompt_tokens":3}}\n\n: ping\n\ndata: [DONE]\n\ndata: late\n\n'
    )
    assert out == (
        b'data: {"model":"public-model","choices":[],"usage":{"prompt_tokens":3}}\n\n'
        b": ping\n\ndata: [DONE]\n\n"
    )
    assert relay.done and relay.usage == {"prompt_tokens": 3}
    assert relay.finish() == b""


def test_stream_relay_adds_done_when_missing() -> None:
    from bastion.proxy.relay import StreamRelay

    relay = StreamRelay(_route())
    assert relay.feed(b'data: {"x":1}\n\n') == b'data: {"x":1}\n\n'
    assert relay.finish() == b"data: [DONE]\n\n"

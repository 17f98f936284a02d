"""The body sent upstream: the client's bytes with only the top-level `model` value replaced.

Splicing the bytes instead of re-encoding keeps everything else exactly as the client sent it (number
spelling, spacing, field order, integers past 64 bits). Where the top-level `model` lies comes from
`Members`, which reads the bytes as a JSON parser does; a body with a top-level key written twice never
gets here (the gateway refuses it), so the upstream receives exactly one top-level `model`, and it is
the deployment's, the one that was authorised, admitted and billed.
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion.proxy.members import Members

_MODEL_KEY = b'"model"'


def wants_stream_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_body(
    raw: bytes, members: Members, body: dict[str, Any], upstream_model: str, stream: bool, ask_usage: bool
) -> bytes:
    """The body to send: `model` rewritten; on a stream, `stream_options` as Bastion read it, with usage
    asked for (for billing) if `ask_usage`."""
    edits = _model_edit(raw, members, upstream_model)
    options = body.get("stream_options")
    if ask_usage:
        options = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        edits.append(_value_edit(raw, members, "stream_options", options))
    elif stream and isinstance(options, dict):
        edits.append(_value_edit(raw, members, "stream_options", options))
    return _spliced(raw, edits) if edits else raw


def without_model(raw: bytes, members: Members) -> bytes:
    """For upstreams whose contract has no `model` field (Riva TTS): drop Bastion's optional one."""
    if members.span("model") is None:
        return raw
    start, end = members.member_span("model")
    return raw[:start] + raw[end:]


Edit = tuple[int, int, bytes]  # replace raw[start:end] with the bytes


def _model_edit(raw: bytes, members: Members, upstream_model: str) -> list[Edit]:
    """The `model` value set to the upstream's name, and its key spelled plainly if the client escaped
    it (the same key to a parser, but an upstream's may be naive); no edit if both are already so."""
    span = members.span("model")
    assert span is not None  # validation made sure there is a `model`
    key_start, key_end, value_start, value_end = span
    edits: list[Edit] = []
    if key_end - key_start != len(_MODEL_KEY) or raw[key_start:key_end] != _MODEL_KEY:
        edits.append((key_start, key_end, _MODEL_KEY))
    name = orjson.dumps(upstream_model)
    if value_end - value_start != len(name) or raw[value_start:value_end] != name:
        edits.append((value_start, value_end, name))
    return edits


def _value_edit(raw: bytes, members: Members, name: str, value: Any) -> Edit:
    """The member `name` set to `value` (re-encoded: what Bastion parsed, so a nested key written twice
    means the same to the upstream), added before the closing brace if absent."""
    encoded = orjson.dumps(value)
    span = members.span(name)
    if span is not None:
        return span[2], span[3], encoded
    close = members.close
    before = close
    while raw[before - 1] in b" \t\r\n":
        before -= 1
    comma = b"" if raw[before - 1] == ord("{") else b","
    return close, close, comma + orjson.dumps(name) + b":" + encoded


def _spliced(raw: bytes, edits: list[Edit]) -> bytes:
    parts, at = [], 0
    for start, end, replacement in sorted(edits):
        parts += (raw[at:start], replacement)
        at = end
    parts.append(raw[at:])
    return b"".join(parts)

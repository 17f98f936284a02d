"""The body sent upstream: the client's bytes with only the top-level `model` value replaced.

Splicing the bytes instead of re-encoding keeps everything else exactly as the client sent it (number
spelling, spacing, big integers: orjson reads integers past 64 bits as floats) and costs one scan.
Only a key followed by `:` can match `"model"\\s*:` (quotes inside JSON strings are escaped), so a
single match is the top-level key; with several (a tool schema with a `model` property) the body is
re-encoded instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_MODEL_KEY = re.compile(rb'"model"\s*:\s*')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_LONG_DIGITS = re.compile(rb"\d{19}")


_ASK_USAGE = b',"stream_options":{"include_usage":true}}'


def wants_stream_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_body(raw: bytes, body: dict[str, Any], upstream_model: str, ask_usage: bool) -> bytes:
    """The body to send: `model` rewritten, and (for billing) stream usage asked for if `ask_usage`."""
    data = rewrite_model(raw, body, upstream_model)
    if not ask_usage:
        return data
    if "stream_options" not in body:
        end = data.rstrip()
        if end.endswith(b"}"):
            head = end[:-1].rstrip()
            return head + (_ASK_USAGE if not head.endswith(b"{") else _ASK_USAGE[1:])
    options = {**(body.get("stream_options") or {}), "include_usage": True}
    return _reencode(data, {**body, "model": upstream_model, "stream_options": options})


def without_model(raw: bytes, body: dict[str, Any]) -> bytes:
    """For upstreams whose contract has no `model` field (Riva TTS): drop Bastion's optional one."""
    if "model" not in body:
        return raw
    return _reencode(raw, {k: v for k, v in body.items() if k != "model"})


def rewrite_model(raw: bytes, body: dict[str, Any], upstream_model: str) -> bytes:
    if body.get("model") == upstream_model:
        return raw
    keys = _MODEL_KEY.finditer(raw)
    key = next(keys, None)
    if key is not None and next(keys, None) is None:
        value = _JSON_STRING.match(raw, key.end())
        if value is not None and orjson.loads(value.group()) == body.get("model"):
            return raw[: value.start()] + orjson.dumps(upstream_model) + raw[value.end() :]
    return _reencode(raw, {**body, "model": upstream_model})


def _reencode(raw: bytes, changed: dict[str, Any]) -> bytes:
    """`changed` (the parsed body with edits) as JSON; big integers taken exactly from `raw`."""
    if _LONG_DIGITS.search(raw):
        exact = json.loads(raw)  # may hold integers past 64 bits, which only the stdlib keeps exact
        edited = {k: v for k, v in changed.items() if k in ("model", "stream_options")}
        exact = {k: v for k, v in exact.items() if k in changed} | edited
        return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
    return orjson.dumps(changed)

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


def rewrite_model(raw: bytes, body: dict[str, Any], upstream_model: str) -> bytes:
    if body.get("model") == upstream_model:
        return raw
    keys = _MODEL_KEY.finditer(raw)
    key = next(keys, None)
    if key is not None and next(keys, None) is None:
        value = _JSON_STRING.match(raw, key.end())
        if value is not None and orjson.loads(value.group()) == body.get("model"):
            return raw[: value.start()] + orjson.dumps(upstream_model) + raw[value.end() :]
    return _reencode(raw, body, upstream_model)


def _reencode(raw: bytes, body: dict[str, Any], upstream_model: str) -> bytes:
    if _LONG_DIGITS.search(raw):
        exact = json.loads(raw)  # may hold integers past 64 bits, which only the stdlib keeps exact
        exact["model"] = upstream_model
        return json.dumps(exact, ensure_ascii=False, separators=(",", ":")).encode()
    return orjson.dumps({**body, "model": upstream_model})

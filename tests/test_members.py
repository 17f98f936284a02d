"""The one-model rule on bytes: the upstream receives exactly one top-level `model`, the deployment's.

`Members` reads a body's top-level keys as a JSON parser does; `upstream_body` splices the model (and,
on streams, `stream_options`) into the client's bytes. Checked on the spellings that fooled the byte
scan it replaced, then on random JSON objects (escapes, whitespace, nesting, duplicates) whose meaning
to a first-wins and a last-wins parser is compared before and after.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.proxy.body import upstream_body, without_model
from bastion.proxy.members import DuplicateKey, Members

Pairs = list[tuple[str, Any]]


def pairs(raw: bytes) -> Any:
    """The whole document with every object as its list of pairs: duplicates and order kept, numbers exact."""
    return json.loads(raw, object_pairs_hook=list)


def forwarded(raw: bytes, upstream: str = "up/model", stream: bool = False, ask: bool = False) -> bytes:
    body = orjson.loads(raw)
    return upstream_body(raw, Members.of(raw, body), body, upstream, stream, ask)


def top_models(raw: bytes) -> list[Any]:
    return [value for key, value in pairs(raw) if key == "model"]


@pytest.mark.parametrize(
    "raw",
    [
        # An escaped top-level key, and a decoy `model` (with the public id) nested in a tool schema.
        b'{"mod\\u0065l":"pub","tools":[{"parameters":{"properties":{"model":"pub"}}}]}',
        # A key holding an escaped quote before `model`, then the real key.
        b'{"x\\"model":"pub","model":"pub","n":1}',
        b'{"x\\"model" : "pub", "mod\\u0065l" : "pub"}',
        # `model` inside a string value, with escaped quotes around it.
        b'{"messages":[{"role":"user","content":"\\"model\\": \\"pub\\""}],"model":"pub"}',
        # Deeper than the member expression nests (the token scan's path).
        b'{"a":[[[[[[[[[[[[{"model":"pub"}]]]]]]]]]]]],"model":"pub","z":{"model":"pub"}}',
    ],
)
def test_the_top_level_model_is_the_one_rewritten(raw: bytes) -> None:
    sent = forwarded(raw)
    assert top_models(sent) == ["up/model"]
    assert re.search(rb'"model"\s*:\s*"up/model"', sent)  # spelled plainly, whatever the client's spelling
    expected = [(k, "up/model" if k == "model" else v) for k, v in pairs(raw)]
    assert pairs(sent) == expected  # every other member (nested decoys included) as it was


def test_everything_but_the_model_value_keeps_its_bytes() -> None:
    raw = b'{ "messages": [], "model" : "pub" , "temperature": 1.0e0, "big": 123456789012345678901234 }'
    assert forwarded(raw) == raw.replace(b'"pub"', b'"up/model"')
    same = b'{"model" : "same", "x": 1.0e0}'
    assert forwarded(same, "same") is same


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b'{"model":"a","model":"a"}', "model"),
        (b'{"model":"a","messages":[],"mod\\u0065l":"b"}', "model"),
        (b'{"model":"a","stream":false,"stream":true}', "stream"),
        (b'{"model":"a","max_tokens":1,"x":{},"max_tokens":100000}', "max_tokens"),
        (b'{"model":"a","a":[[[[[[[[[[[[]]]]]]]]]]]],"n":1,"n":2}', "n"),
        (b'{"model":"a","st\\u0072eam_options":{},"stream_options":{}}', "stream_options"),
    ],
)
def test_a_top_level_key_written_twice_is_refused(raw: bytes, name: str) -> None:
    with pytest.raises(DuplicateKey) as caught:
        Members.of(raw, orjson.loads(raw))
    assert caught.value.name == name


def test_keys_repeated_below_the_top_level_are_the_clients_business() -> None:
    raw = b'{"model":"a","tools":[{"a":1,"a":2}],"x":{"model":1,"model":2}}'
    assert pairs(forwarded(raw)) == [("model", "up/model"), *pairs(raw)[1:]]


def test_a_stream_asks_for_usage_once_and_sends_stream_options_as_bastion_read_them() -> None:
    raw = b'{"model":"a","stream":true}'
    assert forwarded(raw, stream=True, ask=True) == (
        b'{"model":"up/model","stream":true,"stream_options":{"include_usage":true}}'
    )
    # The client asked for usage with a nested duplicate: Bastion read the last one (true), and so does
    # the upstream, whichever one its parser keeps.
    raw = b'{"model":"a","stream":true,"stream_options":{"include_usage":false,"include_usage":true}}'
    sent = forwarded(raw, stream=True)
    assert dict(pairs(sent))["stream_options"] == [("include_usage", True)]
    raw = b'{"model":"a","stream":true,"stream_options":null }'
    assert dict(pairs(forwarded(raw, stream=True, ask=True)))["stream_options"] == [("include_usage", True)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"text":"hi","model":"tts"}', b'{"text":"hi"}'),
        (b'{"mod\\u0065l":"tts", "text":"hi"}', b'{"text":"hi"}'),
        (b'{"a":1, "model":"tts" , "b":2}', b'{"a":1, "b":2}'),
        (b'{"model":"tts"}', b"{}"),
        (b'{"text":"hi"}', b'{"text":"hi"}'),
    ],
)
def test_without_model_drops_the_member_and_one_comma(raw: bytes, expected: bytes) -> None:
    assert without_model(raw, Members.of(raw, orjson.loads(raw))) == expected


# ------------------------------------------------------------------------------ random documents

KEYS = ["model", "stream", "stream_options", "max_tokens", "n", "messages", 'x"model', "mod", "é", "a b"]
SPACE = ["", " ", "  ", "\n", "\t", "\r\n "]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(["1.0e0", "-0.5E+3", "0.000", "1e-7"]).map(lambda s: ("number", s)),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(st.tuples(keys, inner), max_size=4).map(lambda p: ("object", p))
    ),
    max_leaves=25,
)


def dump_string(text: str, rng: random.Random) -> str:
    out = ['"']
    for char in text:
        if char in '"\\' or ord(char) < 0x20:
            out.append(
                rng.choice(
                    [f"\\u{ord(char):04x}", {'"': '\\"', "\\": "\\\\"}.get(char, f"\\u{ord(char):04X}")]
                )
            )
        elif rng.random() < 0.2:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else char)
        else:
            out.append(char)
    return "".join(out) + '"'


def dump(value: Any, rng: random.Random) -> str:
    def space() -> str:
        return rng.choice(SPACE)

    if isinstance(value, tuple) and value[0] == "number":
        return str(value[1])
    if isinstance(value, tuple) and value[0] == "object":
        members = [
            f"{space()}{dump_string(k, rng)}{space()}:{space()}{dump(v, rng)}{space()}" for k, v in value[1]
        ]
        return "{" + ",".join(members) + space() + "}"
    if isinstance(value, list):
        return "[" + ",".join(space() + dump(v, rng) + space() for v in value) + "]"
    if isinstance(value, str):
        return dump_string(value, rng)
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(
    top=st.lists(st.tuples(keys, values), max_size=6),
    model_at=st.integers(min_value=0, max_value=6),
    public=st.text(min_size=1, max_size=8),
    seed=st.integers(),
    stream=st.booleans(),
    ask=st.booleans(),
)
def test_random_objects_reach_the_upstream_with_exactly_the_authorised_model(
    top: Pairs, model_at: int, public: str, seed: int, stream: bool, ask: bool
) -> None:
    rng = random.Random(seed)
    members = list(top)
    members.insert(min(model_at, len(members)), ("model", public))
    raw = (rng.choice(SPACE) + dump(("object", members), rng) + rng.choice(SPACE)).encode()
    body = orjson.loads(raw)  # what the gateway parses (and refuses when it does not parse)
    names = [name for name, _ in members]
    duplicated = {name for name in names if names.count(name) > 1}
    if duplicated:
        with pytest.raises(DuplicateKey) as caught:
            Members.of(raw, body)
        assert caught.value.name in duplicated
        return
    sent = upstream_body(raw, Members.of(raw, body), body, "up/model", stream, ask and stream)
    # One top-level model, the deployment's; every other member as the client sent it, in order.
    assert top_models(sent) == ["up/model"]
    original = [(k, v) for k, v in pairs(raw) if k != "stream_options" or not stream]
    kept = [(k, v) for k, v in pairs(sent) if k != "stream_options" or not stream]
    assert kept == [(k, "up/model" if k == "model" else v) for k, v in original]
    # First-wins and last-wins parsers read the model, and the stream options, Bastion decided on.
    first_wins = json.loads(sent, object_pairs_hook=lambda p: dict(reversed(p)))
    last_wins = json.loads(sent)
    assert first_wins["model"] == last_wins["model"] == "up/model"
    if stream and (ask or isinstance(body.get("stream_options"), dict)):
        options = body.get("stream_options")
        expected = {
            **(options if isinstance(options, dict) else {}),
            **({"include_usage": True} if ask else {}),
        }
        assert (
            first_wins["stream_options"]
            == last_wins["stream_options"]
            == orjson.loads(orjson.dumps(expected))
        )


@settings(max_examples=400, deadline=None)
@given(
    top=st.lists(st.tuples(keys, values), max_size=6),
    seed=st.integers(),
    spaced=st.booleans(),
)
def test_a_body_found_plainly_has_the_spans_the_full_scan_finds(top: Pairs, seed: int, spaced: bool) -> None:
    rng = random.Random(seed)
    raw = dump(("object", top), rng) if spaced else json.dumps(dict(top), ensure_ascii=False)
    data = raw.encode()
    body = orjson.loads(data)
    try:
        scanned = Members.scanned(data, len(body))
    except DuplicateKey:
        with pytest.raises(DuplicateKey):
            Members.of(data, body)
        return
    found = Members.of(data, body)
    assert found.close == scanned.close
    for name in [*body, "model", "stream_options", "absent"]:
        assert found.span(name) == scanned.span(name), name
    assert found.spans == scanned.spans


def test_the_plain_path_is_taken_for_an_ordinary_chat_body_and_not_for_a_repeated_or_escaped_key() -> None:
    chat = b'{"model":"m","messages":[{"role":"user","content":"hi\\n"}],"stream":true}'
    assert Members.of(chat, orjson.loads(chat))._raw is chat
    decoy = b'{"model":"m","tools":[{"parameters":{"properties":{"model":{}}}}]}'
    assert Members.of(decoy, orjson.loads(decoy))._raw is None  # `"model"` twice: scanned
    escaped = b'{"model":"m","mod\\u0065l":"n"}'
    with pytest.raises(DuplicateKey):
        Members.of(escaped, orjson.loads(escaped))
    slashed = b'{"a/b":1,"a\\/b":2}'
    with pytest.raises(DuplicateKey):
        Members.of(slashed, orjson.loads(slashed))

"""The model billed is the model served, over real sockets, on every route that rewrites `model`.

Each body is sent as raw bytes to `bastion serve`; the mock upstream records the bytes it received.
The upstream must see exactly one top-level `model`, the deployment's, whatever the client's JSON
spelling; a body with a top-level key written twice is a 400 naming it, reaches no upstream and leaves
no usage record (the account's balance does not move).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from stacks import Stack, running_stack
from upstream import MockUpstream

USD = 10**9
# route, public model, upstream model, the rest of a valid body (JSON text, after the model member)
ROUTES = [
    ("/v1/chat/completions", "m-echo", "echo", '"messages": [{"role": "user", "content": "hi"}]'),
    ("/v1/completions", "m-echo", "echo", '"prompt": "Say hi"'),
    ("/v1/embeddings", "bge-m3", "bge-m3-upstream", '"input": "hello"'),
    ("/v1/images/generations", "img", "img-upstream", '"prompt": "a lighthouse", "n": 1'),
    ("/v1/responses", "m-echo", "echo", '"input": "hi", "store": false'),
]
DECOY = '"tools": [{"type": "function", "function": {"name": "f", "parameters": {"model": "%s"}}}]'


@pytest.fixture(scope="module")
def stack(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from running_stack("embedded", upstream, blackhole_port, tmp_path_factory.mktemp("one-model"))


@pytest.fixture
def account(stack: Stack) -> tuple[str, str]:
    account_id, _, key = stack.account(USD)
    return account_id, key


def post(stack: Stack, key: str, path: str, raw: str, **headers: str) -> tuple[httpx.Response, str]:
    request_id = f"one-model-{secrets.token_hex(6)}"
    response = httpx.post(
        stack.gateway.root + path,
        content=raw.encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "content-type": "application/json",
            "x-request-id": request_id,
            **headers,
        },
        timeout=20,
    )
    return response, request_id


def received(upstream: MockUpstream, request_id: str) -> bytes:
    found = [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]
    assert len(found) == 1, f"{len(found)} upstream requests for {request_id}"
    return found[0].body


def top_level(raw: bytes) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = json.loads(raw, object_pairs_hook=list)
    return pairs


@pytest.mark.parametrize(("path", "public", "upstream_name", "rest"), ROUTES)
@pytest.mark.parametrize(
    "spelling",
    [
        '{{"mod\\u0065l": "{public}", {rest}, {decoy}}}',  # escaped key, decoy with the public id
        '{{"x\\"model": "{public}", "model": "{public}", {rest}}}',  # escaped quote before "model"
        '{{"x\\"model": "{public}", "mod\\u0065l": "{public}", {rest}}}',
        '{{ {rest} ,\n  "model"\t:  "{public}" , {decoy} }}',  # model last, spaced
    ],
)
def test_the_upstream_receives_one_model_the_deployments(
    stack: Stack,
    upstream: MockUpstream,
    account: tuple[str, str],
    path: str,
    public: str,
    upstream_name: str,
    rest: str,
    spelling: str,
) -> None:
    raw = spelling.format(public=public, rest=rest, decoy=DECOY % public)
    response, request_id = post(stack, account[1], path, raw)
    assert response.status_code == 200, response.text
    sent = received(upstream, request_id)
    pairs = top_level(sent)
    assert [value for key, value in pairs if key == "model"] == [upstream_name]
    # Every other member arrives as sent: decoys keep the public id, the escaped-quote key its value.
    assert [(k, v) for k, v in pairs if k != "model"] == [
        (k, v) for k, v in top_level(raw.encode()) if k != "model"
    ]
    if path != "/v1/embeddings" and "model" in response.json():
        assert response.json()["model"] == public


@pytest.mark.parametrize(("path", "public", "upstream_name", "rest"), ROUTES)
@pytest.mark.parametrize(
    ("duplicate", "name"),
    [
        (', "model": "{public}"', "model"),
        (', "mod\\u0065l": "m-other"', "model"),
        (', "stream": true, "stream": false', "stream"),
        (', "max_tokens": 1, "max_tokens": 999999', "max_tokens"),
        (', "user": "a", "user": "b"', "user"),
    ],
)
def test_a_top_level_key_written_twice_is_refused_and_changes_nothing(
    stack: Stack,
    upstream: MockUpstream,
    account: tuple[str, str],
    path: str,
    public: str,
    upstream_name: str,
    rest: str,
    duplicate: str,
    name: str,
) -> None:
    account_id, key = account
    raw = f'{{"model": "{public}", {rest}{duplicate.format(public=public)}}}'
    response, request_id = post(stack, key, path, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", name)
    assert f"'{name}' more than once" in error["message"]
    assert not [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]
    assert stack.records(account_id) == [] and stack.balance(account_id) == USD


def test_the_same_name_upstream_does_not_get_both_keys(
    stack: Stack, upstream: MockUpstream, account: tuple[str, str]
) -> None:
    # The public id is the upstream's name: once, forwarded untouched; twice, refused.
    body = '"messages": [{"role": "user", "content": "x"}]'
    once = f'{{"model":  "same-name", {body}, "n": 1.0e0}}'
    response, request_id = post(stack, account[1], "/v1/chat/completions", once)
    assert response.status_code == 200
    assert received(upstream, request_id) == once.encode()
    twice = f'{{"model": "same-name", {body}, "model": "same-name"}}'
    response, request_id = post(stack, account[1], "/v1/chat/completions", twice)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_a_stream_reads_its_options_as_bastion_did(
    stack: Stack, upstream: MockUpstream, account: tuple[str, str]
) -> None:
    """A nested duplicate in `stream_options`: Bastion took the last (usage wanted), and so does the
    upstream, however its parser picks: the options go as Bastion read them."""
    raw = (
        '{"model": "m-echo", "messages": [{"role": "user", "content": "hi"}], "stream": true,'
        ' "stream_options": {"include_usage": false, "include_usage": true}}'
    )
    response, request_id = post(stack, account[1], "/v1/chat/completions", raw)
    assert response.status_code == 200
    options = dict(top_level(received(upstream, request_id)))["stream_options"]
    assert options == [("include_usage", True)]
    assert '"usage"' in response.text  # the client asked for the usage chunk, and got it


def test_tts_forwards_no_model_however_it_is_spelled(
    stack: Stack, upstream: MockUpstream, account: tuple[str, str]
) -> None:
    raw = (
        '{"text": "Hello", "mod\\u0065l": "tts-voice", "language_code": "en-US",'
        ' "voice_name": "English-US.Female-1", "encoding": 1}'
    )
    response, request_id = post(stack, account[1], "/api/v1/tts/text_to_audio", raw)
    assert response.status_code == 200, response.text
    assert [k for k, _ in top_level(received(upstream, request_id))] == [
        "text",
        "language_code",
        "voice_name",
        "encoding",
    ]
    twice = '{"text": "a", "model": "tts-voice", "model": "tts-voice"}'
    response, _ = post(stack, account[1], "/api/v1/tts/text_to_audio", twice)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str) -> bytes:
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    "parts",
    [
        [("model", None, b"whisper"), ("model", None, b"whisper-fail"), ("file", "a.wav", b"x" * 64_000)],
        [("model", None, b"whisper"), ("file", "a.wav", b"x" * 64_000), ("model", None, b"whisper-fail")],
        [("file", "a.wav", b"x" * 64_000), ("model", None, b"whisper"), ("model", None, b"whisper")],
        [("model", None, b"whisper"), ("response_format", None, b"json"), ("response_format", None, b"text")],
    ],
    ids=["before-the-file", "after-a-streamed-file", "after-a-spooled-file", "response-format"],
)
def test_a_repeated_model_form_field_is_refused(
    stack: Stack, upstream: MockUpstream, account: tuple[str, str], parts: list[tuple[str, str | None, bytes]]
) -> None:
    account_id, key = account
    if not any(name == "file" for name, _, _ in parts):
        parts = [*parts, ("file", "a.wav", b"x" * 64_000)]
    boundary = "one-model-boundary"
    request_id = f"one-model-{secrets.token_hex(6)}"
    response = httpx.post(
        stack.gateway.base_url + "/audio/transcriptions",
        content=_multipart(parts, boundary),
        headers={
            "Authorization": f"Bearer {key}",
            "content-type": f"multipart/form-data; boundary={boundary}",
            "x-request-id": request_id,
        },
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "more than once" in error["message"]
    assert error["param"] in ("model", "response_format")
    # Refused before forwarding costs nothing; refused while the file was already streaming upstream,
    # the upstream's request is dropped and the record says 400 at no cost.
    assert stack.balance(account_id) == USD
    assert all(r.cost_nano == 0 and r.status == 400 for r in stack.records(account_id))
    seen = upstream.multipart(request_id)
    assert seen is None or seen["file"] is None or seen["fields"].get("model") != "whisper-fail"

"""Bad requests get the envelope with the field in `param`, and nothing goes upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import AUTH, Gateway
from upstream import MockUpstream

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def nothing_goes_upstream(upstream: MockUpstream) -> Iterator[None]:
    before = len(upstream.requests)
    yield
    assert len(upstream.requests) == before, "a rejected request reached the upstream"


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return error


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"messages": HELLO}, "model"),
    ({"model": "", "messages": HELLO}, "model"),
    ({"model": 123, "messages": HELLO}, "model"),
    ({"model": "m-echo"}, "messages"),
    ({"model": "m-echo", "messages": []}, "messages"),
    ({"model": "m-echo", "messages": "hi"}, "messages"),
    ({"model": "m-echo", "messages": [1]}, "messages[0]"),
    ({"model": "m-echo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m-echo", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "m-echo", "messages": [*HELLO, {"role": "user"}]}, "messages[1].content"),
    ({"model": "m-echo", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m-echo", "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    (
        {"model": "m-echo", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
        "messages[0].content[0].type",
    ),
    (
        {"model": "m-echo", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
    ),
    ({"model": "m-echo", "messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
    ({"model": "m-echo", "messages": [{"role": "user", "content": "x", "name": 7}]}, "messages[0].name"),
    ({"model": "m-echo", "messages": HELLO, "stream": "yes"}, "stream"),
    ({"model": "m-echo", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": "m-echo", "messages": HELLO, "top_p": True}, "top_p"),
    ({"model": "m-echo", "messages": HELLO, "max_tokens": 1.5}, "max_tokens"),
    ({"model": "m-echo", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": "m-echo", "messages": HELLO, "max_completion_tokens": "10"}, "max_completion_tokens"),
    ({"model": "m-echo", "messages": HELLO, "n": True}, "n"),
    ({"model": "m-echo", "messages": HELLO, "seed": "x"}, "seed"),
    ({"model": "m-echo", "messages": HELLO, "stream_options": "x"}, "stream_options"),
    (
        {"model": "m-echo", "messages": HELLO, "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
    ),
    ({"model": "m-echo", "messages": HELLO, "stop": 5}, "stop"),
    ({"model": "m-echo", "messages": HELLO, "tools": {"type": "function"}}, "tools"),
    ({"model": "m-echo", "messages": HELLO, "response_format": "json"}, "response_format"),
]


@pytest.mark.usefixtures("nothing_goes_upstream")
@pytest.mark.parametrize(("body", "param"), BAD_BODIES, ids=[p for _, p in BAD_BODIES])
def test_invalid_bodies_name_the_field(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    error = _error(http.post("/v1/chat/completions", json=body), 400, "invalid_request")
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_valid_shapes_openai_allows_are_accepted(client: openai.OpenAI, upstream: MockUpstream) -> None:
    messages: list[Any] = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    completion = client.chat.completions.create(
        model="m-echo", messages=messages, temperature=None, max_tokens=16.0, extra_body={"n": None}
    )
    assert completion.choices[0].message.content == "echo: hi"


@pytest.mark.usefixtures("nothing_goes_upstream")
def test_sdk_gets_bad_request_error_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m-echo", messages=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    assert (caught.value.code, caught.value.type) == ("invalid_request", "invalid_request_error")
    assert caught.value.param == "messages[0].role"


@pytest.mark.usefixtures("nothing_goes_upstream")
@pytest.mark.parametrize(
    ("model", "reason"), [("gpt-4o", "does not exist"), ("bge-m3", "does not serve the chat endpoint")]
)
def test_unknown_or_wrong_kind_model_is_model_not_found(
    client: openai.OpenAI, model: str, reason: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=HELLO)
    assert caught.value.status_code == 400
    assert (caught.value.code, caught.value.type) == ("model_not_found", "invalid_request_error")
    assert caught.value.param == "model"
    assert reason in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.usefixtures("nothing_goes_upstream")
@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b'{"model": "m-echo", "messages": [', "application/json", "not valid JSON"),
        (b"\xff\xfe{}", "application/json", "not valid JSON"),
        (b'["m-echo"]', "application/json", "must be a JSON object"),
        (b"", "application/json", "empty"),
        (b"model=m-echo", "application/x-www-form-urlencoded", "Content-Type must be application/json"),
        (b'{"model": "m-echo", "messages": []}', "text/plain", "Content-Type must be application/json"),
    ],
)
def test_unparseable_bodies_are_400(
    http: httpx.Client, content: bytes, content_type: str, fragment: str
) -> None:
    response = http.post("/v1/chat/completions", content=content, headers={"content-type": content_type})
    error = _error(response, 400, "invalid_request")
    assert fragment in error["message"]


def test_json_with_charset_and_without_content_type_is_accepted(gateway: Gateway) -> None:
    body = b'{"model": "m-echo", "messages": [{"role": "user", "content": "hi"}]}'
    for headers in ({"content-type": "application/json; charset=utf-8", **AUTH}, AUTH):
        response = httpx.post(gateway.base_url + "/chat/completions", content=body, headers=headers)
        assert response.status_code == 200, response.text


@pytest.mark.usefixtures("nothing_goes_upstream")
def test_body_over_the_limit_is_413_by_declared_length(http: httpx.Client) -> None:
    big = {"model": "m-echo", "messages": [{"role": "user", "content": "x" * (300 * 1024)}]}
    error = _error(http.post("/v1/chat/completions", json=big), 413, "request_too_large")
    assert str(256 * 1024) in error["message"]


@pytest.mark.usefixtures("nothing_goes_upstream")
def test_body_over_the_limit_is_413_when_chunked(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m-echo", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 8192
        yield b'"}]}'

    response = http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(response, 413, "request_too_large")


def test_sdk_sees_413_as_api_status_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m-echo", messages=[{"role": "user", "content": "x" * 300_000}])
    assert caught.value.status_code == 413
    assert (caught.value.code, caught.value.type) == ("request_too_large", "invalid_request_error")


# `/` leads to the dashboard (tests/test_dashboard.py); with the dashboard off it is a 404 like these.
@pytest.mark.parametrize("path", ["/v1/nope", "/nope", "/v1/chat/completions/extra", "/v1/files"])
def test_unknown_routes_are_404_envelopes(http: httpx.Client, path: str) -> None:
    for method in ("GET", "POST"):
        error = _error(http.request(method, path), 404, "not_found")
        assert error["type"] == "invalid_request_error"
        assert path in error["message"]


def test_sdk_sees_404_as_not_found_error(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.root + "/v2", api_key="qbt_x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="m-echo", messages=HELLO)
    assert caught.value.status_code == 404
    assert (caught.value.code, caught.value.type) == ("not_found", "invalid_request_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/chat/completions"), ("PUT", "/v1/chat/completions"), ("POST", "/healthz")],
)
def test_wrong_methods_are_405_envelopes(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    error = _error(response, 405, "method_not_allowed")
    assert error["type"] == "invalid_request_error"
    assert response.headers["allow"]

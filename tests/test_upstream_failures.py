"""Upstream failures through a real gateway: the envelope, the status, the SDK's exception, no leaks."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from conftest import CLIENT_KEY, PROVIDER_KEY, Gateway
from upstream import MockUpstream

HELLO = [{"role": "user", "content": "hi"}]
LEAKS = (PROVIDER_KEY, "10.9.8.7", "127.0.0.1", "http://", "Traceback")


def _assert_envelope(response: httpx.Response, status: int, code: str, type_: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, type_)
    assert isinstance(error["message"], str) and error["message"]
    for leak in LEAKS:
        assert leak not in response.text
    return error


@pytest.mark.parametrize(
    ("model", "stream"),
    [
        ("refused-model", False),
        ("refused-model", True),
        ("blackhole-model", False),
        ("fast-hang", False),
        ("fast-hang", True),
        ("m-error500", False),
        ("m-error500", True),
        ("m-status:503", False),
        ("m-garbage", False),
        ("m-garbage-stream", True),
        ("m-drop", False),
        ("m-unauth401", False),
    ],
)
def test_upstream_failures_before_the_answer_are_502(http: httpx.Client, model: str, stream: bool) -> None:
    response = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "stream": stream})
    _assert_envelope(response, 502, "upstream_error", "upstream_error")
    assert response.headers["x-request-id"]


def test_connect_timeout_is_bounded_by_the_provider_setting(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.post("/v1/chat/completions", json={"model": "blackhole-model", "messages": HELLO})
    elapsed = time.monotonic() - started
    error = _assert_envelope(response, 502, "upstream_error", "upstream_error")
    assert "Timed out connecting" in str(error["message"])
    assert elapsed < 3


def test_read_timeout_message_names_the_model_only(http: httpx.Client) -> None:
    error = _assert_envelope(
        http.post("/v1/chat/completions", json={"model": "fast-hang", "messages": HELLO}),
        502,
        "upstream_error",
        "upstream_error",
    )
    assert error["message"] == "The upstream for model 'fast-hang' sent nothing for 0.5 s."


def test_sdk_sees_502_as_internal_server_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="refused-model", messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.type == "upstream_error"


def test_upstream_400_keeps_status_and_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m-bad400", messages=HELLO)
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == "This model does not support tools"  # type: ignore[index]
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "tools"


def test_vllm_style_400_is_reshaped_into_the_envelope(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", json={"model": "m-vllm400", "messages": HELLO, "stream": True}
    )
    error = _assert_envelope(response, 400, "invalid_request", "BadRequestError")
    assert error["message"] == "max_tokens is too large"


def test_upstream_429_stays_429_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m-ratelimited429", messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"


def test_upstream_404_keeps_its_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="m-status:404", messages=HELLO)
    assert caught.value.body["message"] == "upstream said 404"  # type: ignore[index]


def test_upstream_rejecting_bastions_key_is_not_the_clients_401(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m-unauth401", messages=HELLO)
    assert PROVIDER_KEY not in str(caught.value.body)


def _events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e]


@pytest.mark.parametrize(("model", "before"), [("m-drop", "ab"), ("fast-hang-after-first", "first")])
def test_failure_after_the_stream_began_ends_it_with_one_error_event(
    http: httpx.Client, model: str, before: str
) -> None:
    response = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "stream": True})
    assert response.status_code == 200
    events = _events(response.content)
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if "choices" in p)
    assert text == before
    assert "error" in payloads[-1] and all("error" not in p for p in payloads[:-1])
    assert payloads[-1]["error"]["code"] == "upstream_error"
    assert b"[DONE]" not in response.content
    for leak in LEAKS:
        assert leak not in response.text


def test_sdk_raises_on_the_mid_stream_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="m-drop", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "".join(c or "" for c in received) == "ab"
    assert "closed the connection" in caught.value.message


def test_upstream_is_reused_after_failures(client: openai.OpenAI, upstream: MockUpstream) -> None:
    for model in ("m-error500", "m-drop", "m-garbage"):
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model=model, messages=HELLO)
    assert (
        client.chat.completions.create(model="m-echo", messages=HELLO).choices[0].message.content
        == "echo: hi"
    )


def test_the_gateway_log_holds_no_key_and_no_prompt(client: openai.OpenAI, gateway: Gateway) -> None:
    secret_prompt = "my-very-private-prompt-31337"
    messages = [{"role": "user", "content": secret_prompt}]
    client.chat.completions.create(
        model="m-echo", messages=messages, extra_headers={"x-request-id": "log-ok"}
    )
    with pytest.raises(openai.APIError):
        client.chat.completions.create(
            model="m-error500", messages=messages, extra_headers={"x-request-id": "log-502"}
        )
    lines = {}
    deadline = time.monotonic() + 5
    while set(lines) != {"log-ok", "log-502"} and time.monotonic() < deadline:
        for line in gateway.log_text().splitlines():
            entry = json.loads(line)
            if entry.get("logger") == "bastion.access" and entry.get("request_id") in ("log-ok", "log-502"):
                lines[entry["request_id"]] = entry
        time.sleep(0.02)
    ok, failed = lines["log-ok"], lines["log-502"]
    assert (ok["status"], ok["model"], ok["endpoint"], ok["upstream"]) == (200, "m-echo", "chat", "up")
    assert ok["key"] == CLIENT_KEY[:12] and ok["prompt_tokens"] == 11 and ok["cost_usd"] == "0.000017"
    assert (failed["status"], failed["error"]) == (502, "upstream_error")
    log = gateway.log_text()
    assert secret_prompt not in log
    assert PROVIDER_KEY not in log
    assert CLIENT_KEY not in log

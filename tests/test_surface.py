"""The rest of the OpenAI surface, on both stacks: completions, embeddings, images, transcriptions,
responses and Riva TTS, each through its official SDK method (httpx for TTS) and a real upstream.

Test prices (tests/conftest.py): $1 / $2 per 1M tokens in / out, $0.04 per image, $0.001 per second of
audio, $0.01 per request (a transcript without duration), $20 per 1M characters of speech.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import struct
import wave
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import openai
import pytest
from stacks import Stack
from upstream import MockUpstream

USD = 10**9
AUDIO = bytes(range(256)) * 250  # 64,000 bytes: 2 s at the mock's 32,000 bytes per second
TTS_BODY = {
    "text": "Hello from Bastion",
    "language_code": "en-US",
    "voice_name": "English-US.Female-1",
    "sample_rate_hz": 16000,
    "encoding": 1,
}


def _tts(stack: Stack, key: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        stack.gateway.root + "/api/v1/tts/text_to_audio", json=body or TTS_BODY, headers=headers
    )


# ----------------------------------------------------------------------------------- completions


def test_completions_json_and_stream_are_billed_by_tokens(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD)
    client = stack.client(key)
    answer = client.completions.create(model="m-echo", prompt="hi", max_tokens=5, extra_body={"top_k": 3})
    assert answer.model == "m-echo" and answer.choices[0].text == "echo: hi"
    sent = upstream.last_request()
    assert sent is not None and sent.json == {"model": "echo", "prompt": "hi", "max_tokens": 5, "top_k": 3}
    chunks = list(client.completions.create(model="m-echo", prompt="hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello"
    assert all(c.usage is None for c in chunks) and {c.model for c in chunks} == {"m-echo"}
    records = stack.wait_records(account_id, 2)
    assert {
        (r.endpoint, r.prompt_tokens, r.completion_tokens, r.cost_nano, r.estimated) for r in records
    } == {("completions", 7, 2, 11_000, False)}
    assert stack.balance(account_id) == USD - 22_000


def test_completions_validation(stack: Stack) -> None:
    client = stack.client(stack.account(USD)[2])
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="m-echo", prompt=[1.5])  # type: ignore[list-item]
    assert caught.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="bge-m3", prompt="hi")
    assert caught.value.code == "model_not_found"


# ------------------------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("encoding", [None, "base64", "float"])
def test_embeddings_with_the_sdk(stack: Stack, upstream: MockUpstream, encoding: str | None) -> None:
    # No encoding_format: the SDK asks for base64 on the wire and decodes it; an explicit "base64"
    # hands the caller the strings.
    account_id, _, key = stack.account(USD)
    options = {"encoding_format": encoding} if encoding else {}
    result = stack.client(key).embeddings.create(model="bge-m3", input=["a", "b"], **options)  # type: ignore[arg-type]
    assert result.model == "bge-m3"
    vectors = [
        list(struct.unpack("<4f", base64.b64decode(d.embedding)))
        if isinstance(d.embedding, str)
        else d.embedding
        for d in result.data
    ]
    assert [v[:2] for v in vectors] == [pytest.approx([0.1, 0.2]), pytest.approx([0.2, 0.2])]
    sent = upstream.last_request()
    wire = encoding or "base64"
    assert sent is not None
    assert sent.json == {"model": "bge-m3-upstream", "input": ["a", "b"], "encoding_format": wire}
    (record,) = stack.wait_records(account_id, 1)
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens, record.cost_nano) == (
        "embeddings",
        10,
        0,
        10_000,
    )


def test_embeddings_take_token_arrays_and_check_input(stack: Stack) -> None:
    client = stack.client(stack.account(USD)[2])
    assert len(client.embeddings.create(model="bge-m3", input=[[1, 2, 3], [4, 5]]).data) == 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="bge-m3", input=[])
    assert caught.value.param == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="m-echo", input="x")
    assert caught.value.code == "model_not_found"


# ---------------------------------------------------------------------------------------- images


def test_images_are_billed_per_image_and_pass_options_through(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD)
    result = stack.client(key).images.generate(
        model="img", prompt="a lighthouse", n=2, size="256x256", quality="high", response_format="b64_json"
    )
    assert [base64.b64decode(d.b64_json or "") for d in result.data] == [b"\x89PNG\r\n\x1a\n"] * 2
    sent = upstream.last_request()
    assert sent is not None and sent.json == {
        "model": "img-upstream",
        "prompt": "a lighthouse",
        "n": 2,
        "size": "256x256",
        "quality": "high",
        "response_format": "b64_json",
    }
    (record,) = stack.wait_records(account_id, 1)
    assert (record.quantity, record.unit, record.cost_nano) == (2, "image", 80_000_000)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client(key).images.generate(model="img", prompt="x", n=11)
    assert caught.value.param == "n"


# -------------------------------------------------------------------------------- transcriptions


@pytest.mark.parametrize(
    ("fmt", "content_type", "billed"),
    [
        ("json", "application/json", (2000, "audio_ms", 2_000_000)),
        ("verbose_json", "application/json", (2000, "audio_ms", 2_000_000)),
        ("text", "text/plain", (1, "request", 10_000_000)),
        ("srt", "text/plain", (1, "request", 10_000_000)),
        ("vtt", "text/vtt", (1, "request", 10_000_000)),
    ],
)
def test_transcriptions_relay_every_format_and_keep_every_field(
    stack: Stack, upstream: MockUpstream, fmt: str, content_type: str, billed: tuple[int, str, int]
) -> None:
    account_id, _, key = stack.account(USD)
    rid = f"tr-{fmt}-{account_id}"
    raw = stack.client(key).audio.transcriptions.with_raw_response.create(
        model="whisper",
        file=("speech.wav", AUDIO, "audio/wav"),
        response_format=fmt,  # type: ignore[arg-type]
        language="en",
        temperature=0.2,
        extra_headers={"x-request-id": rid},
    )
    assert raw.headers["content-type"].startswith(content_type)
    assert "transcribed 64000 bytes" in raw.http_response.text or "transcribed" in raw.http_response.text
    seen = upstream.multipart(rid)
    assert seen is not None
    assert seen["fields"] == {
        "model": "whisper-upstream",
        "language": "en",
        "temperature": "0.2",
        "response_format": fmt,
    }
    assert seen["file"]["size"] == len(AUDIO) and seen["file"]["sha256"] == hashlib.sha256(AUDIO).hexdigest()
    assert seen["file"]["filename"] == "speech.wav"
    (record,) = stack.wait_records(account_id, 1)
    assert (record.quantity, record.unit, record.cost_nano) == billed


def test_transcription_errors(stack: Stack) -> None:
    key = stack.account(USD)[2]
    client = stack.client(key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="m-echo", file=("a.wav", AUDIO))
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper", file=("a.wav", AUDIO), response_format="mp3")  # type: ignore[arg-type]
    assert caught.value.param == "response_format"
    url = stack.gateway.base_url + "/audio/transcriptions"
    auth = {"Authorization": f"Bearer {key}"}
    missing_file = httpx.post(url, headers=auth, data={"model": "whisper"}, files={"other": ("a.wav", AUDIO)})
    assert missing_file.status_code == 400 and missing_file.json()["error"]["param"] == "file"
    not_multipart = httpx.post(url, headers=auth, json={"model": "whisper"})
    assert not_multipart.status_code == 400 and "multipart" in not_multipart.json()["error"]["message"]
    with pytest.raises(openai.InternalServerError):
        client.audio.transcriptions.create(model="whisper-fail", file=("a.wav", AUDIO))


def test_a_model_sent_after_the_file_is_still_found(stack: Stack, upstream: MockUpstream) -> None:
    key = stack.account(USD)[2]
    boundary = "b0undary"
    parts = [
        ("file", 'filename="late.wav"', AUDIO),
        ("language", None, b"fr"),
        ("model", None, b"whisper"),
    ]
    body = b""
    for name, extra, value in parts:
        disposition = f'form-data; name="{name}"' + (f"; {extra}" if extra else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    rid = f"late-{key[-6:]}"
    response = httpx.post(
        stack.gateway.base_url + "/audio/transcriptions",
        content=body,
        headers={
            "Authorization": f"Bearer {key}",
            "content-type": f"multipart/form-data; boundary={boundary}",
            "x-request-id": rid,
        },
    )
    assert response.status_code == 200, response.text
    seen = upstream.multipart(rid)
    assert seen is not None and seen["order"] == ["file", "language", "model"]
    assert seen["fields"] == {"language": "fr", "model": "whisper-upstream"}
    assert seen["file"]["sha256"] == hashlib.sha256(AUDIO).hexdigest()


def test_a_broken_upload_is_the_clients_error_not_the_upstreams(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD)
    boundary = "B0"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    ).encode()
    headers = {"Authorization": f"Bearer {key}", "content-type": f"multipart/form-data; boundary={boundary}"}
    url = stack.gateway.base_url + "/audio/transcriptions"
    truncated = httpx.post(url, content=head + b"x" * 100_000, headers=headers)  # no closing boundary
    assert truncated.status_code == 400
    assert truncated.json()["error"]["message"] == "The multipart body ended before its closing boundary."

    # A client that vanishes mid-upload, once it is being forwarded: the upstream request is dropped
    # and nothing is charged.
    rid = f"vanish-{account_id}"
    host, port = stack.gateway.root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        request = (
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"x-request-id: {rid}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: 200000\r\n\r\n"  # reserves 100 s of audio: $0.10
        )
        raw.sendall(request.encode() + head + b"y" * 50_000)
        assert upstream.wait_started(rid) is not None
    assert upstream.wait_closed(rid) is not None  # the upstream saw its upload end
    records = stack.wait_records(account_id, 2)
    assert sorted((r.status, r.cost_nano) for r in records) == [(400, 0), (499, 0)]
    ok = stack.client(key).audio.transcriptions.create(model="whisper", file=("a.wav", AUDIO))
    assert ok.text


def test_a_25_mib_upload_streams_through_without_being_held_twice(
    stack: Stack, upstream: MockUpstream
) -> None:
    # 25 MiB could be 3.6 hours of audio at 16 kbit/s: the reservation needs $13.10 at the test price.
    key = stack.account(20 * USD)[2]
    audio = bytes(range(256)) * (25 * 1024 * 1024 // 256)
    client = stack.client(key)
    client.audio.transcriptions.create(model="whisper", file=("warm.wav", AUDIO))  # warm every pool up
    before = _peak_rss_kib(stack)
    rid = f"big-{key[-6:]}"
    answer = client.audio.transcriptions.create(
        model="whisper", file=("big.wav", audio), extra_headers={"x-request-id": rid}
    )
    assert answer.text
    seen = upstream.multipart(rid)
    assert seen is not None and seen["file"]["size"] == len(audio)
    assert seen["file"]["sha256"] == hashlib.sha256(audio).hexdigest()
    growth_mib = (_peak_rss_kib(stack) - before) / 1024
    print(f"peak RSS growth for a 25 MiB upload: {growth_mib:.1f} MiB")
    assert growth_mib < 12, f"peak RSS grew {growth_mib:.1f} MiB for a 25 MiB upload"


def _peak_rss_kib(stack: Stack) -> int:
    status = open(f"/proc/{stack.gateway.process.pid}/status").read()  # noqa: SIM115
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


# ------------------------------------------------------------------------------------- responses


def test_responses_json_and_stream(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD)
    client = stack.client(key)
    response = client.responses.create(model="m-echo", input="hi", store=False)
    assert response.model == "m-echo" and response.output_text == "echo: hi"
    sent = upstream.last_request()
    assert sent is not None and sent.json == {"model": "echo", "input": "hi", "store": False}
    events = list(client.responses.create(model="m-echo", input="hi", store=False, stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert events[-1].response.model == "m-echo"  # type: ignore[union-attr]
    records = stack.wait_records(account_id, 2)
    assert {(r.endpoint, r.prompt_tokens, r.completion_tokens, r.cost_nano) for r in records} == {
        ("responses", 9, 4, 17_000)
    }


@pytest.mark.parametrize("store", [None, True])
def test_responses_must_be_stateless(stack: Stack, upstream: MockUpstream, store: bool | None) -> None:
    client = stack.client(stack.account(USD)[2])
    before = len(upstream.requests)
    options = {} if store is None else {"store": store}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m-echo", input="hi", **options)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("invalid_request", "store")
    assert len(upstream.requests) == before


# ------------------------------------------------------------------------------------------- TTS


def test_tts_returns_the_upstreams_audio_and_bills_characters(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD)
    response = _tts(stack, key, {**TTS_BODY, "model": "tts-voice"})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16000, 1, 2)
    sent = upstream.last_request()
    assert sent is not None and sent.path == "/api/v1/tts/text_to_audio"
    assert sent.json == TTS_BODY  # Bastion's optional `model` is not forwarded
    (record,) = stack.wait_records(account_id, 1)
    characters = len(TTS_BODY["text"])
    assert (record.quantity, record.unit, record.cost_nano) == (characters, "character", characters * 20_000)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"text": ""}, "text"),
        ({"voice_name": None}, "voice_name"),
        ({"language_code": 5}, "language_code"),
        ({"sample_rate_hz": 100}, "sample_rate_hz"),
        ({"encoding": 7}, "encoding"),
    ],
)
def test_tts_validation(stack: Stack, change: dict[str, Any], param: str) -> None:
    response = _tts(stack, stack.account(USD)[2], {**TTS_BODY, **change})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_tts_model_kind_upstream_failure_and_the_openai_speech_route(stack: Stack) -> None:
    key = stack.account(USD)[2]
    wrong = _tts(stack, key, {**TTS_BODY, "model": "m-echo"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "model_not_found"
    failed = _tts(stack, key, {**TTS_BODY, "voice_name": "error500"})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"
    speech = httpx.post(
        stack.gateway.base_url + "/audio/speech", headers={"Authorization": f"Bearer {key}"}, json={}
    )
    assert speech.status_code == 404 and "/api/v1/tts/text_to_audio" in speech.json()["error"]["message"]


# --------------------------------------------- every route: 401, 402, 429, upstream failure, in one table

Call = Callable[[openai.OpenAI, Stack, str, str], object]


def _completion(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    return client.completions.create(model=model, prompt="hi", max_tokens=10)


def _embedding(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    return client.embeddings.create(model=model, input="hi")


def _image(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    return client.images.generate(model=model, prompt="hi")


def _transcription(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    return client.audio.transcriptions.create(model=model, file=("a.wav", AUDIO))


def _response(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    return client.responses.create(model=model, input="hi", store=False, max_output_tokens=10)


def _speech(client: openai.OpenAI, stack: Stack, key: str, model: str) -> object:
    # The SDK has no Riva method; its generic `post` still raises its own exception classes.
    root = openai.OpenAI(base_url=stack.gateway.root, api_key=key, max_retries=0)
    body = {**TTS_BODY, "voice_name": "error500"} if model == "fail" else TTS_BODY
    return root.post("/api/v1/tts/text_to_audio", body=body, cast_to=httpx2.Response)


ROUTES: list[tuple[str, Call, str, str, str]] = [
    ("completions", _completion, "m-echo", "m-error500", "img"),
    ("embeddings", _embedding, "bge-m3", "emb-fail", "m-echo"),
    ("images", _image, "img", "img-fail", "bge-m3"),
    ("transcriptions", _transcription, "whisper", "whisper-fail", "img"),
    ("responses", _response, "m-echo", "m-error500", "whisper"),
    ("tts", _speech, "tts-voice", "fail", "m-echo"),
]


@pytest.mark.parametrize(
    ("name", "call", "model", "failing", "wrong_kind"), ROUTES, ids=[r[0] for r in ROUTES]
)
def test_every_route_authenticates_admits_and_maps_upstream_failures(
    stack: Stack, name: str, call: Call, model: str, failing: str, wrong_kind: str
) -> None:
    account_id, _, key = stack.account(USD, rpm=2)
    client = stack.client(key)
    call(client, stack, key, model)
    (record,) = stack.wait_records(account_id, 1)
    assert record.status == 200 and record.cost_nano > 0
    assert stack.balance(account_id) == USD - record.cost_nano
    with pytest.raises(openai.InternalServerError) as failed:
        call(client, stack, key, failing)
    assert failed.value.status_code == 502
    with pytest.raises(openai.RateLimitError):  # the third request in the minute, rpm 2
        call(client, stack, key, model)

    anonymous = stack.client("qbt_" + "N" * 40)
    with pytest.raises(openai.AuthenticationError):
        call(anonymous, stack, "qbt_" + "N" * 40, model)

    if name != "tts":  # the Riva body has no model of its own: see test_tts_model_kind_...
        with pytest.raises(openai.BadRequestError) as wrong:
            call(stack.client(stack.account(USD)[2]), stack, key, wrong_kind)
        assert wrong.value.code == "model_not_found"

    _, _, broke_key = stack.account(1)  # one nano-dollar covers no request
    with pytest.raises(openai.APIStatusError) as refused:
        call(stack.client(broke_key), stack, broke_key, model)
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "insufficient_funds"  # type: ignore[index]

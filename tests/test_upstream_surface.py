"""Self-checks for MockUpstream's per-path endpoints (tests/upstream.py + tests/upstream_surface.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import struct
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from upstream import MockUpstream


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as m:
        yield m


@pytest.fixture
def client(mock: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.base_url, timeout=10) as c:
        yield c


def _data(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


# ------------------------------------------------------------------ completions
def test_completions_json(client: httpx.Client, mock: MockUpstream) -> None:
    r = client.post(
        "/completions", json={"model": "echo", "prompt": "say hi"}, headers={"x-request-id": "c1"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert b", " not in r.content
    assert r.json() == {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1735689600,
        "model": "echo",
        "choices": [{"index": 0, "text": "echo: say hi", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    rec = mock.wait_for_requests(1)[0]
    assert (
        rec.path == "/v1/completions"
        and rec.key == "c1"
        and rec.json == {"model": "echo", "prompt": "say hi"}
    )
    listed = client.post("/completions", json={"model": "no-usage", "prompt": ["first", "second"]}).json()
    assert listed["choices"][0]["text"] == "echo: first" and "usage" not in listed


def test_completions_stream(client: httpx.Client) -> None:
    body: dict[str, Any] = {"model": "echo", "prompt": "x", "stream": True}
    r = client.post("/completions", json={**body, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _data(r.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks[:3]] == ["Hel", "lo", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:3]] == [None, None, "stop"]
    assert all(c["object"] == "text_completion" and c["id"] == "cmpl-mock" for c in chunks)
    assert chunks[3]["choices"] == [] and chunks[3]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 2,
        "total_tokens": 9,
    }
    assert len(chunks) == 4
    plain = _data(client.post("/completions", json=body).content)
    assert len(plain) == 4 and all('"usage"' not in e for e in plain)
    quiet = _data(
        client.post(
            "/completions", json={**body, "model": "no-usage", "stream_options": {"include_usage": True}}
        ).content
    )
    assert len(quiet) == 4 and all('"usage"' not in e for e in quiet)


# ------------------------------------------------------------------ embeddings
def test_embeddings_float_and_base64(client: httpx.Client) -> None:
    one = client.post("/embeddings", json={"model": "emb", "input": "hello"}).json()
    assert one["object"] == "list" and one["model"] == "emb"
    assert one["data"] == [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4]}]
    assert one["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert len(client.post("/embeddings", json={"model": "emb", "input": [1, 2, 3]}).json()["data"]) == 1
    assert len(client.post("/embeddings", json={"model": "emb", "input": [[1, 2], [3]]}).json()["data"]) == 2

    body = {"model": "emb", "input": ["a", "b", "c"], "encoding_format": "base64", "dimensions": 4}
    many = client.post("/embeddings", json=body).json()
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    assert many["usage"] == {"prompt_tokens": 15, "total_tokens": 15}
    for i, item in enumerate(many["data"]):
        assert isinstance(item["embedding"], str)
        floats = struct.unpack("<4f", base64.b64decode(item["embedding"]))
        assert floats == pytest.approx([0.1 * (i + 1), 0.2, 0.3, 0.4], rel=1e-6)


# ------------------------------------------------------------------ images
def test_images_url_and_b64(client: httpx.Client) -> None:
    body = {"model": "img", "prompt": "a cat", "n": 2, "size": "256x256"}
    urls = client.post("/images/generations", json=body).json()
    assert urls == {
        "created": 1735689600,
        "data": [
            {"url": "https://images.invalid/0.png", "revised_prompt": "a cat"},
            {"url": "https://images.invalid/1.png", "revised_prompt": "a cat"},
        ],
    }
    b64 = client.post("/images/generations", json={**body, "response_format": "b64_json"}).json()
    assert len(b64["data"]) == 2
    for item in b64["data"]:
        assert set(item) == {"b64_json"} and base64.b64decode(item["b64_json"]) == b"\x89PNG\r\n\x1a\n"
    assert len(client.post("/images/generations", json={"prompt": "x"}).json()["data"]) == 1


# ------------------------------------------------------------------ transcriptions
AUDIO = os.urandom(3 * 1024 * 1024)
FIELDS = {"model": "whisper", "language": "en", "response_format": "json", "temperature": "0.2"}


def _transcribe(client: httpx.Client, rid: str, **fields: str) -> httpx.Response:
    files = {"file": ("clip.wav", AUDIO, "audio/wav")}
    return client.post(
        "/audio/transcriptions", files=files, data={**FIELDS, **fields}, headers={"x-request-id": rid}
    )


def test_transcription_multipart_recorded(client: httpx.Client, mock: MockUpstream) -> None:
    r = _transcribe(client, "t1")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    size = len(AUDIO)
    assert r.json() == {
        "text": f"transcribed {size} bytes",
        "usage": {"type": "duration", "seconds": math.ceil(size / 32000.0)},
    }
    form = mock.multipart("t1")
    assert form is not None
    assert form["fields"] == FIELDS
    assert form["file"] == {
        "name": "file",
        "filename": "clip.wav",
        "content_type": "audio/wav",
        "size": size,
        "sha256": hashlib.sha256(AUDIO).hexdigest(),
    }
    assert set(form["order"]) == {*FIELDS, "file"} and len(form["order"]) == 5
    rec = mock.requests[-1]
    assert rec.key == "t1" and rec.path == "/v1/audio/transcriptions"
    assert rec.body == b"" and rec.json == FIELDS
    assert rec.headers["content-type"].startswith("multipart/form-data")
    assert mock.multipart("nope") is None


def test_transcription_formats(client: httpx.Client, mock: MockUpstream) -> None:
    size = len(AUDIO)
    verbose = _transcribe(client, "v", response_format="verbose_json").json()
    assert verbose == {
        "task": "transcribe",
        "language": "english",
        "duration": size / 32000.0,
        "text": f"transcribed {size} bytes",
        "segments": [],
    }
    text = _transcribe(client, "t", response_format="text")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == f"transcribed {size} bytes"
    srt = _transcribe(client, "s", response_format="srt")
    assert srt.headers["content-type"].startswith("text/plain")
    assert srt.text == "1\n00:00:00,000 --> 00:00:01,000\ntranscribed\n"
    vtt = _transcribe(client, "w", response_format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ntranscribed\n"

    plain = _transcribe(client, "n1", model="no-duration").json()
    assert plain == {"text": f"transcribed {size} bytes"}
    assert (
        "duration"
        not in _transcribe(client, "n2", model="no-duration", response_format="verbose_json").json()
    )
    assert _transcribe(client, "bad", response_format="mp3").status_code == 400


def test_transcription_failure_modes(client: httpx.Client, mock: MockUpstream) -> None:
    r = _transcribe(client, "e1", model="error500")
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert _transcribe(client, "e2", model="status:503").status_code == 503
    assert _transcribe(client, "e3", model="bad400").status_code == 400
    assert _transcribe(client, "e4", model="garbage").text == "<html>not json</html>"
    form = mock.multipart("e1")
    assert form is not None and form["file"]["size"] == len(AUDIO)  # read and discarded first
    assert client.post("/audio/transcriptions", json={"model": "whisper"}).status_code == 400
    no_file = client.post("/audio/transcriptions", files={"model": (None, "whisper")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"


# ------------------------------------------------------------------ responses
def test_responses_json(client: httpx.Client, mock: MockUpstream) -> None:
    body = {"model": "echo", "input": "hi", "store": False}
    data = client.post("/responses", json=body).json()
    assert data["id"] == "resp_mock" and data["object"] == "response" and data["status"] == "completed"
    assert data["created_at"] == 1735689600 and data["model"] == "echo"
    assert data["output"] == [
        {
            "type": "message",
            "id": "msg_mock",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "echo: hi", "annotations": []}],
        }
    ]
    assert data["usage"] == {
        "input_tokens": 9,
        "output_tokens": 4,
        "total_tokens": 13,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    assert mock.requests[-1].json == body
    items = client.post(
        "/responses", json={"model": "echo", "input": [{"role": "user", "content": "x"}]}
    ).json()
    assert items["output"][0]["content"][0]["text"] == "echo: items"
    assert "usage" not in client.post("/responses", json={"model": "no-usage", "input": "hi"}).json()


def test_responses_stream(client: httpx.Client) -> None:
    r = client.post("/responses", json={"model": "echo", "input": "hi", "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in r.content and b", " not in r.content
    blocks = [b for b in r.text.split("\n\n") if b]
    names, payloads = [], []
    for block in blocks:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        names.append(event[7:])
        payloads.append(json.loads(data[6:]))
    assert names == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert [p["type"] for p in payloads] == names
    assert [p["sequence_number"] for p in payloads] == [0, 1, 2, 3]
    created = payloads[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert [p["delta"] for p in payloads[1:3]] == ["ec", "ho"]
    assert all(
        p["item_id"] == "msg_mock" and p["output_index"] == p["content_index"] == 0 for p in payloads[1:3]
    )
    done = payloads[3]["response"]
    assert done["status"] == "completed" and done["usage"]["total_tokens"] == 13
    assert done["usage"]["input_tokens"] == 9 and done["usage"]["output_tokens"] == 4


# ------------------------------------------------------------------ failure modes on every path
@pytest.mark.parametrize("path", ["/completions", "/embeddings", "/images/generations", "/responses"])
def test_failure_modes_per_path(client: httpx.Client, path: str) -> None:
    assert client.post(path, json={"model": "error500"}).status_code == 500
    assert client.post(path, json={"model": "status:418"}).status_code == 418
    assert client.post(path, json={"model": "bad400"}).json()["error"]["param"] == "tools"
    assert client.post(path, json={"model": "garbage"}).text == "<html>not json</html>"
    with pytest.raises(httpx.ReadTimeout):
        client.post(path, json={"model": "hang"}, timeout=0.3)


# ------------------------------------------------------------------ Riva TTS
def test_tts_wav_and_modes(mock: MockUpstream) -> None:
    url = mock.root_url + "/api/v1/tts/text_to_audio"
    body = {
        "text": "hello",
        "language_code": "en-US",
        "voice_name": "English-US.Female-1",
        "encoding": "LINEAR_PCM",
    }
    r = httpx.post(url, json={**body, "sample_rate_hz": 16000}, headers={"x-request-id": "tts1"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert len(r.content) == 44 + 500 and r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 250)
        assert w.readframes(250) == bytes(500)
    rec = mock.requests[-1]
    assert (
        rec.path == "/api/v1/tts/text_to_audio"
        and rec.key == "tts1"
        and rec.json == {**body, "sample_rate_hz": 16000}
    )

    with wave.open(io.BytesIO(httpx.post(url, json=body, timeout=10).content)) as w:
        assert w.getframerate() == 22050
    boom = httpx.post(url, json={**body, "voice_name": "error500"}, timeout=10)
    assert boom.status_code == 500 and boom.json() == {"error": {"message": "tts boom"}}
    assert httpx.post(url, json={**body, "voice_name": "status:429"}, timeout=10).status_code == 429
    assert httpx.get(url, timeout=10).status_code == 404
    assert httpx.post(mock.root_url + "/api/v1/other", json=body, timeout=10).status_code == 404

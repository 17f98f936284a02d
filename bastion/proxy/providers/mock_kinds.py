"""The mock provider's answers beyond chat: completions, embeddings, images, responses, speech, transcripts.

Each returns the bytes an OpenAI-compatible (or Riva) server would send, deterministically.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from typing import Any

import orjson

from bastion.proxy.providers.mock_text import WORD, answer_for, count_tokens

# A 1x1 transparent PNG: the smallest real image a client can decode.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
SPEECH_CHARACTERS_PER_SECOND = 15
AUDIO_BYTES_PER_SECOND = 32_000  # what the mock assumes an upload holds: 16 kHz, 16-bit, mono


def _event(data: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return "tokens"


def completion(payload: dict[str, Any], model: str, request_id: str, stream: bool) -> list[bytes] | bytes:
    pieces = WORD.findall(answer_for([{"role": "user", "content": _text(payload.get("prompt"))}]))
    cap = payload.get("max_tokens")
    finish = "length" if isinstance(cap, int) and len(pieces) > cap else "stop"
    pieces = pieces[:cap] if isinstance(cap, int) else pieces
    prompt = count_tokens(_text(payload.get("prompt")))
    usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}
    base = {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    if not stream:
        choice = {"index": 0, "text": "".join(pieces), "finish_reason": finish, "logprobs": None}
        return orjson.dumps({**base, "choices": [choice], "usage": usage})
    events = [_event({**base, "choices": [{"index": 0, "text": p, "finish_reason": None}]}) for p in pieces]
    events.append(_event({**base, "choices": [{"index": 0, "text": "", "finish_reason": finish}]}))
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        events.append(_event({**base, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def embeddings(payload: dict[str, Any], model: str) -> bytes:
    value = payload.get("input")
    inputs = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
    size = payload.get("dimensions") if isinstance(payload.get("dimensions"), int) else 8
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item)
        tokens += count_tokens(text) if isinstance(item, str) else len(item)
        digest = hashlib.sha256(text.encode()).digest()
        vector = [digest[i % 32] / 255 - 0.5 for i in range(size)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vector = [v / norm for v in vector]
        encoded: Any = vector
        if payload.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


def images(payload: dict[str, Any]) -> bytes:
    count = payload.get("n") if isinstance(payload.get("n"), int) else 1
    image = base64.b64encode(PNG_1X1).decode()
    if payload.get("response_format") == "b64_json":
        item: dict[str, Any] = {"b64_json": image}
    else:
        item = {"url": f"data:image/png;base64,{image}"}
    data = [{**item, "revised_prompt": payload.get("prompt")} for _ in range(count)]
    return orjson.dumps({"created": int(time.time()), "data": data})


def response(payload: dict[str, Any], model: str, request_id: str, stream: bool) -> list[bytes] | bytes:
    value = payload.get("input")
    if isinstance(value, list):
        messages = [item for item in value if isinstance(item, dict)]
    else:
        messages = [{"role": "user", "content": str(value)}]
    pieces = WORD.findall(answer_for(messages))
    prompt = sum(count_tokens(str(m.get("content"))) for m in messages)
    usage = {
        "input_tokens": prompt,
        "output_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    message = {
        "type": "message",
        "id": f"msg_{request_id}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "".join(pieces), "annotations": []}],
    }
    done = {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [message],
        "usage": usage,
        "store": False,
    }
    if not stream:
        return orjson.dumps(done)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    events = [
        _event({"type": "response.created", "sequence_number": 0, "response": started}, "response.created")
    ]
    for number, piece in enumerate(pieces, start=1):
        delta = {
            "type": "response.output_text.delta",
            "sequence_number": number,
            "item_id": message["id"],
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
        }
        events.append(_event(delta, "response.output_text.delta"))
    finished = {"type": "response.completed", "sequence_number": len(pieces) + 1, "response": done}
    events.append(_event(finished, "response.completed"))
    return events


def speech(payload: dict[str, Any]) -> bytes:
    """A WAV file of silence, as long as the text would take to say (16-bit mono PCM)."""
    rate = payload.get("sample_rate_hz") if isinstance(payload.get("sample_rate_hz"), int) else 22050
    samples = int(rate * len(payload.get("text") or "") / SPEECH_CHARACTERS_PER_SECOND)
    data = b"\x00\x00" * samples
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += (
        struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data))
    )
    return header + data


def transcript(fields: dict[str, str], size: int) -> tuple[bytes, str]:
    """The answer to a transcription of `size` bytes of audio, in the requested format."""
    seconds = round(size / AUDIO_BYTES_PER_SECOND, 3)
    text = f"Transcribed {seconds:g} seconds of audio."
    fmt = fields.get("response_format", "json")
    if fmt == "text":
        return text.encode(), "text/plain; charset=utf-8"
    if fmt == "srt":
        return f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n".encode(), "application/x-subrip"
    if fmt == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n".encode(), "text/vtt"
    if fmt == "verbose_json":
        answer = {"task": "transcribe", "language": fields.get("language", "english"), "duration": seconds}
        return orjson.dumps({**answer, "text": text, "segments": []}), "application/json"
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    return orjson.dumps({"text": text, "usage": usage}), "application/json"

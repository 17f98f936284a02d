"""Per-path answers of ``MockUpstream`` (tests/upstream.py) beyond chat completions.

Pure builders (body dict in, answer object out) for ``/v1/completions``, ``/v1/embeddings``,
``/v1/images/generations``, ``/v1/audio/transcriptions``, ``/v1/responses`` and the NVIDIA Riva
TTS route ``/api/v1/tts/text_to_audio``, plus a streaming multipart reader that never holds a whole
uploaded file in memory. ``MockUpstream`` does the I/O and the model-string failure modes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from aiohttp import BodyPartReader, web

CREATED = 1735689600
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
IMAGES_PATH = "/v1/images/generations"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
RESPONSES_PATH = "/v1/responses"
TTS_PATH = "/api/v1/tts/text_to_audio"

COMPLETION_PIECES = ["Hel", "lo"]
COMPLETION_USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
RESPONSES_PIECES = ["ec", "ho"]
RESPONSES_USAGE = {
    "input_tokens": 9,
    "output_tokens": 4,
    "total_tokens": 13,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 0},
}
EMBEDDING_TOKENS_PER_INPUT = 5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TTS_DEFAULT_RATE = 22050
AUDIO_BYTES_PER_SECOND = 32000.0  # 16 kHz, 16-bit, mono
MULTIPART_CHUNK = 64 * 1024


def error(message: str, type_: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}


# ------------------------------------------------------------------ /v1/completions
def _prompt_text(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if prompt is None:
        return ""
    return prompt if isinstance(prompt, str) else str(prompt)


def completion_json(body: dict[str, Any], model: str) -> dict[str, Any]:
    choice = {"index": 0, "text": "echo: " + _prompt_text(body), "finish_reason": "stop", "logprobs": None}
    answer = {"id": "cmpl-mock", "object": "text_completion", "created": CREATED, "model": model}
    answer.update(choices=[choice], usage=dict(COMPLETION_USAGE))
    if model == "no-usage":
        del answer["usage"]
    return answer


def completion_chunks(model: str, usage: bool) -> list[dict[str, Any]]:
    """The ``data:`` payloads of a streamed text completion (``[DONE]`` is written by the caller)."""
    head = {"id": "cmpl-mock", "object": "text_completion", "created": CREATED, "model": model}
    pieces = [(text, None) for text in COMPLETION_PIECES] + [("", "stop")]
    chunks = [{**head, "choices": [{"index": 0, "text": t, "finish_reason": f}]} for t, f in pieces]
    if usage and model != "no-usage":
        chunks.append({**head, "choices": [], "usage": dict(COMPLETION_USAGE)})
    return chunks


# ------------------------------------------------------------------ /v1/embeddings
def _embedding_inputs(value: object) -> list[object]:
    """One entry per input: a string or a flat list of token ids is a single input."""
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return list(value)
    if isinstance(value, list) and not value:
        return []
    return [value]


def embeddings_json(body: dict[str, Any], model: str) -> dict[str, Any]:
    inputs = _embedding_inputs(body.get("input"))
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i in range(len(inputs)):
        vec = [round(0.1 * (i + 1), 6), 0.2, 0.3, 0.4]
        emb: object = base64.b64encode(struct.pack("<4f", *vec)).decode("ascii") if as_b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
    answer: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if model != "no-usage":
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return answer


# ------------------------------------------------------------------ /v1/images/generations
def images_json(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    prompt = body.get("prompt")
    if body.get("response_format") == "b64_json":
        item: dict[str, Any] = {"b64_json": base64.b64encode(PNG_SIGNATURE).decode("ascii")}
        data = [dict(item) for _ in range(n)]
    else:
        data = [{"url": f"https://images.invalid/{i}.png", "revised_prompt": prompt} for i in range(n)]
    return {"created": CREATED, "data": data}


# ------------------------------------------------------------------ multipart + transcriptions
async def read_multipart(request: web.Request) -> dict[str, Any]:
    """Stream a multipart/form-data body: text parts kept as str, file parts only counted + hashed.

    Returns ``{"fields": {name: str}, "file": {...} | None, "order": [part names]}``; ``file`` is the
    first part that has a filename (later file parts are counted in ``order`` only). A repeated text
    field keeps its last value.
    """
    fields: dict[str, str] = {}
    order: list[str] = []
    file: dict[str, Any] | None = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):  # nested multipart/mixed: not used by OpenAI clients
            await part.release()
            continue
        name = part.name or ""
        order.append(name)
        if part.filename is None:
            fields[name] = await part.text()
            continue
        digest, size = hashlib.sha256(), 0
        while chunk := await part.read_chunk(MULTIPART_CHUNK):
            size += len(chunk)
            digest.update(chunk)
        if file is None:
            ctype = part.headers.get("Content-Type")
            file = {"name": name, "filename": part.filename, "content_type": ctype}
            file.update(size=size, sha256=digest.hexdigest())
    return {"fields": fields, "file": file, "order": order}


def transcription(fields: dict[str, str], size: int, model: str) -> tuple[str, object]:
    """(content type, body) for a transcription of ``size`` audio bytes; body is a dict for JSON."""
    fmt = fields.get("response_format") or "json"
    text = f"transcribed {size} bytes"
    duration = size / AUDIO_BYTES_PER_SECOND
    timed = model != "no-duration"
    if fmt == "json":
        answer: dict[str, Any] = {"text": text}
        if timed:
            answer["usage"] = {"type": "duration", "seconds": math.ceil(duration)}
        return "application/json", answer
    if fmt == "verbose_json":
        answer = {"task": "transcribe", "language": "english", "duration": duration, "text": text}
        if not timed:
            del answer["duration"]
        return "application/json", {**answer, "segments": []}
    if fmt == "text":
        return "text/plain", text
    if fmt == "srt":
        return "text/plain", "1\n00:00:00,000 --> 00:00:01,000\ntranscribed\n"
    if fmt == "vtt":
        return "text/vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ntranscribed\n"
    return "", error(f"unsupported response_format {fmt!r}", param="response_format")


# ------------------------------------------------------------------ /v1/responses
def _response(model: str, status: str, text: str | None, usage: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "resp_mock", "object": "response", "created_at": CREATED}
    obj.update(status=status, model=model, output=[], usage=None)
    if text is not None:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        message = {"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant"}
        obj["output"] = [{**message, "content": content}]
        obj["usage"] = dict(RESPONSES_USAGE)
        if not usage:
            del obj["usage"]
    return obj


def _responses_text(body: dict[str, Any]) -> str:
    value = body.get("input")
    return "echo: " + (value if isinstance(value, str) else "items")


def responses_json(body: dict[str, Any], model: str) -> dict[str, Any]:
    return _response(model, "completed", _responses_text(body), model != "no-usage")


def responses_events(body: dict[str, Any], model: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of a streamed Response; the Responses API sends no ``[DONE]``."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "response.created",
            {"type": "response.created", "response": _response(model, "in_progress", None, True)},
        )
    ]
    for piece in RESPONSES_PIECES:
        delta = {"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0}
        events.append((delta["type"], {**delta, "content_index": 0, "delta": piece}))
    final = _response(model, "completed", _responses_text(body), model != "no-usage")
    events.append(("response.completed", {"type": "response.completed", "response": final}))
    return [(name, {"type": d["type"], "sequence_number": n, **d}) for n, (name, d) in enumerate(events)]


# ------------------------------------------------------------------ Riva TTS
def wav_header(data_len: int, rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte RIFF/WAVE PCM header."""
    block = channels * bits // 8
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * block, block, bits)
    return (
        struct.pack("<4sI4s", b"RIFF", 36 + data_len, b"WAVE") + fmt + struct.pack("<4sI", b"data", data_len)
    )


def tts_wav(body: dict[str, Any]) -> bytes:
    rate = body.get("sample_rate_hz")
    rate = rate if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0 else TTS_DEFAULT_RATE
    text = body.get("text")
    n = len(text) * 100 if isinstance(text, str) else 0
    return wav_header(n, rate) + bytes(n)


JSON_BUILDERS = {
    COMPLETIONS_PATH: completion_json,
    EMBEDDINGS_PATH: embeddings_json,
    IMAGES_PATH: lambda body, model: images_json(body),
    RESPONSES_PATH: responses_json,
}
PATHS = frozenset([*JSON_BUILDERS, TRANSCRIPTIONS_PATH])  # the /v1 paths not answered like chat

"""The built-in `mock` provider: a deterministic local model for the demo, the tests and the benchmark.

It answers with the same bytes an OpenAI-compatible server would send (JSON, or SSE chunks), so every
answer still goes through the real relay path. What it says:

- "Reply with exactly: X" -> X
- "Count from A to B" -> "A, A+1, ..., B" (at most 100 numbers)
- anything else -> the last user message, echoed

One token is one whitespace-delimited word; a prompt costs its words plus 4 per message (role framing).
`max_tokens` / `max_completion_tokens` cut the answer (finish_reason "length"). A request that sets
`reasoning_effort` gets `reasoning_content` before the answer. `chunk_delay_ms` paces streamed chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from bastion.proxy.multipart import MultipartReader, boundary_of
from bastion.proxy.providers import mock_kinds as kinds
from bastion.proxy.providers.base import Provider, UpstreamRequest, UpstreamResponse
from bastion.proxy.providers.mock_text import WORD, answer_for, prompt_tokens


class MockProvider(Provider):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        # Like a real upstream, answer what is on the wire (with Bastion's additions), not the client's body.
        payload = orjson.loads(request.body) if request.body else request.payload
        model, rid, delay = request.upstream_model, request.request_id, self._delay
        if request.path == "/chat/completions":
            chat = _Completion(payload, model, rid)
            return _MockStream(chat.events(), delay) if request.stream else _json(chat.json())
        if request.path == "/completions":
            return _answer(kinds.completion(payload, model, rid, request.stream), delay)
        if request.path == "/responses":
            return _answer(kinds.response(payload, model, rid, request.stream), delay)
        if request.path == "/embeddings":
            return _json(kinds.embeddings(payload, model))
        if request.path == "/images/generations":
            return _json(kinds.images(payload))
        if request.path == "/api/v1/tts/text_to_audio":
            return _MockResponse(200, "audio/wav", kinds.speech(payload))
        if request.path == "/audio/transcriptions" and request.upload is not None:
            fields, size = await _read_form(request.upload, request.content_type)
            body, content_type = kinds.transcript(fields, size)
            return _MockResponse(200, content_type, body)
        error = {
            "error": {
                "message": f"mock provider does not serve {request.path}",
                "type": "invalid_request_error",
            }
        }
        return _MockResponse(404, "application/json", orjson.dumps(error))

    @property
    def _delay(self) -> float:
        return self.config.chunk_delay_ms / 1000


async def _read_form(upload: AsyncIterator[bytes], content_type: str) -> tuple[dict[str, str], int]:
    """Read a multipart upload as a server would: its text fields, and the file's size."""
    reader = MultipartReader(upload, boundary_of(content_type.encode("latin-1")))
    fields: dict[str, str] = {}
    size = 0
    while (head := await reader.next_part()) is not None:
        if head.filename is None:
            fields[head.name] = (await reader.read_part(64 * 1024)).decode("utf-8", "replace")
        else:
            async for chunk in reader.part_data():
                size += len(chunk)
    return fields, size


def _json(body: bytes) -> UpstreamResponse:
    return _MockResponse(200, "application/json", body)


def _answer(answer: list[bytes] | bytes, delay: float) -> UpstreamResponse:
    return _MockStream(answer, delay) if isinstance(answer, list) else _json(answer)


class _Completion:
    """One mock chat answer, rendered either as a chat.completion or as chunks."""

    def __init__(self, payload: dict[str, Any], model: str, request_id: str) -> None:
        messages = payload.get("messages") or []
        self.model = model
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        cap = payload.get("max_completion_tokens")
        if cap is None:
            cap = payload.get("max_tokens")
        pieces = WORD.findall(answer_for(messages))
        self.finish_reason = "length" if cap is not None and len(pieces) > cap else "stop"
        self.pieces = pieces[: int(cap)] if cap is not None else pieces
        self.reasoning = ["Thinking", " it", " over."] if payload.get("reasoning_effort") else []
        self.prompt_tokens = prompt_tokens(messages)
        stream_options = payload.get("stream_options")
        self.include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True

    def usage(self) -> dict[str, int]:
        completion = len(self.pieces) + len(self.reasoning)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def json(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.pieces)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
                "usage": self.usage(),
            }
        )

    def events(self) -> list[bytes]:
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"reasoning_content": piece}, None) for piece in self.reasoning]
        deltas += [({"content": piece}, None) for piece in self.pieces]
        deltas.append(({}, self.finish_reason))
        events = [self._chunk([{"index": 0, "delta": d, "finish_reason": f}]) for d, f in deltas]
        if self.include_usage:
            events.append(self._chunk([], usage=self.usage()))
        events.append(b"data: [DONE]\n\n")
        return events

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class _MockResponse(UpstreamResponse):
    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.headers: Mapping[str, str] = {"content-type": content_type}
        self._body = body
        self._streamed = False

    async def read(self) -> bytes:
        return self._body

    async def next_chunk(self) -> bytes | None:
        if self._streamed:
            return None
        self._streamed = True
        return self._body

    def release(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _MockStream(_MockResponse):
    def __init__(self, events: list[bytes], delay: float) -> None:
        super().__init__(200, "text/event-stream", b"")
        self._events = events
        self._delay = delay
        self._sent = 0

    async def read(self) -> bytes:
        return b"".join(self._events)

    async def next_chunk(self) -> bytes | None:
        if self._sent == len(self._events):
            return None
        if not self._delay:
            self._sent = len(self._events)
            return b"".join(self._events)
        if self._sent:
            await asyncio.sleep(self._delay)
        self._sent += 1
        return self._events[self._sent - 1]

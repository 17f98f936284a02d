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
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from bastion.proxy.providers.base import Provider, UpstreamRequest, UpstreamResponse

_REPLY_EXACTLY = re.compile(r"reply with exactly:\s*(.+)", re.IGNORECASE | re.DOTALL)
_COUNT = re.compile(r"count from (\d+) to (\d+)", re.IGNORECASE)
_WORD = re.compile(r"\s*\S+")
_PER_MESSAGE_TOKENS = 4


def answer_for(messages: list[dict[str, Any]]) -> str:
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    prompt = _text_of(last_user.get("content")) if last_user else ""
    if match := _REPLY_EXACTLY.search(prompt):
        return match.group(1).strip()
    if match := _COUNT.search(prompt):
        start, end = int(match.group(1)), int(match.group(2))
        return ", ".join(str(n) for n in range(start, min(end, start + 99) + 1))
    return prompt or "Hello from Bastion's mock model."


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(_text_of(m.get("content"))) + _PER_MESSAGE_TOKENS for m in messages)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class MockProvider(Provider):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.path != "/chat/completions":
            body = {
                "error": {
                    "message": f"mock provider does not serve {request.path}",
                    "type": "invalid_request_error",
                }
            }
            return _MockResponse(404, "application/json", orjson.dumps(body))
        completion = _Completion(request.payload, request.upstream_model, request.request_id)
        if request.stream:
            return _MockStream(completion, self.config.chunk_delay_ms / 1000)
        return _MockResponse(200, "application/json", completion.json())


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
        pieces = _WORD.findall(answer_for(messages))
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

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def release(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _MockStream(_MockResponse):
    def __init__(self, completion: _Completion, delay: float) -> None:
        super().__init__(200, "text/event-stream", b"")
        self._events = completion.events()
        self._delay = delay

    async def read(self) -> bytes:
        return b"".join(self._events)

    async def chunks(self) -> AsyncIterator[bytes]:
        if not self._delay:
            yield b"".join(self._events)
            return
        for i, event in enumerate(self._events):
            if i:
                await asyncio.sleep(self._delay)
            yield event

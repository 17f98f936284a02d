"""The fixed upstream answers: a ~645 B `chat.completion` and a ~6 KB SSE stream of chunks."""

from __future__ import annotations

import json

CREATED = 1735689600
USAGE = {"prompt_tokens": 24, "completion_tokens": 16, "total_tokens": 40}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def completion_json(target: int = 645) -> str:
    """A chat.completion padded to about `target` bytes (no `$`, `'` or backslash: nginx-safe)."""

    def build(content: str) -> str:
        return _dumps(
            {
                "id": "chatcmpl-bench0000000000000000000000",
                "object": "chat.completion",
                "created": CREATED,
                "model": "bench-upstream",
                "system_fingerprint": "fp_bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            }
        )

    base = build("")
    words = "The quick brown fox jumps over the lazy dog. "
    content = (words * 20)[: max(0, target - len(base))]
    return build(content)


def chunk(delta: dict[str, object], finish: str | None = None, usage: bool = False) -> str:
    event: dict[str, object] = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-upstream",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        event["usage"] = USAGE
    return f"data: {_dumps(event)}\n\n"


def sse_body(target: int = 6 * 1024) -> str:
    """A stream of chunk events of about `target` bytes, with usage, ending with `data: [DONE]`."""
    head = chunk({"role": "assistant", "content": ""})
    tail = chunk({}, finish="stop", usage=True) + "data: [DONE]\n\n"
    middle: list[str] = []
    index = 0
    while len(head) + sum(map(len, middle)) + len(tail) < target:
        middle.append(chunk({"content": f" token{index:03d}"}))
        index += 1
    return head + "".join(middle) + tail


def paced_chunks(count: int) -> list[str]:
    """The paced stream's events: `count` content chunks then the usage chunk (then [DONE], sent apart)."""
    first = chunk({"role": "assistant", "content": "t000"})
    rest = [chunk({"content": f" t{i:03d}"}) for i in range(1, count)]
    return [first, *rest, chunk({}, finish="stop", usage=True)]


def chat_body(model: str) -> bytes:
    """A streamed chat request, as the benchmark's stream clients send it."""
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Benchmark stream: count slowly please."}],
            "max_tokens": 32,
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()

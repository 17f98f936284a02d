"""Token estimates: the worst case reserved before forwarding, and usage when an upstream reports none.

Prompt: a character is counted as a quarter token (ceil), plus 4 tokens per message for role framing,
plus 1,000 tokens per non-text content part (an image, audio), plus the tool definitions' JSON at the
same rate. Output: the request's `max_completion_tokens` / `max_tokens`, else the model's
`max_output_tokens`, else the `BASTION_DEFAULT_MAX_OUTPUT_TOKENS` setting. Usage when the upstream
sends none: the prompt estimate above, and a quarter token per character of the text produced (content,
reasoning, tool-call arguments), at least 1 token whenever any text was produced.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
PER_MESSAGE_TOKENS = 4
PER_MEDIA_PART_TOKENS = 1000
_TEXT_FIELD = re.compile(
    rb'"(?:content|reasoning_content|reasoning|text|arguments)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)


def prompt_tokens(body: dict[str, Any]) -> int:
    chars = 0
    tokens = 0
    for message in body.get("messages") or ():
        tokens += PER_MESSAGE_TOKENS
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
                else:
                    tokens += PER_MEDIA_PART_TOKENS
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


def output_cap(body: dict[str, Any], model_cap: int | None, default: int) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return model_cap or default


def text_chars(payload: bytes) -> int:
    """Characters of generated text in one JSON answer or chunk (escapes counted as written)."""
    return sum(len(m.group(1)) for m in _TEXT_FIELD.finditer(payload))


def completion_tokens_from_chars(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars else 0

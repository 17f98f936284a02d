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
# The string body is matched as "unrolled" runs of plain characters: ~4x faster than one character
# (or escape) per repetition on long generated text.
_TEXT_FIELD = re.compile(
    rb'"(?:content|reasoning_content|reasoning|text|arguments|delta)"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'
)


OUTPUT_CAP_FIELDS = ("max_completion_tokens", "max_tokens")


def prompt_tokens(body: dict[str, Any]) -> int:
    """Chat `messages`, completions `prompt`, embeddings and Responses `input`: text or token ids."""
    counter = _Counter()
    for message in body.get("messages") or ():
        counter.tokens += PER_MESSAGE_TOKENS
        counter.add(message.get("content") if isinstance(message, dict) else None)
    counter.add(body.get("prompt"))
    counter.add(body.get("input"))
    if isinstance(body.get("instructions"), str):
        counter.chars += len(body["instructions"])
    if body.get("tools"):
        counter.chars += len(orjson.dumps(body["tools"]))
    return counter.tokens + math.ceil(counter.chars / CHARS_PER_TOKEN)


class _Counter:
    """Characters of text and exact token ids, through strings, token arrays, parts and items."""

    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0

    def add(self, value: Any) -> None:
        if isinstance(value, str):
            self.chars += len(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            self.tokens += 1  # a token id
        elif isinstance(value, list):
            for item in value:
                self.add(item)
        elif isinstance(value, dict):
            if isinstance(value.get("text"), str):
                self.chars += len(value["text"])
            elif "content" in value:  # a Responses input item
                self.tokens += PER_MESSAGE_TOKENS
                self.add(value["content"])
            else:
                self.tokens += PER_MEDIA_PART_TOKENS


def output_cap(
    body: dict[str, Any], model_cap: int | None, default: int, fields: tuple[str, ...] = OUTPUT_CAP_FIELDS
) -> int:
    for field in fields:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return model_cap or default


def text_chars(payload: bytes) -> int:
    """Characters of generated text in one JSON answer or chunk (escapes counted as written)."""
    return sum(map(len, _TEXT_FIELD.findall(payload)))


def completion_tokens_from_chars(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars else 0

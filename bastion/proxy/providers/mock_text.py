"""The mock model's words: what it answers to a prompt, and how it counts tokens."""

from __future__ import annotations

import re
from typing import Any

_REPLY_EXACTLY = re.compile(r"reply with exactly:\s*(.+)", re.IGNORECASE | re.DOTALL)
_COUNT = re.compile(r"count from (\d+) to (\d+)", re.IGNORECASE)
WORD = re.compile(r"\s*\S+")
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

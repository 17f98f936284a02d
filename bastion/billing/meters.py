"""Meters: how each endpoint kind is priced. Each reserves a worst case before forwarding and charges
the real cost after, from the upstream's answer.

| meter | unit | worst case reserved | charged |
|---|---|---|---|
| tokens | tokens | prompt estimate + output cap | the upstream's usage, else the estimate (flagged) |
| images | image | `n` images | the images in the answer |
| audio | audio ms | the upload at 16 kbit/s, or one request | the answer's duration, else one request |
| characters | character | the text's characters | the same (known before forwarding) |
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bastion.billing import Outcome
from bastion.billing import estimate as est
from bastion.config import ModelConfig
from bastion.money import cost_nano

_PER_UNIT = Decimal(1)
_PER_MILLION = Decimal(1_000_000)
_PER_SECOND_IN_MS = Decimal(1000)
WORST_CASE_BYTES_PER_SECOND = 2000  # 16 kbit/s: no speech codec in use packs audio tighter


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Hold:
    nano: int  # credit reserved
    tokens: int  # counted against the key's tokens per minute
    prompt_estimate: int = 0


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Charge:
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    estimated: bool = False
    quantity: int = 0  # in `unit`s, for meters that do not count tokens
    unit: str | None = None


class Meter(ABC):
    @abstractmethod
    def reserve(self, body: dict[str, Any], model: ModelConfig, default_cap: int, size: int) -> Hold: ...

    @abstractmethod
    def charge(self, model: ModelConfig, hold: Hold, outcome: Outcome) -> Charge: ...


def _failed_silently(outcome: Outcome) -> bool:
    """The upstream failed before producing anything: nothing to charge."""
    return outcome.status >= 400 and outcome.generated_chars() == 0 and not outcome.client_disconnected


class TokenMeter(Meter):
    """Chat, completions, responses (`output=True`) and embeddings (`output=False`)."""

    def __init__(
        self, output: bool = True, output_cap_fields: tuple[str, ...] = est.OUTPUT_CAP_FIELDS
    ) -> None:
        self.output = output
        self.output_cap_fields = output_cap_fields

    def reserve(self, body: dict[str, Any], model: ModelConfig, default_cap: int, size: int) -> Hold:
        prompt = est.prompt_tokens(body)
        output = (
            est.output_cap(body, model.max_output_tokens, default_cap, self.output_cap_fields)
            if self.output
            else 0
        )
        nano = cost_nano([(prompt, model.price.input), (output, model.price.output)])
        return Hold(nano, prompt + output, prompt)

    def charge(self, model: ModelConfig, hold: Hold, outcome: Outcome) -> Charge:
        prompt, completion, estimated = self._tokens(hold, outcome)
        cost = cost_nano([(prompt, model.price.input), (completion, model.price.output)])
        return Charge(prompt, completion, cost, estimated)

    def _tokens(self, hold: Hold, outcome: Outcome) -> tuple[int, int, bool]:
        usage = outcome.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if prompt is None and completion is None:  # the Responses API's names
            prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(prompt, int) and (isinstance(completion, int) or not self.output):
            return prompt, completion if isinstance(completion, int) else 0, False
        if _failed_silently(outcome):
            return 0, 0, False
        return hold.prompt_estimate, est.completion_tokens_from_chars(outcome.generated_chars()), True


class ImageMeter(Meter):
    def reserve(self, body: dict[str, Any], model: ModelConfig, default_cap: int, size: int) -> Hold:
        count = body.get("n") if isinstance(body.get("n"), int) else 1
        return Hold(cost_nano([(count, model.price.image)], per=_PER_UNIT), 0)

    def charge(self, model: ModelConfig, hold: Hold, outcome: Outcome) -> Charge:
        data = (outcome.answer or {}).get("data")
        images = len(data) if isinstance(data, list) else 0
        return Charge(
            0, 0, cost_nano([(images, model.price.image)], per=_PER_UNIT), quantity=images, unit="image"
        )


class AudioMeter(Meter):
    """Per second of audio as the upstream reports it (verbose_json `duration`, or json `usage.seconds`);
    per request when it reports none (text, srt and vtt answers)."""

    def reserve(self, body: dict[str, Any], model: ModelConfig, default_cap: int, size: int) -> Hold:
        seconds = math.ceil(size / WORST_CASE_BYTES_PER_SECOND)
        per_second = cost_nano([(seconds, model.price.audio_second)], per=_PER_UNIT)
        return Hold(max(per_second, cost_nano([(1, model.price.request)], per=_PER_UNIT)), 0)

    def charge(self, model: ModelConfig, hold: Hold, outcome: Outcome) -> Charge:
        if outcome.status >= 400:
            return Charge(0, 0, 0)
        seconds = _duration(outcome.answer)
        if seconds is None:
            return Charge(
                0, 0, cost_nano([(1, model.price.request)], per=_PER_UNIT), quantity=1, unit="request"
            )
        ms = math.ceil(seconds * 1000)
        cost = cost_nano([(ms, model.price.audio_second)], per=_PER_SECOND_IN_MS)
        return Charge(0, 0, cost, quantity=ms, unit="audio_ms")


def _duration(answer: dict[str, Any] | None) -> float | None:
    if not answer:
        return None
    duration = answer.get("duration")
    usage = answer.get("usage")
    if not isinstance(duration, int | float) and isinstance(usage, dict) and usage.get("type") == "duration":
        duration = usage.get("seconds")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
        return float(duration)
    return None


class CharacterMeter(Meter):
    """Text to speech: per 1M characters of the text, known before forwarding."""

    def reserve(self, body: dict[str, Any], model: ModelConfig, default_cap: int, size: int) -> Hold:
        characters = len(body.get("text") or "")
        return Hold(cost_nano([(characters, model.price.characters)], per=_PER_MILLION), 0, characters)

    def charge(self, model: ModelConfig, hold: Hold, outcome: Outcome) -> Charge:
        if outcome.status >= 400:
            return Charge(0, 0, 0)
        return Charge(0, 0, hold.nano, quantity=hold.prompt_estimate, unit="character")

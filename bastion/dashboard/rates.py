"""What the models page says of each model's prices: the units it is billed in (a unit it is not billed
in has no price to show), and what a typical request of each endpoint it serves costs."""

from __future__ import annotations

from decimal import Decimal

from bastion.config.models_file import ModelConfig
from bastion.money import cost_nano

# The price fields each endpoint kind bills in (bastion/billing/meters.py: tokens, images, audio, characters).
BILLED_IN: dict[str, tuple[str, ...]] = {
    "chat": ("input", "output"),
    "completions": ("input", "output"),
    "responses": ("input", "output"),
    "embeddings": ("input",),
    "images": ("image",),
    "transcription": ("audio_second", "request"),
    "tts": ("characters",),
}
UNITS = ("input", "output", "image", "audio_second", "characters")


def billed_prices(model: ModelConfig) -> dict[str, Decimal | None]:
    """Each price field of the page's columns (and `request`), None where the model is not billed in it."""
    billed = {field for endpoint in model.endpoints for field in BILLED_IN.get(endpoint, ())}
    return {field: getattr(model.price, field) if field in billed else None for field in (*UNITS, "request")}


def examples(model: ModelConfig) -> list[tuple[str, int]]:
    """A typical request of each endpoint the model serves, and its exact cost."""
    price, found = model.price, []
    million, one = Decimal(1_000_000), Decimal(1)
    if {"chat", "completions", "responses"} & set(model.endpoints):
        found.append(
            ("1,000 input + 500 output tokens", cost_nano([(1000, price.input), (500, price.output)]))
        )
    if "embeddings" in model.endpoints:
        found.append(("1,000 input tokens", cost_nano([(1000, price.input)])))
    if "images" in model.endpoints:
        found.append(("1 image", cost_nano([(1, price.image)], per=one)))
    if "transcription" in model.endpoints:
        found.append(("1 minute of audio", cost_nano([(60, price.audio_second)], per=one)))
        if price.request:
            found.append(("a transcript of unknown length", cost_nano([(1, price.request)], per=one)))
    if "tts" in model.endpoints:
        found.append(("1,000 characters of speech", cost_nano([(1000, price.characters)], per=million)))
    return found

"""Every proxied endpoint, as data: what it checks, how it is billed, and how its answer comes back.

All of them run through the one `Gateway` request path, so authentication, limits, billing and error
handling exist once. `/v1/audio/transcriptions` (multipart) is served by `bastion.api.transcription`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bastion.api.validation import (
    check_chat,
    check_completions,
    check_embeddings,
    check_images,
    check_responses,
    check_tts,
)
from bastion.billing.meters import AudioMeter, CharacterMeter, ImageMeter, Meter, TokenMeter

TTS_PATH = "/api/v1/tts/text_to_audio"


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # the client-facing route
    kind: str  # the endpoint kind a model must serve
    upstream_path: str  # appended to the provider's base URL
    check: Callable[[dict[str, Any]], None]
    meter: Meter
    streams: bool = False  # honours `"stream": true`
    asks_usage: bool = False  # may add `stream_options.include_usage` (then hides the usage chunk)
    done_marker: bool = True  # its streams end with `data: [DONE]` (the Responses API's do not)
    answer: Literal["json", "json-or-text", "audio"] = "json"
    model_in_body: bool = True  # False: Riva names no model; Bastion's optional `model` is not forwarded


CHAT = Endpoint(
    "/v1/chat/completions",
    "chat",
    "/chat/completions",
    check_chat,
    TokenMeter(),
    streams=True,
    asks_usage=True,
)
COMPLETIONS = Endpoint(
    "/v1/completions",
    "completions",
    "/completions",
    check_completions,
    TokenMeter(),
    streams=True,
    asks_usage=True,
)
EMBEDDINGS = Endpoint(
    "/v1/embeddings", "embeddings", "/embeddings", check_embeddings, TokenMeter(output=False)
)
IMAGES = Endpoint("/v1/images/generations", "images", "/images/generations", check_images, ImageMeter())
RESPONSES = Endpoint(
    "/v1/responses",
    "responses",
    "/responses",
    check_responses,
    TokenMeter(output_cap_fields=("max_output_tokens",)),
    streams=True,
    done_marker=False,
)
TTS = Endpoint(TTS_PATH, "tts", TTS_PATH, check_tts, CharacterMeter(), answer="audio", model_in_body=False)
TRANSCRIPTION = Endpoint(
    "/v1/audio/transcriptions",
    "transcription",
    "/audio/transcriptions",
    lambda body: None,  # checked field by field as the multipart body streams in
    AudioMeter(),
    answer="json-or-text",
)

JSON_ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, IMAGES, RESPONSES, TTS)

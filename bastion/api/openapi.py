"""The OpenAPI document: FastAPI's own routes plus the raw-ASGI proxy routes, described by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bastion import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": True,
    "description": "OpenAI's chat completion request. Unknown fields pass through to the upstream unchanged.",
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
    },
}
_ERRORS = {
    "400": "invalid_request or model_not_found",
    "401": "invalid_api_key",
    "402": "insufficient_funds",
    "413": "request_too_large",
    "429": "rate_limit_exceeded",
    "502": "upstream_error",
}


def _proxy_operation(summary: str, request_schema: dict[str, Any]) -> dict[str, Any]:
    envelope = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "post": {
            "summary": summary,
            "tags": ["openai"],
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}},
            "responses": {
                "200": {
                    "description": "The upstream's answer with `model` set to the public id; "
                    "an SSE stream ending in `data: [DONE]` when `stream` is true.",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                **{status: {"description": codes, **envelope} for status, codes in _ERRORS.items()},
            },
        }
    }


def _request(required: list[str], description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": True,
        "description": description + " Unknown fields pass through to the upstream unchanged.",
        "properties": {"model": {"type": "string", "minLength": 1}, **properties},
    }


_TEXT_OR_TOKENS = {"oneOf": [{"type": "string"}, {"type": "array"}]}
PROXY_OPERATIONS = {
    "/v1/chat/completions": _proxy_operation("Create a chat completion", _CHAT_REQUEST),
    "/v1/completions": _proxy_operation(
        "Create a text completion",
        _request(["model", "prompt"], "OpenAI's legacy completion request.", prompt=_TEXT_OR_TOKENS),
    ),
    "/v1/embeddings": _proxy_operation(
        "Create embeddings",
        _request(
            ["model", "input"],
            "OpenAI's embeddings request.",
            input=_TEXT_OR_TOKENS,
            encoding_format={"enum": ["float", "base64"]},
        ),
    ),
    "/v1/images/generations": _proxy_operation(
        "Generate images (billed per image)",
        _request(
            ["model", "prompt"], "OpenAI's image generation request.", n={"type": "integer", "minimum": 1}
        ),
    ),
    "/v1/responses": _proxy_operation(
        "Create a response (stateless: `store` must be false)",
        _request(["model", "input", "store"], "OpenAI's Responses request.", store={"const": False}),
    ),
    "/api/v1/tts/text_to_audio": _proxy_operation(
        "Text to speech, NVIDIA Riva's contract (answer: audio bytes; billed per 1M characters)",
        {
            "type": "object",
            "required": ["text", "language_code", "voice_name"],
            "properties": {
                "text": {"type": "string"},
                "language_code": {"type": "string", "examples": ["en-US"]},
                "voice_name": {"type": "string", "examples": ["English-US.Female-1"]},
                "sample_rate_hz": {"type": "integer"},
                "encoding": {
                    "type": "integer",
                    "description": "1 LINEAR_PCM, 2 FLAC, 3 MULAW, 4 OGGOPUS, 20 ALAW",
                },
                "model": {"type": "string", "description": "Bastion: which TTS model (default: the first)."},
            },
        },
    ),
    "/v1/audio/transcriptions": _proxy_operation(
        "Transcribe audio (multipart/form-data; billed per second of audio)",
        {"type": "object", "required": ["file", "model"]},
    ),
}


def install_openapi(web: FastAPI, proxy_paths: Iterable[str]) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if web.openapi_schema is None:
            schema = get_openapi(title="Bastion", version=__version__, routes=web.routes)
            documented = {p: PROXY_OPERATIONS[p] for p in proxy_paths if p in PROXY_OPERATIONS}
            schema["paths"] = {**documented, **schema.get("paths", {})}
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["Error"] = _ERROR
            components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            web.openapi_schema = schema
        return web.openapi_schema

    web.openapi = build  # type: ignore[method-assign]
    return build

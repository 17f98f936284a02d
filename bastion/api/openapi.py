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


PROXY_OPERATIONS = {"/v1/chat/completions": _proxy_operation("Create a chat completion", _CHAT_REQUEST)}


def install_openapi(web: FastAPI, proxy_paths: Iterable[str]) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if web.openapi_schema is None:
            schema = get_openapi(title="Bastion", version=__version__, routes=web.routes)
            schema["paths"] = {**{p: PROXY_OPERATIONS[p] for p in proxy_paths}, **schema.get("paths", {})}
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["Error"] = _ERROR
            components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            web.openapi_schema = schema
        return web.openapi_schema

    web.openapi = build  # type: ignore[method-assign]
    return build

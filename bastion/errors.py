"""OpenAI's error envelope and the one exception type that carries it.

Every failure Bastion answers, from any route, is an `ApiError` rendered by `ApiError.body()`:
``{"error": {"message", "type", "code", "param"}}``. The constructors below are the rows of the
contract's error table, so a status, code and type never drift apart.
"""

from __future__ import annotations

import orjson


class ApiError(Exception):
    """An error answer: status, OpenAI-style code and type, a human message, the offending field."""

    def __init__(
        self,
        status: int,
        code: str,
        type_: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.type = type_
        self.message = message
        self.param = param
        self.headers = headers or {}

    def payload(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r}, param={self.param!r})"


class ClientDisconnected(Exception):
    """The client went away while Bastion was still reading its request."""


def invalid_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", "invalid_request_error", message, param)


def model_not_found(model: str, reason: str = "does not exist") -> ApiError:
    return ApiError(
        400, "model_not_found", "invalid_request_error", f"The model '{model}' {reason}.", "model"
    )


def not_found(path: str) -> ApiError:
    return ApiError(404, "not_found", "invalid_request_error", f"Unknown route: {path}")


def method_not_allowed(method: str, path: str, allowed: str) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        "invalid_request_error",
        f"Method {method} is not allowed on {path}; use {allowed}.",
        headers={"allow": allowed},
    )


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_too_large", "invalid_request_error", f"Request body is larger than {limit} bytes."
    )


def request_header_too_large(message: str) -> ApiError:
    return ApiError(431, "request_header_too_large", "invalid_request_error", message)


def upstream_error(message: str) -> ApiError:
    return ApiError(502, "upstream_error", "upstream_error", message)


def service_unavailable(message: str, retry_after: str | None = None) -> ApiError:
    headers = {"retry-after": retry_after} if retry_after else None
    return ApiError(503, "service_unavailable", "server_error", message, headers=headers)


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "server_error", "Internal error; the request was not completed.")


def invalid_api_key() -> ApiError:
    # One answer for missing, malformed, unknown, revoked and expired keys: nothing to probe.
    return ApiError(
        401,
        "invalid_api_key",
        "authentication_error",
        "Invalid API key. Send 'Authorization: Bearer qbt_...' with an active key.",
    )


def insufficient_funds(message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(402, "insufficient_funds", "billing_error", message, headers=headers)


def key_budget_exceeded(message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(402, "key_budget_exceeded", "billing_error", message, headers=headers)


def rate_limited(message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(429, "rate_limit_exceeded", "rate_limit_error", message, headers=headers)

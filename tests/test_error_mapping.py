"""Unit tests of how upstream statuses and bodies become Bastion's envelope."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from bastion.config import Deployment, ModelConfig, Price, ProviderConfig
from bastion.errors import ApiError
from bastion.proxy.providers import HttpProvider
from bastion.proxy.relay import upstream_status_error
from bastion.proxy.routing import ModelNameRestorer, Route, Target


@pytest.fixture
def route(monkeypatch: pytest.MonkeyPatch) -> Route:
    provider = HttpProvider(
        ProviderConfig.model_validate(
            {"name": "p", "base_url": "http://10.1.2.3:8000/v1", "api_key": "sk-upstream-key"}
        )
    )
    model = ModelConfig(
        id="pub",
        category="LLM",
        endpoints=("chat",),
        deployments=(Deployment(provider="p", model="up"),),
        price=Price(input=Decimal(0), output=Decimal(0)),
    )
    return Route(model, Target(model.deployments[0], provider, ModelNameRestorer("up", "pub")))


def _map(status: int, body: object, route: Route, retry_after: str | None = None) -> ApiError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return upstream_status_error(status, raw, retry_after, route)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 401, 403, 407, 302])
def test_server_errors_and_refused_credentials_are_502(route: Route, status: int) -> None:
    error = _map(status, {"error": {"message": "Incorrect API key sk-upstream-key"}}, route)
    assert (error.status, error.code, error.type) == (502, "upstream_error", "upstream_error")
    assert error.message == f"The upstream for model 'pub' answered HTTP {status}."


def test_openai_shaped_4xx_keeps_everything(route: Route) -> None:
    error = _map(
        400,
        {"error": {"message": "no tools", "type": "invalid_request_error", "param": "tools", "code": "x"}},
        route,
    )
    assert (error.status, error.message, error.type, error.param, error.code) == (
        400,
        "no tools",
        "invalid_request_error",
        "tools",
        "x",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}, "too long"),
        ({"detail": "fastapi says no"}, "fastapi says no"),
        ({"error": "tgi says no"}, "tgi says no"),
        (b"plain text reason", "plain text reason"),
        (b"<html>bad</html>", "The upstream rejected the request (HTTP 422)."),
        ([1, 2], "The upstream rejected the request (HTTP 422)."),
    ],
)
def test_other_4xx_shapes_keep_the_upstream_message(route: Route, body: object, message: str) -> None:
    error = _map(422, body, route)
    assert error.status == 422 and error.message == message
    assert error.code == "invalid_request" and error.type in ("invalid_request_error", "BadRequestError")


def test_4xx_messages_are_scrubbed_of_provider_secrets(route: Route) -> None:
    error = _map(
        400, {"error": {"message": "bad key sk-upstream-key at http://10.1.2.3:8000/v1/chat"}}, route
    )
    assert "sk-upstream-key" not in error.message and "10.1.2.3" not in error.message
    assert error.message == "bad key [redacted] at [redacted]/chat"


def test_429_keeps_retry_after(route: Route) -> None:
    error = _map(429, {"error": {"message": "slow down", "code": "tokens"}}, route, retry_after="12")
    assert (error.status, error.code, error.type) == (429, "rate_limit_exceeded", "rate_limit_error")
    assert error.headers == {"retry-after": "12"}

"""How Bastion is served: health, the OpenAPI document, several workers, SDK classes for route errors."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import Gateway, gateway_models_file, start_gateway, stop_gateway
from upstream import MockUpstream


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")


def test_openapi_documents_the_proxy_routes(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model", "messages"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "/healthz" in schema["paths"]
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]


def test_sdk_sees_405_as_api_status_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.get("/chat/completions", cast_to=object)
    assert caught.value.status_code == 405
    assert caught.value.code == "method_not_allowed"
    assert caught.value.type == "invalid_request_error"
    assert caught.value.response.headers["allow"] == "POST"


def test_two_workers_serve_the_same_routes(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    server: Gateway = start_gateway(config, tmp_path / "log", {"BASTION_WORKERS": "2"})
    try:
        deadline = time.monotonic() + 20
        while server.log_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        pids = set(re.findall(r"Started server process \[(\d+)\]", server.log_text()))
        assert len(pids) == 2
        client = openai.OpenAI(base_url=server.base_url, api_key="qbt_x", max_retries=0)
        answers = {
            client.chat.completions.create(model="m-echo", messages=[{"role": "user", "content": str(i)}])
            .choices[0]
            .message.content
            for i in range(8)
        }
        assert answers == {f"echo: {i}" for i in range(8)}
    finally:
        stop_gateway(server)

"""How Bastion is served: health, the OpenAPI document, several workers, SDK classes for route errors."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import Gateway, gateway_models_file, start_gateway, stop_gateway
from provision import REDIS_URL, account_with_key, migrated, run, sqlite_url
from stacks import delete_redis_keys
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


def serve_demo(directory: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`bastion serve --demo ARGS` in `directory`, with only `settings` of Bastion's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")} | settings
    return subprocess.run(
        [sys.executable, "-m", "bastion", "serve", "--demo", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env=env,
    )


def test_several_workers_need_redis(tmp_path: Path) -> None:
    result = serve_demo(tmp_path, "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs BASTION_REDIS_URL" in result.stderr
    assert not (tmp_path / "bastion.db").exists()


def test_two_workers_serve_the_same_routes(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    database = sqlite_url(tmp_path)
    run(migrated(database))
    _, _, key = run(account_with_key(database, "workers", 10**15))
    prefix = f"test-{secrets.token_hex(4)}:"
    env = {
        "BASTION_WORKERS": "2",
        "BASTION_DATABASE_URL": database,
        "BASTION_REDIS_URL": REDIS_URL,
        "BASTION_REDIS_PREFIX": prefix,
    }
    server: Gateway = start_gateway(config, tmp_path / "log", env)
    try:
        deadline = time.monotonic() + 20
        while server.log_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        pids = set(re.findall(r"Started server process \[(\d+)\]", server.log_text()))
        assert len(pids) == 2
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        answers = {
            client.chat.completions.create(model="m-echo", messages=[{"role": "user", "content": str(i)}])
            .choices[0]
            .message.content
            for i in range(8)
        }
        assert answers == {f"echo: {i}" for i in range(8)}
    finally:
        stop_gateway(server)
        delete_redis_keys(REDIS_URL, prefix)


def test_a_heartbeat_window_of_fewer_than_three_checkpoint_intervals_is_refused(tmp_path: Path) -> None:
    result = serve_demo(tmp_path, BASTION_CHECKPOINT_SECONDS="2", BASTION_HEARTBEAT_WINDOW_SECONDS="5")
    assert result.returncode == 2
    assert "BASTION_HEARTBEAT_WINDOW_SECONDS (5) must be at least 3 checkpoint intervals" in result.stderr
    assert "BASTION_CHECKPOINT_SECONDS=2" in result.stderr
    assert not (tmp_path / "bastion.db").exists()

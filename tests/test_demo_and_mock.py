"""`bastion serve --demo` and the built-in mock provider, answering the seed's own examples."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from conftest import Gateway, free_port, stop_gateway
from provision import account_with_key, migrated, sqlite_url

from bastion.api.app import BastionApp, catalog_for
from bastion.config import Settings
from bastion.proxy.providers import HttpProvider, Provider, UpstreamRequest, UpstreamResponse


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # A fresh directory is a fresh machine: no database, no key; the demo creates both.
    port = free_port()
    workdir = tmp_path_factory.mktemp("demo")
    log_path = workdir / "demo.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--demo", "--port", str(port)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        cwd=workdir,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(root + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(log_path.read_text()) from None
            time.sleep(0.05)
    server = Gateway(root + "/v1", root, log_path, process)
    yield server
    stop_gateway(server)


def _demo_key(demo: Gateway) -> str:
    return (demo.log_path.parent / "bastion-demo.key").read_text().strip()


def _client(demo: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.base_url, api_key=_demo_key(demo), max_retries=0)


def test_demo_prints_its_key_once_and_keeps_it(demo: Gateway) -> None:
    key = _demo_key(demo)
    assert key.startswith("qbt_") and len(key) == 44
    assert demo.log_text().count(key) == 1
    assert oct((demo.log_path.parent / "bastion-demo.key").stat().st_mode & 0o777) == "0o600"


def test_demo_prints_the_dashboard_and_a_sign_in_that_works(demo: Gateway) -> None:
    password_file = demo.log_path.parent / "bastion-demo.password"
    password = password_file.read_text().strip()
    assert len(password) >= 12 and oct(password_file.stat().st_mode & 0o777) == "0o600"
    log = demo.log_text()
    port = demo.root.rsplit(":", 1)[1]
    assert f"Dashboard: http://127.0.0.1:{port}/dashboard/" in log and log.count(password) == 1
    assert "sign in as owner@demo.example (owner of 'demo')" in log
    with httpx.Client(base_url=demo.root) as http:
        assert http.get("/").headers["location"] == "/dashboard/"
        page = http.get("/dashboard/signin")
        token = page.text.split('name="form_token" value="')[1].split('"')[0]
        signed = http.post(
            "/dashboard/signin",
            data={"form_token": token, "email": "owner@demo.example", "password": password},
        )
        assert signed.status_code == 303, signed.text
        overview = http.get(signed.headers["location"])
        assert (
            overview.status_code == 200
            and '<div class="nav-account" title="demo">demo</div>' in overview.text
        )
        assert 'data-figure="balance"' in overview.text


def test_seed_curl_example(demo: Gateway) -> None:
    response = httpx.post(
        demo.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {_demo_key(demo)}", "Content-Type": "application/json"},
        content=b'{"model": "gpt-oss-120b",'
        b' "messages": [{ "role": "user", "content": "Reply with exactly: ok" }], "max_tokens": 16}',
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "gpt-oss-120b"
    assert answer["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "ok"},
        "finish_reason": "stop",
    }
    assert answer["usage"] == {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}


def test_seed_streaming_example_count_from_1_to_5(demo: Gateway) -> None:
    stream = _client(demo).chat.completions.create(
        model="gpt-oss-120b", messages=[{"role": "user", "content": "Count from 1 to 5."}], stream=True
    )
    arrivals: list[float] = []
    text = ""
    for chunk in stream:
        assert chunk.model == "gpt-oss-120b"
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            arrivals.append(time.monotonic())
    assert text == "1, 2, 3, 4, 5"
    # The demo paces chunks 20 ms apart: they arrive spread out, not in one buffered lump.
    assert len(arrivals) == 5 and arrivals[-1] - arrivals[0] >= 0.06


def test_mock_reasoning_usage_and_length_cut(demo: Gateway) -> None:
    client = _client(demo)
    answer = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "one two three four five"}],
        max_tokens=2,
        extra_body={"reasoning_effort": "low"},
    )
    choice = answer.choices[0]
    assert choice.message.content == "one two"
    assert choice.finish_reason == "length"
    assert choice.message.model_dump()["reasoning_content"] == "Thinking it over."
    assert answer.usage is not None and answer.usage.completion_tokens == 5  # 2 answer + 3 reasoning

    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"


def test_mock_provider_behind_a_models_file_restores_the_public_id(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.model == "mock-model"
    assert answer.choices[0].message.content == "hello"


class _BrokenProvider(Provider):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        raise RuntimeError("bug with a secret: sk-internal at http://10.0.0.1")


async def test_a_bug_is_a_500_envelope_without_traceback(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path)
    await migrated(database)
    _, _, key = await account_with_key(database, "bug", 10**12)
    settings = Settings(demo=True, database_url=database)
    app = BastionApp(settings, catalog_for(settings))
    await app.startup()
    broken = _BrokenProvider(app.catalog.providers["demo"])
    for choices in app.gateway.router._choices.values():
        choices.targets = [type(t)(t.deployment, broken, t.restore_model) for t in choices.targets]
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bastion", headers=auth) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]}
        )
    assert response.status_code == 500
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["type"]) == ("internal_error", "server_error")
    for leak in ("Traceback", "sk-internal", "10.0.0.1", "RuntimeError"):
        assert leak not in response.text

    sdk_http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://bastion")
    sdk = openai.AsyncOpenAI(base_url="http://bastion/v1", api_key=key, max_retries=0, http_client=sdk_http)
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 500
    assert (caught.value.code, caught.value.type) == ("internal_error", "server_error")
    await app.shutdown()


async def test_provider_pools_open_at_startup_and_close_at_shutdown(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(
        "providers: [{name: up, base_url: 'http://127.0.0.1:9/v1'}]\n"
        "models: [{id: m, category: LLM, deployments: [{provider: up, model: m}], price: {}}]\n"
    )
    settings = Settings(config=config, database_url=sqlite_url(tmp_path))
    app = BastionApp(settings, catalog_for(settings))
    provider = app.providers["up"]
    assert isinstance(provider, HttpProvider) and provider._pool is None
    await app.startup()
    pool = provider._pool
    assert pool is not None and not pool.closed
    await app.shutdown()
    assert pool.closed and provider._pool is None


def test_a_second_demo_on_the_same_port_says_so_in_one_line_and_changes_nothing(demo: Gateway) -> None:
    workdir = demo.log_path.parent
    port = demo.root.rsplit(":", 1)[1]
    secrets = [
        workdir / "bastion-demo.key",
        workdir / "bastion-demo.password",
        workdir / f"bastion-{port}.pid",
    ]
    before = (
        sorted(p.name for p in workdir.iterdir()),
        [(p.read_bytes(), p.stat().st_mtime_ns) for p in secrets],
    )
    second = subprocess.run(
        [sys.executable, "-m", "bastion", "serve", "--demo", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        cwd=workdir,
    )
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr == (
        f"bastion: 127.0.0.1:{port} is in use (another Bastion? pid {demo.process.pid}); pass --port\n"
    )
    after = (
        sorted(p.name for p in workdir.iterdir()),
        [(p.read_bytes(), p.stat().st_mtime_ns) for p in secrets],
    )
    assert after == before
    assert httpx.get(demo.root + "/healthz").status_code == 200  # the first one serves on

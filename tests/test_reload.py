"""Reloading the models file in place: SIGHUP, `bastion config reload`, the admin API, several workers.

Real `bastion serve` processes and two real mock upstreams (A and B): which one recorded a request's
x-request-id says which provider served it. The unit tests at the end drive `LoadedModels` directly:
providers kept, started and closed, breakers kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from conftest import Gateway
from metrics_scrape import scrape, value
from stacks import Stack, drop_stack, make_stack, poll
from upstream import MockUpstream

from bastion.api.reload import LoadedModels
from bastion.config import load_catalog
from bastion.money import NANO_PER_USD
from bastion.proxy.dispatch import Dispatcher
from bastion.proxy.providers import HttpProvider

ADMIN_TOKEN = "admin-token-for-reload-tests-0123"
HELLO = [{"role": "user", "content": "hi"}]
Models = dict[str, tuple[str, str]]  # public id -> (provider, upstream model)


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


def write_models(path: Path, providers: dict[str, MockUpstream], models: Models) -> str:
    """The models file (replaced whole, as an editor or a deploy would); returns its sha256."""
    document = {
        "providers": [
            {"name": name, "base_url": up.base_url, "timeouts": {"connect": 2, "read": 20}}
            for name, up in providers.items()
        ],
        "models": [
            {
                "id": public,
                "category": "LLM",
                "deployments": [{"provider": provider, "model": upstream_model}],
                "price": {"input": 1, "output": 2},
            }
            for public, (provider, upstream_model) in models.items()
        ],
    }
    data = yaml.safe_dump(document).encode()
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return hashlib.sha256(data).hexdigest()


def served_sha(root: str) -> str:
    answer = httpx.get(root + "/readyz", timeout=5)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["models_file"]["sha256"])


def wait_for_sha(root: str, sha: str, timeout: float = 10) -> None:
    assert poll(lambda: served_sha(root) == sha, timeout), (served_sha(root), sha)


def log_lines(gateway: Gateway) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.log_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def messages_starting(gateway: Gateway, prefix: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(gateway) if str(line.get("msg", "")).startswith(prefix)]


def chat(gateway: Gateway, key: str, model: str, request_id: str) -> httpx.Response:
    """One request on a fresh connection (closed after), under a request id the upstream records."""
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": model, "messages": HELLO},
        headers={"Authorization": f"Bearer {key}", "x-request-id": request_id, "Connection": "close"},
        timeout=20,
    )


def served_by(request_id: str, *upstreams: MockUpstream) -> list[int]:
    """Which of the upstreams recorded the request (their positions)."""
    return [i for i, up in enumerate(upstreams) if any(r.key == request_id for r in up.requests)]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack("embedded", tmp_path / "bastion.yaml", tmp_path)
    yield stack
    drop_stack(stack)


# ---------------------------------------------------------------------------------- one process


def test_sighup_with_a_stream_open(embedded: Stack, upstream: MockUpstream, upstream_b: MockUpstream) -> None:
    old_sha = write_models(
        embedded.config_path, {"a": upstream}, {"m-gated": ("a", "gated"), "m-echo": ("a", "echo")}
    )
    gateway = embedded.start()
    _, _, key = embedded.account(NANO_PER_USD)
    assert served_sha(gateway.root) == old_sha
    stream_id = f"reload-stream-{os.urandom(4).hex()}"
    body = {"model": "m-gated", "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {key}", "x-request-id": stream_id}
    with httpx.stream(
        "POST", gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:") and "first" in line)
        # The new file drops provider a (the stream's) for b, moves both models there, adds one.
        new_sha = write_models(
            embedded.config_path,
            {"b": upstream_b},
            {"m-gated": ("b", "gated"), "m-echo": ("b", "echo"), "m-added": ("b", "echo")},
        )
        gateway.process.send_signal(signal.SIGHUP)
        wait_for_sha(gateway.root, new_sha)
        added_id, echo_id = f"added-{os.urandom(4).hex()}", f"echo-{os.urandom(4).hex()}"
        added = chat(gateway, key, "m-added", added_id)
        assert added.status_code == 200 and added.json()["model"] == "m-added"
        assert chat(gateway, key, "m-echo", echo_id).status_code == 200
        assert served_by(added_id, upstream, upstream_b) == [1]
        assert served_by(echo_id, upstream, upstream_b) == [1]
        # Provider a is retired but its stream still runs: its pool is not closed yet.
        assert messages_starting(gateway, "closed provider a") == []
        upstream.open_gate(stream_id)
        rest = [line for line in lines if line.startswith("data:")]
    assert upstream.gate_opened_by_test(stream_id)  # the stream was held open across the reload
    chunks = [json.loads(line[6:]) for line in [first, *rest] if line != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "first second" and rest[-1] == "data: [DONE]"
    assert {c["model"] for c in chunks} == {"m-gated"}
    assert served_by(stream_id, upstream, upstream_b) == [0]  # the deployment it started on
    assert poll(lambda: messages_starting(gateway, "closed provider a"), 10)

    (reloaded,) = messages_starting(gateway, "models file reloaded")
    assert reloaded["trigger"] == "SIGHUP" and new_sha[:12] in reloaded["msg"]
    assert "providers 0 kept, 1 new, 1 retired" in reloaded["msg"]
    samples = scrape(gateway.root)
    assert value(samples, "bastion_models_file_info", sha256=new_sha) == 1
    assert ("bastion_models_file_info", frozenset({("sha256", old_sha)})) not in samples
    assert value(samples, "bastion_models_file_reloads_total", result="ok") == 1
    assert value(samples, "bastion_models_file_reloads_total", result="error") == 0
    loaded_at = value(samples, "bastion_models_file_loaded_timestamp_seconds")
    assert time.time() - 60 < loaded_at <= time.time()


def test_a_broken_file_changes_nothing(
    embedded: Stack, upstream: MockUpstream, upstream_b: MockUpstream
) -> None:
    sha = write_models(embedded.config_path, {"a": upstream}, {"m-echo": ("a", "echo")})
    gateway = embedded.start()
    _, _, key = embedded.account(NANO_PER_USD)
    # A model added, but on a provider the file does not declare.
    document = yaml.safe_load(embedded.config_path.read_text())
    document["models"].append(
        {
            "id": "m-added",
            "category": "LLM",
            "price": {},
            "deployments": [{"provider": "nowhere", "model": "x"}],
        }
    )
    embedded.config_path.write_text(yaml.safe_dump(document))
    gateway.process.send_signal(signal.SIGHUP)
    assert poll(lambda: messages_starting(gateway, "models file reload failed"), 10)
    (failed,) = messages_starting(gateway, "models file reload failed")
    assert failed["level"] == "error" and failed["trigger"] == "SIGHUP"
    assert (
        "unknown provider 'nowhere'" in failed["msg"] and f"still serving sha256={sha[:12]}" in failed["msg"]
    )
    assert gateway.process.poll() is None
    assert served_sha(gateway.root) == sha
    echo_id = f"echo-{os.urandom(4).hex()}"
    answer = chat(gateway, key, "m-echo", echo_id)
    assert answer.status_code == 200 and served_by(echo_id, upstream, upstream_b) == [0]
    missing = chat(gateway, key, "m-added", f"added-{os.urandom(4).hex()}")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "model_not_found"
    samples = scrape(gateway.root)
    assert value(samples, "bastion_models_file_reloads_total", result="error") == 1
    assert value(samples, "bastion_models_file_reloads_total", result="ok") == 0
    assert value(samples, "bastion_models_file_info", sha256=sha) == 1


def test_config_reload_command(embedded: Stack, upstream: MockUpstream, upstream_b: MockUpstream) -> None:
    pid_file = embedded.workdir / "run" / "gateway.pid"
    pid_file.parent.mkdir()
    embedded.settings["BASTION_PID_FILE"] = str(pid_file)  # the server's and the CLI's
    write_models(embedded.config_path, {"a": upstream}, {"m-echo": ("a", "echo")})
    gateway = embedded.start()
    _, _, key = embedded.account(NANO_PER_USD)
    assert pid_file.read_text() == f"{gateway.process.pid}\n"
    config = str(embedded.config_path)

    good = embedded.config_path.read_text()
    embedded.config_path.write_text(good.replace("providers:", "providers: [\n"))
    broken = embedded.bastion("config", "reload", config)
    assert broken.returncode == 1 and broken.stdout == ""
    (line,) = broken.stderr.splitlines()
    assert line.startswith(f"bastion: config error: {config}: ") and line.endswith(
        "(the server was not signalled)"
    )

    new_sha = write_models(
        embedded.config_path, {"b": upstream_b}, {"m-echo": ("b", "echo"), "m-added": ("b", "echo")}
    )
    done = embedded.bastion("config", "reload", config)
    assert done.returncode == 0, done.stderr
    assert f"sha256 {new_sha[:12]}, 2 models" in done.stdout and f"pid {gateway.process.pid}" in done.stdout
    wait_for_sha(gateway.root, new_sha)
    added_id = f"added-{os.urandom(4).hex()}"
    assert chat(gateway, key, "m-added", added_id).status_code == 200
    assert served_by(added_id, upstream, upstream_b) == [1]
    # The broken file was never sent: the only reload the server saw is the good one.
    assert messages_starting(gateway, "models file reload failed") == []
    assert len(messages_starting(gateway, "models file reloaded")) == 1

    # --pid names another file; one naming a process that is gone is refused.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = embedded.workdir / "stale.pid"
    stale.write_text(f"{gone.pid}\n")
    refused = embedded.bastion("config", "reload", config, "--pid", str(stale))
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"bastion: {stale} names process {gone.pid}, which is not running (a stale pid file)"
    )
    absent = embedded.bastion("config", "reload", config, "--pid", str(embedded.workdir / "absent.pid"))
    assert absent.returncode == 1 and "is `bastion serve` running here?" in absent.stderr

    embedded.stop()
    assert gateway.process.returncode in (0, -signal.SIGTERM)
    assert not pid_file.exists()


def test_admin_api_reload(embedded: Stack, upstream: MockUpstream, upstream_b: MockUpstream) -> None:
    sha = write_models(embedded.config_path, {"a": upstream}, {"m-echo": ("a", "echo")})
    gateway = embedded.start({"BASTION_ADMIN_TOKEN": ADMIN_TOKEN})
    url = gateway.root + "/admin/v1/config/reload"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(url, headers=admin).json()["status"] == "unchanged"

    new_sha = write_models(
        embedded.config_path,
        {"a": upstream, "b": upstream_b},
        {"m-echo": ("a", "echo"), "m-b": ("b", "echo")},
    )
    answer = httpx.post(url, headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "reloaded" and body["models"] == 2
    assert body["models_file"]["sha256"] == new_sha and body["models_file"]["path"] == str(
        embedded.config_path
    )
    assert served_sha(gateway.root) == new_sha  # this process, at once
    (reloaded,) = messages_starting(gateway, "models file reloaded")
    assert "providers 1 kept, 1 new, 0 retired" in reloaded["msg"] and reloaded["trigger"] == "admin API"

    embedded.config_path.write_text("providers: []\nmodels: []\n")
    refused = httpx.post(url, headers=admin)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_models_file", "invalid_request_error")
    assert error["message"].startswith("The models file was not reloaded (the one in service is kept): ")
    assert "providers" in error["message"]
    assert served_sha(gateway.root) == new_sha != sha


# ---------------------------------------------------------------------------------- several workers


def test_every_worker_reloads(upstream: MockUpstream, upstream_b: MockUpstream, tmp_path: Path) -> None:
    stack = make_stack("shared", tmp_path / "bastion.yaml", tmp_path)  # PostgreSQL and Redis
    try:
        old_sha = write_models(stack.config_path, {"a": upstream}, {"m-echo": ("a", "echo")})
        gateway = stack.start({"BASTION_WORKERS": "2", "BASTION_ADMIN_TOKEN": ADMIN_TOKEN})
        assert poll(lambda: gateway.log_text().count("Application startup complete") >= 2, 20), (
            gateway.log_text()
        )
        workers = set(re.findall(r"Started server process \[(\d+)\]", gateway.log_text()))
        assert len(workers) == 2
        _, _, key = stack.account(NANO_PER_USD)

        def reloaded_by(sha: str) -> set[str]:
            return {
                str(line["pid"])
                for line in messages_starting(gateway, "models file reloaded")
                if f"sha256={sha[:12]}" in line["msg"]
            }

        new_sha = write_models(
            stack.config_path,
            {"a": upstream, "b": upstream_b},
            {"m-echo": ("a", "echo"), "m-added": ("b", "echo")},
        )
        gateway.process.send_signal(signal.SIGHUP)  # to the supervisor
        assert poll(lambda: reloaded_by(new_sha) == workers, 15), gateway.log_text()
        for n in range(12):  # fresh connections, spread by the kernel over both workers
            assert served_sha(gateway.root) == new_sha
            added_id = f"added-{n}-{os.urandom(3).hex()}"
            assert chat(gateway, key, "m-added", added_id).status_code == 200
            assert served_by(added_id, upstream, upstream_b) == [1]
        # Reloaded in place: the same two workers, none restarted.
        assert set(re.findall(r"Started server process \[(\d+)\]", gateway.log_text())) == workers
        samples = scrape(gateway.root)
        assert value(samples, "bastion_models_file_info", sha256=new_sha) == 1
        assert value(samples, "bastion_models_file_info", sha256=old_sha) == 0
        assert value(samples, "bastion_models_file_reloads_total", result="ok") == 2  # one per worker

        # The admin API, answered by one worker, reloads both.
        last_sha = write_models(stack.config_path, {"a": upstream}, {"m-echo": ("a", "echo")})
        answer = httpx.post(
            gateway.root + "/admin/v1/config/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert answer.status_code == 200 and answer.json()["models_file"]["sha256"] == last_sha
        assert poll(lambda: reloaded_by(last_sha) == workers, 15), gateway.log_text()
        for n in range(12):
            assert served_sha(gateway.root) == last_sha
            gone = chat(gateway, key, "m-added", f"gone-{n}-{os.urandom(3).hex()}")
            assert gone.status_code == 400 and gone.json()["error"]["code"] == "model_not_found"
        assert set(re.findall(r"Started server process \[(\d+)\]", gateway.log_text())) == workers
    finally:
        drop_stack(stack)


# ---------------------------------------------------------------------------------- LoadedModels


def _models_yaml(path: Path, providers: dict[str, str], models: Models) -> None:
    document = {
        "providers": [{"name": name, "base_url": url} for name, url in providers.items()],
        "models": [
            {"id": m, "category": "LLM", "deployments": [{"provider": p, "model": u}], "price": {}}
            for m, (p, u) in models.items()
        ],
    }
    path.write_text(yaml.safe_dump(document))


async def _until(condition: Any) -> bool:
    """Polls `condition` (closing is a task the reload started) for up to 5 s."""
    deadline = time.monotonic() + 5
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_retired_pools_close_after_their_last_request(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    one, two, three = "http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1", "http://127.0.0.1:11/v1"
    first_models = {"m-kept": ("kept", "k"), "m-changed": ("changed", "c"), "m-dropped": ("dropped", "d")}
    _models_yaml(path, {"kept": one, "changed": two, "dropped": three}, first_models)
    catalog = load_catalog(path)
    models = LoadedModels(catalog)
    gateway = SimpleNamespace(router=models.router(catalog), dispatcher=Dispatcher())
    await models.start()
    first = gateway.router
    kept, changed, dropped = (models.providers[n] for n in ("kept", "changed", "dropped"))
    assert all(isinstance(p, HttpProvider) for p in (kept, changed, dropped))
    kept_pool, changed_pool, dropped_pool = kept._pool, changed._pool, dropped._pool  # type: ignore[attr-defined]
    (kept_target,) = first.targets("m-kept")
    gateway.dispatcher.breaker(kept_target).failures = 3
    (dropped_target,) = first.targets("m-dropped")
    gateway.dispatcher.breaker(dropped_target).failed(time.monotonic())
    first.active += 1  # a request in flight on the first file (as Gateway._serve counts them)

    # Second file: `changed` gets another URL, `dropped` goes, `later` comes.
    second_models = {"m-kept": ("kept", "k"), "m-changed": ("changed", "c"), "m-later": ("later", "l")}
    _models_yaml(path, {"kept": one, "changed": three, "later": two}, second_models)
    result = await models.reload(gateway, "test")  # type: ignore[arg-type]
    assert result.ok and result.changed and result.models == 3
    second = gateway.router
    assert second is not first and second.catalog.sha256 == result.version.sha256
    assert models.providers["kept"] is kept and kept._pool is kept_pool  # the same pool, not reopened
    assert models.providers["changed"] is not changed and models.providers["later"].started
    assert second.targets("m-kept") == [kept_target]  # the same deployment, with its breaker
    assert gateway.dispatcher.breaker(kept_target).failures == 3
    # The request in flight may still retry on anything the first file routed to: nothing is closed.
    await asyncio.sleep(0.05)
    assert not changed_pool.closed and not dropped_pool.closed and changed.started and dropped.started

    # A third file before that request ends: `later` retires too, but only the second router used it.
    second.active += 1
    _models_yaml(
        path, {"kept": one, "changed": three}, {"m-kept": ("kept", "k"), "m-changed": ("changed", "c")}
    )
    later = models.providers["later"]
    assert (await models.reload(gateway, "test")).changed  # type: ignore[arg-type]
    third = gateway.router
    assert not later._pool.closed  # type: ignore[attr-defined]
    second.active -= 1
    assert second.on_idle is not None
    second.on_idle()  # its last request is over (what Gateway._serve does)
    assert await _until(lambda: later._pool is None)  # type: ignore[attr-defined]
    assert not changed_pool.closed and not dropped_pool.closed

    first.active -= 1
    assert first.on_idle is not None
    first.on_idle()
    assert await _until(lambda: changed_pool.closed and dropped_pool.closed)
    assert not changed.started and not dropped.started
    assert not kept_pool.closed and kept.started and models.providers["changed"].started
    # Breakers: the dropped deployment's is forgotten, the kept one's survives every reload.
    assert dropped_target not in gateway.dispatcher._breaker_targets.values()
    assert third.targets("m-kept") == [kept_target] and gateway.dispatcher.breaker(kept_target).failures == 3

    # A broken file: nothing changes, the error is reported.
    path.write_text("providers: [{name: x, base_url: 'ftp://nowhere'}]\nmodels: []\n")
    failed = await models.reload(gateway, "test")  # type: ignore[arg-type]
    assert not failed.ok and failed.error is not None and "base_url" in failed.error
    assert gateway.router is third and failed.version is models.version
    assert failed.version.sha256 == third.catalog.sha256
    await models.close()
    assert kept_pool.closed and models.providers["changed"]._pool is None  # type: ignore[attr-defined]


async def test_a_router_with_nothing_in_flight_retires_at_once(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    _models_yaml(path, {"a": "http://127.0.0.1:9/v1"}, {"m": ("a", "x")})
    catalog = load_catalog(path)
    models = LoadedModels(catalog)
    gateway = SimpleNamespace(router=models.router(catalog), dispatcher=Dispatcher())
    await models.start()
    a = models.providers["a"]
    _models_yaml(path, {"b": "http://127.0.0.1:9/v1"}, {"m": ("b", "x")})
    assert (await models.reload(gateway, "test")).changed  # type: ignore[arg-type]
    assert await _until(lambda: not a.started)
    assert list(models.providers) == ["b"]
    await models.close()

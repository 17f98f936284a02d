"""Operating Bastion: readiness, Server-Timing, graceful shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import Gateway, free_port
from provision import REDIS_URL, drop_postgres_database
from stacks import Stack, delete_redis_keys, running_stack
from upstream import MockUpstream

from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hi"}]
TIMING = re.compile(r"gateway;dur=(\d+\.\d{2})(, upstream;dur=(\d+\.\d))?")


def test_server_timing_splits_bastion_from_the_upstream(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json={"model": "m-echo", "messages": HELLO})
    match = TIMING.fullmatch(answer.headers["server-timing"])
    assert match is not None and match.group(3) is not None, answer.headers["server-timing"]
    assert float(match.group(1)) < 1000 and float(match.group(3)) > 0
    streamed = http.post("/v1/chat/completions", json={"model": "m-echo", "messages": HELLO, "stream": True})
    match = TIMING.fullmatch(streamed.headers["server-timing"])
    assert match is not None and match.group(3) is None  # a stream's upstream time is not over at the headers
    refused = http.post("/v1/chat/completions", json={"model": "m-echo"})
    assert refused.status_code == 400 and TIMING.fullmatch(refused.headers["server-timing"])


def test_healthz_and_readyz_when_all_is_well(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready) == {"status", "models_file"}
    assert set(ready["models_file"]) == {"path", "sha256", "loaded_at"}
    assert re.fullmatch(r"[0-9a-f]{64}", ready["models_file"]["sha256"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ready["models_file"]["loaded_at"])


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 5
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
    yield url, server
    server.kill()


def test_readyz_names_what_is_down(
    upstream: MockUpstream,
    blackhole_port: int,
    tmp_path: Path,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_server = own_redis
    stack = next(running_stack("shared", upstream, blackhole_port, tmp_path))
    try:
        stack.stop()
        stack.redis_url = url
        gateway = stack.start()
        assert httpx.get(gateway.root + "/readyz").status_code == 200
        redis_server.kill()
        redis_server.wait()
        down = httpx.get(gateway.root + "/readyz")
        assert down.status_code == 503
        error = down.json()["error"]
        assert (error["code"], error["type"]) == ("service_unavailable", "server_error")
        assert "redis unreachable" in error["message"] and "database" not in error["message"]
        drop_postgres_database(stack.database)
        both = httpx.get(gateway.root + "/readyz").json()["error"]["message"]
        assert "redis unreachable" in both and "database unreachable" in both
    finally:
        stack.stop()
        drop_postgres_database(stack.database)
        delete_redis_keys(REDIS_URL, stack.redis_prefix)  # written before the stack moved to its own Redis


def test_requests_get_503_while_redis_is_down_and_work_again_when_it_is_back(
    upstream: MockUpstream,
    blackhole_port: int,
    tmp_path: Path,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_server = own_redis
    port = url.rsplit(":", 1)[1].split("/")[0]
    stack = next(running_stack("shared", upstream, blackhole_port, tmp_path))
    try:
        stack.stop()
        stack.redis_url = url
        gateway = stack.start()
        account_id, _, key = stack.account(NANO_PER_USD)
        client = stack.client(key)
        client.chat.completions.create(model="m-echo", messages=[{"role": "user", "content": "hi"}])
        stack.wait_records(account_id, 1)  # written: this Redis keeps nothing on disk (no AOF)
        redis_server.kill()
        redis_server.wait()
        down = httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "m-echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert (error["code"], error["type"]) == ("service_unavailable", "server_error")
        assert "127.0.0.1" not in error["message"] and "Traceback" not in down.text
        restarted = subprocess.Popen(
            ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:  # a poll with a deadline: the restarted server has nothing to wait on
                try:
                    answer = client.with_options(max_retries=0).chat.completions.create(
                        model="m-echo", messages=[{"role": "user", "content": "hi"}]
                    )
                    break
                except Exception:
                    assert time.monotonic() < deadline, "requests did not recover with Redis"
                    time.sleep(0.1)
            assert answer.choices[0].message.content == "echo: hi"
            # The account came back from the database (Redis lost it): both requests that were
            # answered are on the books, the refused one is not.
            records = stack.wait_records(account_id, 2)
            assert stack.balance(account_id) == NANO_PER_USD - sum(r.cost_nano for r in records)
        finally:
            restarted.kill()
            restarted.wait()
    finally:
        stack.stop()
        drop_postgres_database(stack.database)
        delete_redis_keys(REDIS_URL, stack.redis_prefix)  # written before the stack moved to its own Redis


def test_idle_client_connections_are_kept_for_the_keepalive_setting(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    stack = next(running_stack("embedded", upstream, blackhole_port, tmp_path))
    try:
        stack.stop()
        gateway = stack.start({"BASTION_KEEPALIVE_SECONDS": "1"})
        request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        port = int(gateway.root.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:

            def answered() -> bool:
                received = b""
                while b'{"status":"ok"}' not in received:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return False
                    received += chunk
                return True

            connection.sendall(request)
            assert answered()
            time.sleep(0.3)  # idle, well within the setting: the same connection serves again
            connection.sendall(request)
            assert answered()
            started = time.monotonic()
            assert connection.recv(4096) == b""  # closed by Bastion once idle for the setting
            assert 0.8 < time.monotonic() - started < 3
    finally:
        stack.stop()


def _sse_events(response: httpx.Response) -> list[str]:
    return [line for line in response.iter_lines() if line.startswith("data:")]


def test_sigterm_lets_a_live_stream_finish_and_records_it(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    stack = next(running_stack("embedded", upstream, blackhole_port, tmp_path))
    try:
        account_id, _, key = stack.account(NANO_PER_USD)
        gateway = stack.gateway
        body = {
            "model": "paced",
            "messages": [{"role": "user", "content": "one two three four five six"}],
            "stream": True,
        }
        with httpx.stream(
            "POST",
            gateway.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            gateway.process.send_signal(signal.SIGTERM)  # mid-stream: 100 ms between chunks
            rest = [line for line in lines if line.startswith("data:")]
        chunks = [json.loads(e[6:]) for e in [first, *rest] if e != "data: [DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == "one two three four five six"
        assert rest[-1] == "data: [DONE]"
        assert gateway.process.wait(15) in (0, -signal.SIGTERM)
        (record,) = stack.records(account_id)
        assert record.status == 200 and record.completion_tokens == 6 and not record.estimated
    finally:
        stack.stop()


def test_past_the_grace_period_a_stream_ends_with_an_error_event(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    workdir = tmp_path
    stack: Stack = next(running_stack("embedded", upstream, blackhole_port, workdir))
    try:
        stack.stop()
        gateway: Gateway = stack.start({"BASTION_SHUTDOWN_GRACE_SECONDS": "1"})
        account_id, _, key = stack.account(NANO_PER_USD)
        body = {"model": "m-slow", "messages": HELLO, "stream": True}
        with httpx.stream(
            "POST",
            gateway.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            lines = response.iter_lines()
            next(line for line in lines if "tick" in line)
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data:")]
        ended = time.monotonic() - signalled
        assert 0.8 < ended < 5, ended
        assert '"code":"service_unavailable"' in rest[-1] and "shutting down" in rest[-1]
        assert "[DONE]" not in "".join(rest)
        assert gateway.process.wait(15) in (0, -signal.SIGTERM)
        (record,) = stack.records(account_id)
        assert record.status == 503 and record.estimated and record.cost_nano > 0
    finally:
        stack.stop()


def test_https_with_a_key_and_certificate(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    stack = next(running_stack("embedded", upstream, blackhole_port, tmp_path))
    try:
        stack.stop()
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion",
                "serve",
                "--port",
                str(port),
                "--config",
                str(stack.config_path),
                "--ssl-keyfile",
                str(key),
                "--ssl-certfile",
                str(cert),
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
            | stack.env()
            | {"BASTION_TEST_UPSTREAM_KEY": "x"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _, _, api_key = stack.account(NANO_PER_USD)
            deadline = time.monotonic() + 20
            with httpx.Client(verify=str(cert), base_url=f"https://127.0.0.1:{port}") as tls:
                while True:
                    try:
                        tls.get("/healthz")
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline and process.poll() is None
                        time.sleep(0.05)
                answer = tls.post(
                    "/v1/chat/completions",
                    json={"model": "m-echo", "messages": HELLO},
                    headers={"Authorization": f"Bearer {api_key}"},
                )
                assert answer.status_code == 200 and answer.json()["model"] == "m-echo"
            with pytest.raises(httpx.TransportError):  # plain HTTP is not served on the TLS port
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
        finally:
            process.terminate()
            process.wait(10)
    finally:
        stack.stop()


def test_https_needs_both_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "serve", "--demo", "--ssl-keyfile", "k.pem"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
    )
    assert result.returncode == 2 and "needs both --ssl-keyfile and --ssl-certfile" in result.stderr

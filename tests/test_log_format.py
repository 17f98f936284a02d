"""What `bastion serve` logs look like: readable text on a terminal, JSON lines when piped.

Real `bastion serve --demo` processes, one on a pseudo-terminal (the `pty` module), one with its
stderr on a pipe; each answers one chat request, whose access line is checked too.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from stacks import poll

from bastion.logs import TextAccessHandler, TextFormatter, log_format

CLOCK = r"\d\d:\d\d:\d\d"
HELLO = {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}]}


def _env(**settings: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_") and k != "NO_COLOR"}
    return inherited | settings


def _chat(root: str, workdir: Path) -> None:
    key = (workdir / "bastion-demo.key").read_text().strip()
    answer = httpx.post(root + "/v1/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text


def serve_on_a_terminal(workdir: Path, env: dict[str, str]) -> str:
    """The demo on a pseudo-terminal (stdout and stderr): all it wrote there, one request served."""
    port = free_port()
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        os.chdir(workdir)
        os.execve(
            sys.executable, [sys.executable, "-m", "bastion", "serve", "--demo", "--port", str(port)], env
        )
    written = bytearray()

    def read_until(text: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in written and time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.1)
            if ready:
                try:
                    written.extend(os.read(terminal, 65536))
                except OSError:  # the child closed the terminal
                    break
        return text in written

    try:
        assert read_until(b"Application startup complete.", 30), written.decode(errors="replace")
        _chat(f"http://127.0.0.1:{port}", workdir)
        assert read_until(b"/v1/chat/completions", 10), written.decode(errors="replace")
    finally:
        os.kill(pid, signal.SIGTERM)
        read_until(b"Finished server process", 10)
        os.waitpid(pid, 0)
        os.close(terminal)
    return written.decode()


def test_on_a_terminal_one_readable_line_each(tmp_path: Path) -> None:
    text = serve_on_a_terminal(tmp_path, _env())
    lines = text.replace("\r\n", "\n").splitlines()
    assert not [line for line in lines if line.startswith("{")]
    assert "Dashboard: http://127.0.0.1:" in text  # the demo's banner first, as it was
    # time, level, logger, message
    startup = [line for line in lines if line.endswith("Application startup complete.")]
    assert len(startup) == 1 and re.fullmatch(
        rf"{CLOCK} INFO    uvicorn: Application startup complete\.", startup[0]
    )
    assert any(
        re.fullmatch(rf"{CLOCK} INFO    bastion: listening on http://127\.0\.0\.1:\d+ \(CTRL\+C to stop\)", x)
        for x in lines
    )
    (access,) = [line for line in lines if "POST /v1/chat/completions" in line]
    key = (tmp_path / "bastion-demo.key").read_text().strip()
    assert re.fullmatch(
        rf"{CLOCK} \x1b\[32m200\x1b\[0m POST /v1/chat/completions gpt-oss-120b [\d.]+ms"
        rf" \d+\+\d+ tokens \$[\d.]+ key={key[:12]} req_[0-9a-f]+",
        access,
    ), access
    assert key not in access


def test_json_on_a_terminal_when_asked(tmp_path: Path) -> None:
    text = serve_on_a_terminal(tmp_path, _env(BASTION_LOG_FORMAT="json"))
    logged = [json.loads(line) for line in text.replace("\r\n", "\n").splitlines() if line.startswith("{")]
    assert any(line["msg"] == "Application startup complete." for line in logged)
    assert [line["status"] for line in logged if line["logger"] == "bastion.access"] == [200]
    assert "\x1b" not in text and "\\u001b" not in text and "color_message" not in text


def test_piped_every_line_is_json_without_terminal_escapes(tmp_path: Path) -> None:
    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "--demo", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=_env(),
            cwd=tmp_path,
        )
    try:
        assert poll(lambda: b"Application startup complete." in stderr_path.read_bytes(), 30)
        _chat(f"http://127.0.0.1:{port}", tmp_path)
        assert poll(lambda: b'"bastion.access"' in stderr_path.read_bytes(), 10)
    finally:
        process.terminate()
        process.wait(15)
    written = stderr_path.read_bytes()
    assert b"\x1b" not in written and b"\\u001b" not in written and b"color_message" not in written
    lines = [json.loads(line) for line in written.decode().splitlines()]  # every one is JSON
    started = {f"Started server process [{process.pid}]", f"Finished server process [{process.pid}]"}
    assert started <= {line["msg"] for line in lines}
    (access,) = [line for line in lines if line["logger"] == "bastion.access"]
    assert (access["status"], access["path"], access["model"]) == (
        200,
        "/v1/chat/completions",
        "gpt-oss-120b",
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_format_is_chosen_once_from_the_setting_and_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert log_format("auto", _Terminal()) == ("text", True)
    assert log_format("auto", io.StringIO()) == ("json", False)
    assert log_format("json", _Terminal()) == ("json", False)
    assert log_format("text", io.StringIO()) == ("text", False)  # text, but no colour into a file
    monkeypatch.setenv("NO_COLOR", "1")
    assert log_format("text", _Terminal()) == ("text", False)


def test_text_lines_without_colour() -> None:
    record = logging.makeLogRecord(
        {
            "name": "bastion",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "held %s",
            "args": ("up",),
            "trigger": "SIGHUP",
            "color_message": "\x1b[36mheld\x1b[0m",
            "created": 0.0,
        }
    )
    line = TextFormatter(colour=False).format(record)
    assert re.fullmatch(rf"{CLOCK} WARNING bastion: held up  trigger=SIGHUP", line), line
    refused = {
        "request_id": "req_1",
        "method": "POST",
        "path": "/v1/embeddings",
        "status": 402,
        "error": "insufficient_funds",
        "key": "qbt_AbCdEfGh",
        "model": "m",
        "stream": False,
        "latency_ms": 1.25,
    }
    assert TextAccessHandler(io.StringIO()).line("22:30:01", refused) == (
        "22:30:01 402 POST /v1/embeddings m 1.25ms insufficient_funds key=qbt_AbCdEfGh req_1"
    )

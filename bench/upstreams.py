"""The upstreams: nginx with fixed JSON / SSE answers, and the paced aiohttp stream server."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import completion_json, sse_body
from bench.procs import free_port, stop, wait_http

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{ default_type text/plain; return 200 'ok'; }}
        location = /json/v1/chat/completions {{
            default_type application/json;
            return 200 '{json}';
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
{sse_parts}
            return 200 '{sse_vars}';
        }}
    }}
}}
"""


@dataclass
class Upstream:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.process)


def _nginx_quote(text: str) -> str:
    if any(c in text for c in "$'\\"):
        raise ValueError("nginx body must not contain $, ' or backslashes")
    return text.replace("\n", "\\n")


def _split_events(body: str, limit: int = 3000) -> list[str]:
    """nginx refuses parameters over 4 KB: cut the SSE body, at event boundaries, into quoted pieces."""
    pieces: list[str] = []
    current = ""
    for event in body.split("\n\n")[:-1]:
        event += "\n\n"
        if current and len(_nginx_quote(current + event)) > limit:
            pieces.append(current)
            current = ""
        current += event
    if current:
        pieces.append(current)
    assert "".join(pieces) == body
    return pieces


def start_nginx(nginx: str, workdir: Path, workers: int = 1) -> Upstream:
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    pieces = _split_events(sse_body())
    conf.write_text(
        NGINX_CONF.format(
            workers=workers,
            prefix=prefix,
            port=port,
            json=_nginx_quote(completion_json()),
            sse_parts="\n".join(
                f"            set $sse{i} '{_nginx_quote(p)}';" for i, p in enumerate(pieces)
            ),
            sse_vars="".join(f"$sse{i}" for i in range(len(pieces))),
        )
    )
    log = prefix / "stderr.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    upstream = Upstream("nginx", port, process, log)
    try:
        wait_http(upstream.root + "/healthz", process, log)
    except BaseException:
        upstream.stop()
        raise
    return upstream


def start_paced(workdir: Path) -> Upstream:
    port = free_port()
    return _start_module("paced", workdir, port, "bench.paced", str(port))


def start_relay(workdir: Path, upstream: Upstream) -> Upstream:
    """The bare TCP relay in front of `upstream` (bench/relay.py)."""
    port = free_port()
    return _start_module("relay", workdir, port, "bench.relay", str(port), str(upstream.port))


def _start_module(name: str, workdir: Path, port: int, module: str, *args: str) -> Upstream:
    log = workdir / f"{name}.log"
    package_root = Path(__file__).resolve().parent.parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    upstream = Upstream(name, port, process, log)
    try:
        wait_http(upstream.root + "/healthz", process, log)
    except BaseException:
        upstream.stop()
        raise
    return upstream

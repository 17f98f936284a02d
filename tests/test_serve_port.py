"""`bastion serve` binds its port before it does anything else, and keeps one pid file per port.

A taken port (or an address this machine does not have) is one line on stderr and exit status 2,
before anything is written. Two servers in one directory write bastion-PORT.pid each, and
`bastion config reload` signals the one asked for (--port), the only one running, or refuses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, start_gateway, stop_gateway
from stacks import drop_stack, make_stack
from test_reload import served_sha, wait_for_sha, write_models
from upstream import MockUpstream


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        cwd=cwd,
    )


def test_a_port_another_program_holds_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = serve(tmp_path, "--demo", "--port", str(port))
    assert refused.returncode == 2 and refused.stdout == ""
    assert (
        refused.stderr
        == f"bastion: 127.0.0.1:{port} is in use (not by a Bastion started here); pass --port\n"
    )
    assert list(tmp_path.iterdir()) == []  # no database, no demo key, no pid file


def test_an_address_this_machine_does_not_have(tmp_path: Path) -> None:
    port = free_port()
    refused = serve(tmp_path, "--demo", "--host", "192.0.2.1", "--port", str(port))  # TEST-NET-1
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"bastion: cannot listen on 192.0.2.1:{port}: no such address on this machine (pass --host)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_two_servers_in_one_directory_and_config_reload(
    tmp_path: Path, upstream: MockUpstream, upstream_b: MockUpstream
) -> None:
    stack = make_stack("embedded", tmp_path / "bastion.yaml", tmp_path)
    first_file, second_file = tmp_path / "first.yaml", tmp_path / "second.yaml"
    try:
        write_models(first_file, {"a": upstream}, {"m-echo": ("a", "echo")})
        second_sha = write_models(second_file, {"a": upstream}, {"m-other": ("a", "echo")})
        first = start_gateway(first_file, tmp_path / "first.log", stack.env(), cwd=tmp_path)
        stack.gateways.append(first)
        second = start_gateway(second_file, tmp_path / "second.log", stack.env(), cwd=tmp_path)
        stack.gateways.append(second)
        ports = {g.process.pid: int(g.root.rsplit(":", 1)[1]) for g in (first, second)}
        for pid, port in ports.items():
            assert (tmp_path / f"bastion-{port}.pid").read_text() == f"{pid}\n"

        # Both files change; with two servers here the command needs to be told which one.
        first_sha = write_models(
            first_file, {"b": upstream_b}, {"m-echo": ("b", "echo"), "m-added": ("b", "echo")}
        )
        write_models(second_file, {"b": upstream_b}, {"m-other": ("b", "echo")})
        ambiguous = stack.bastion("config", "reload", str(first_file), cwd=tmp_path)
        low, high = sorted(ports.values())
        assert ambiguous.returncode == 1 and ambiguous.stdout == ""
        assert (
            ambiguous.stderr
            == f"bastion: 2 servers run here (ports {low}, {high}): pass --port PORT (or --pid FILE)\n"
        )

        by_port = stack.bastion(
            "config", "reload", str(first_file), "--port", str(ports[first.process.pid]), cwd=tmp_path
        )
        assert by_port.returncode == 0, by_port.stderr
        assert f"bastion serve (pid {first.process.pid}) reloads" in by_port.stdout
        wait_for_sha(first.root, first_sha)
        assert served_sha(second.root) == second_sha
        assert "models file reload" not in second.log_text()  # it was not signalled at all

        # The second one stopped (its pid file goes with it), the one left is found without --port.
        stop_gateway(second)
        assert not (tmp_path / f"bastion-{ports[second.process.pid]}.pid").exists()
        last_sha = write_models(first_file, {"a": upstream}, {"m-echo": ("a", "echo")})
        alone = stack.bastion("config", "reload", str(first_file), cwd=tmp_path)
        assert alone.returncode == 0, alone.stderr
        wait_for_sha(first.root, last_sha)
    finally:
        drop_stack(stack)

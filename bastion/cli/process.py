"""The `bastion serve` process: its pid file, and the supervisor of `--workers N`.

The pid file (BASTION_PID_FILE, `bastion-{port}.pid` by default: one per port, so that two servers
started in one directory keep theirs apart) is how `bastion config reload` finds the running server to
send it SIGHUP; it names the process that answers SIGHUP (the server, or the workers' supervisor) and
is removed when that process ends.

With `--workers N`, uvicorn's multiprocess supervisor answers SIGHUP by replacing every worker (each new
one started before the old one is stopped, which then has the shutdown grace period for its streams).
Bastion's workers reload the models file in place on SIGHUP instead (bastion/api/reload.py), cutting
nothing short, so this supervisor forwards the signal to each of them. It builds on uvicorn internals
(how `uvicorn.run` starts its supervisor, the `handle_<signal>` dispatch, `processes`), checked by
tests/test_uvicorn_internals.py against the uvicorn versions pyproject.toml allows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

from bastion.api.reload import SUPERVISOR_ENV

log = logging.getLogger("bastion")


class ReloadingSupervisor(Multiprocess):
    def handle_hup(self) -> None:
        pids = [p.pid for p in self.processes if p.pid is not None and p.process.is_alive()]
        log.info("SIGHUP: every worker reloads the models file (workers %s)", ", ".join(map(str, pids)))
        for pid in pids:
            # One that just ended is replaced by a worker that reads the file as it starts.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


def run_workers(config: Config, sockets: list[socket.socket], pid_path: Path | None) -> None:
    """What `uvicorn.run` does for `workers > 1`, with ReloadingSupervisor as the supervisor, on the
    sockets `bastion serve` bound. Its workers know its pid (SUPERVISOR_ENV): the admin API's reload,
    answered by one of them, signals it."""
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    supervisor = ReloadingSupervisor(config, sockets=sockets)  # its signal handlers are set
    with pid_file(pid_path), contextlib.suppress(KeyboardInterrupt):
        supervisor.run()


class _Terminated(BaseException):
    pass


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated


@contextlib.contextmanager
def pid_file(path: Path | None) -> Iterator[None]:
    """This process's pid in `path` while the block runs; the file is removed after it, SIGTERM
    included (uvicorn, having shut down on SIGTERM, raises it again with the handler it found, which
    would otherwise end the process before the file is removed)."""
    if path is None:
        yield
        return
    pid = os.getpid()
    _warn_if_taken(path, pid)
    try:
        path.write_text(f"{pid}\n")
    except OSError as exc:
        log.warning(
            "cannot write the pid file %s (%s): `bastion config reload` will not find this server", path, exc
        )
        yield
        return
    hooked = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if hooked:
        signal.signal(signal.SIGTERM, _terminated)
    terminated = False
    try:
        yield
    except _Terminated:
        terminated = True
    finally:
        if hooked:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(pid):
                path.unlink()
    if terminated:
        os.kill(pid, signal.SIGTERM)  # the exit status a SIGTERM gives


def _warn_if_taken(path: Path, pid: int) -> None:
    try:
        other = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    if other != pid and process_exists(other):
        log.warning(
            "the pid file %s named process %d, which is running: it now names this one (%d)", path, other, pid
        )


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int:
    """The pid in a pid file; OSError or ValueError when there is none."""
    return int(path.read_text().strip())


PORT_FIELD = "{port}"


def pid_path(template: str, port: int) -> Path:
    """The pid file of the server on `port`: BASTION_PID_FILE, its `{port}` replaced."""
    return Path(template.replace(PORT_FIELD, str(port)))


def live_pid(path: Path) -> int | None:
    """The pid a pid file names, if that process is running."""
    try:
        pid = read_pid(path)
    except (OSError, ValueError):
        return None
    return pid if process_exists(pid) else None


@dataclass(frozen=True)
class PidFile:
    path: Path
    port: int
    pid: int | None  # None: no running process (a stale file)


def pid_files(template: str) -> list[PidFile]:
    """Every pid file the template names here (`bastion-8000.pid`, `bastion-8081.pid`...), by port."""
    pattern = Path(template)
    before, _, after = pattern.name.partition(PORT_FIELD)
    name = re.compile(re.escape(before) + r"(\d+)" + re.escape(after))
    found = []
    for path in pattern.parent.glob(pattern.name.replace(PORT_FIELD, "*")):
        match = name.fullmatch(path.name)
        if match:
            found.append(PidFile(path, int(match[1]), live_pid(path)))
    return sorted(found, key=lambda f: f.port)

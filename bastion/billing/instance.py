"""Who this process is, for the checkpoints of its streams, and whether another one is certainly gone.

An instance id is `<host>:<pid>:<space>:<start>`: `space` names the process-id space (this boot of this
kernel, and the pid namespace: two containers on one host have different ones), `start` the process's
start time in that space. Another instance in the same space is certainly dead when its pid no longer
runs the process that started then; in any other space nothing is certain, and only its heartbeat
tells (checkpoints.py). The check is what lets a restarted instance settle its predecessor's streams at
once rather than after the heartbeat window.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from functools import cache
from pathlib import Path

_UNKNOWN = "-"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_of(pid: int) -> str | None:
    """The process's start time (clock ticks since boot: field 22 of /proc/PID/stat), if it runs."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command's name, which may hold anything
    return fields[19] if len(fields) > 19 else None


@cache
def _space() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    if boot is None or namespace is None:
        return _UNKNOWN
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:12]


def own_instance_id() -> str:
    host = socket.gethostname().replace(":", "_") or "host"
    start = _start_of(os.getpid()) if _space() != _UNKNOWN else None
    return f"{host}:{os.getpid()}:{_space()}:{start or secrets.token_hex(6)}"


def certainly_dead(instance_id: str) -> bool:
    """True only when `instance_id` is of this process-id space and its process is gone."""
    try:
        _, pid, space, start = instance_id.rsplit(":", 3)
    except ValueError:
        return False
    if space == _UNKNOWN or space != _space() or not pid.isdigit():
        return False
    return _start_of(int(pid)) != start

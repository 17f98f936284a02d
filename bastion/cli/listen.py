"""The listening sockets of `bastion serve`, bound before it does or prints anything else.

A port that is taken is then found before the demo writes its key or its database, before the pid
file is written and before any banner is printed: the failure is one line and leaves the directory as
it was. uvicorn is handed the bound sockets (`Server.run(sockets=...)`, the supervisor's `sockets`).
"""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """The address could not be listened on: `in_use` when another socket holds the port."""

    def __init__(self, message: str, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Sockets listening on every address `host` names (as asyncio's create_server would bind them);
    ListenError, with every socket closed, if one cannot be bound. They listen at once: a second server
    started meanwhile finds the port taken, and early connections wait in the backlog."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host!r}: {exc.strerror} (pass --host)") from None
    sockets: list[socket.socket] = []
    bound_port = port
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 socket has IPv4
            sock.bind((address[0], bound_port, *address[2:]))
            sock.listen(backlog)
            sock.set_inheritable(True)  # --workers N: the workers serve this socket
            bound_port = sock.getsockname()[1]  # port 0: every address on the one the first was given
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise _refusal(host, port, exc) from None
    return sockets


def _refusal(host: str, port: int, exc: OSError) -> ListenError:
    at = where(host, port)
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"{at} is in use", in_use=True)
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"cannot listen on {at}: no such address on this machine (pass --host)")
    if exc.errno == errno.EACCES:
        return ListenError(f"cannot listen on {at}: permission denied (ports below 1024 need privileges)")
    return ListenError(f"cannot listen on {at}: {exc.strerror}")

"""A real PgBouncer in transaction pooling mode, on a free port, in front of the machine's PostgreSQL:
what managed PostgreSQL poolers give by default. Debian's `pgbouncer` package (`.ci/run` installs it)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POSTGRES = ("127.0.0.1", 5432)


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgBouncer:
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        binary = pgbouncer_binary()
        assert binary, "pgbouncer is not installed (apt-get install pgbouncer)"
        command = [binary, str(self.workdir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            command[1:1] = ["-u", "postgres"]
        log = (self.workdir / "pgbouncer.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, (self.workdir / "pgbouncer.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "pgbouncer did not start listening"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash or a restart by an orchestrator: clients see connections drop
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def pgbouncer(pool_size: int = 4) -> PgBouncer:
    """A started PgBouncer: every database of the local PostgreSQL, transaction pooling, a small pool
    (so server connections are shared between clients, as in production). Its files are in a directory
    of its own (run as root, it drops to `postgres`, which must reach them); `close` removes it."""
    workdir = Path(tempfile.mkdtemp(prefix="bastion-pgbouncer-"))
    port = _free_port()
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={POSTGRES[0]} port={POSTGRES[1]}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        "server_lifetime = 3600\n"
        "ignore_startup_parameters = extra_float_digits,options,search_path\n"
        f"pidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, postgres.pw_uid, postgres.pw_gid)
    bouncer = PgBouncer(workdir, port)
    bouncer.start()
    return bouncer

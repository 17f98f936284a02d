"""Real Redis engines on free ports for tests: a Redis Cluster of masters (`redis_cluster`), and a primary, a
replica and three Sentinels (`redis_sentinel`). Debian's `redis-server` and `redis-cli` (`redis-tools`);
Sentinel is `redis-server <conf> --sentinel`.

Each harness is a context manager: whatever it started is killed and its directory removed on the way out,
a failing test included (and a start that fails half way). Ports are picked below the kernel's ephemeral
range (so no outgoing connection takes one between the pick and the bind), a cluster node's with its bus
port (+10000) free too; a server that still loses its port to a race is started again on another one.
Every wait polls against a deadline, and a failure carries the tail of the engine's log."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.retry import Retry

HOST = "127.0.0.1"
SLOTS = REDIS_CLUSTER_HASH_SLOTS
BUS_OFFSET = 10000  # Redis Cluster's node-to-node bus listens on the client port + 10000

T = TypeVar("T")


class EngineError(RuntimeError):
    """An engine did not start, or did not reach the state a harness waits for, in time."""


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def redis_cli_binary() -> str | None:
    return shutil.which("redis-cli") or (
        "/usr/bin/redis-cli" if Path("/usr/bin/redis-cli").exists() else None
    )


def _required(binary: str | None, name: str) -> str:
    if binary is None:
        raise EngineError(f"{name} is not installed (apt-get install redis-server)")
    return binary


# Ports -----------------------------------------------------------------------------------------------

_taken: set[int] = set()  # handed out by this process: two harnesses never race each other for one
_taken_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds: TIME_WAIT is fine
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, bus: bool = False) -> int:
    """A port nothing listens on and no other harness of this process was given; with `bus`, its
    cluster bus port (+10000) too. Both stay below the ephemeral range and below 55535 + 10000."""
    top = min(_ephemeral_low(), 55535 + BUS_OFFSET) - (BUS_OFFSET if bus else 0)
    low = 10000
    if top - low < 2000:  # an unusual ephemeral range: take what the brief allows
        top = 55535
    for _ in range(2000):
        port = random.randrange(low, top)
        wanted = (port, port + BUS_OFFSET) if bus else (port,)
        with _taken_lock:
            if any(p in _taken for p in wanted) or not all(_bindable(p) for p in wanted):
                continue
            _taken.update(wanted)
        return port
    raise EngineError("no free port found")


# Processes -------------------------------------------------------------------------------------------


def _connection(port: int, timeout: float = 2.0) -> redis.Redis:
    """A plain connection for the harness's own commands: RESP2 replies, no retries (a dead node answers
    at once), binary keys kept intact through `surrogateescape`."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        decode_responses=True,
        encoding_errors="surrogateescape",
    )


def _poll(check: Callable[[], T | None], timeout: float, what: str, details: Callable[[], str] = str) -> T:
    """`check()` until it returns something other than None/False (a Redis error counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except (redis.RedisError, OSError) as error:
            last = error
        if time.monotonic() >= deadline:
            reason = f" (last error: {last!r})" if last else ""
            raise EngineError(f"{what} not within {timeout:g}s{reason}\n{details()}")
        time.sleep(0.05)


def _info(port: int, section: str) -> dict[str, Any]:
    with _connection(port) as conn:
        return conn.info(section)


def _pairs(flat: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """A RESP2 flat [k, v, k, v, ...] list (SENTINEL replicas' entries) as a dict."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass
class RedisProcess:
    """One redis-server (or Sentinel) process; `args(port)` gives its command line after the binary."""

    name: str
    workdir: Path
    args: Callable[[int], list[str]]
    bus: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {self.name}: no log"
        return f"--- {self.name} (port {self.port}) log tail:\n" + "\n".join(text)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10) -> None:
        """Starts it on a free port (after `kill`: on its port again, with its data), waits until it
        answers PING."""
        binary = _required(redis_server_binary(), "redis-server")
        again = bool(self.port)
        for attempt in range(5):
            if not again:
                self.port = free_port(bus=self.bus)
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [binary, *self.args(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.workdir,
                )
            deadline = time.monotonic() + timeout
            while self.process.poll() is None:
                try:
                    with _connection(self.port, 0.5) as conn:
                        if conn.ping():
                            return
                except redis.RedisError:
                    pass
                if time.monotonic() >= deadline:
                    self.kill()
                    raise EngineError(
                        f"{self.name} did not answer PING within {timeout:g}s\n{self.log_tail()}"
                    )
                time.sleep(0.02)
            if again or attempt == 4 or "Address already in use" not in self.log_tail(5):
                raise EngineError(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")
            # Lost the port (or its bus port) to another program between the pick and the bind: another.

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, clients see their connections drop."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(10)


def _close_all(processes: Iterable[RedisProcess], workdir: Path, clients: list[Any]) -> None:
    for client in clients:
        with suppress(Exception):
            client.close()
    clients.clear()
    for process in processes:
        with suppress(Exception):
            process.kill()
    shutil.rmtree(workdir, ignore_errors=True)


# Redis Cluster ---------------------------------------------------------------------------------------


class RedisCluster:
    """`masters` redis-server nodes in cluster mode, no replicas, every slot assigned (`redis-cli --cluster
    create`). `url` is Bastion's form of it; `client()` a redis-py cluster client for assertions."""

    host = HOST

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.workdir = workdir
        self.replicas = replicas
        self.processes = [
            RedisProcess(f"node-{index}", workdir, self._node_args, bus=True)
            for index in range(masters * (1 + replicas))
        ]
        self._clients: list[Any] = []
        self._ids: dict[int, str] = {}

    def _node_args(self, port: int) -> list[str]:
        data = self.workdir / str(port)
        data.mkdir(exist_ok=True)
        return [
            "--port", str(port),
            "--bind", HOST,
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "2000",
            "--appendonly", "yes",
            "--dir", str(data),
            "--save", "",
        ]  # fmt: skip

    @property
    def ports(self) -> list[int]:
        return [process.port for process in self.processes]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.ports[0]}"

    @property
    def seed_urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}" for port in self.ports]

    def logs(self) -> str:
        return "\n".join(process.log_tail() for process in self.processes)

    def start(self) -> None:
        for process in self.processes:
            process.start()
        cli = _required(redis_cli_binary(), "redis-cli")
        command = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports)]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        created = subprocess.run(
            command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        if created.returncode != 0 or "All 16384 slots covered" not in created.stdout:
            raise EngineError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}\n{self.logs()}"
            )
        for port in self.ports:
            with _connection(port) as conn:
                self._ids[port] = conn.execute_command("CLUSTER", "MYID")
        self.wait_until_stable()

    def close(self) -> None:
        _close_all(self.processes, self.workdir, self._clients)

    # Views of the cluster

    def connection(self, port: int) -> redis.Redis:
        """A plain (not cluster-aware) connection to one node: it answers MOVED/ASK itself."""
        conn = _connection(port, 5.0)
        self._clients.append(conn)
        return conn

    def node_id(self, port: int) -> str:
        return self._ids[port]

    def slot_map(self, port: int | None = None) -> dict[int, int]:
        """slot -> port of its master, as node `port` (the first one alive by default) sees it."""
        if port is None:
            port = next(process.port for process in self.processes if process.alive)
        with _connection(port) as conn:
            ranges = conn.execute_command("CLUSTER", "SLOTS")
        owners: dict[int, int] = {}
        for start, end, master, *_replicas in ranges:
            for slot in range(int(start), int(end) + 1):
                owners[slot] = int(master[1])
        return owners

    def node_for_slot(self, slot: int) -> int:
        """The port of the master owning `slot`, as the first node sees it."""
        owner = self.slot_map().get(slot)
        if owner is None:
            raise EngineError(f"slot {slot} is not assigned")
        return owner

    @staticmethod
    def slot_of(key: str | bytes) -> int:
        """The key's hash slot: CRC16 of the key, or of its {hash tag}."""
        return key_slot(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key)

    def node_for_key(self, key: str | bytes) -> int:
        return self.node_for_slot(self.slot_of(key))

    def _stable(self) -> bool:
        views = []
        for port in self.ports:
            with _connection(port) as conn:
                text = conn.execute_command("CLUSTER", "INFO")
                nodes = conn.execute_command("CLUSTER", "NODES")
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_assigned") != str(SLOTS):
                return False
            if int(info.get("cluster_known_nodes", 0)) != len(self.ports):
                return False
            if any(flag in nodes for flag in ("handshake", "fail", "disconnected", "noaddr")):
                return False
            if "->-" in nodes or "-<-" in nodes:  # a slot left migrating or importing
                return False
            replication = _info(port, "replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
            views.append(self.slot_map(port))
        return len(views[0]) == SLOTS and all(view == views[0] for view in views)

    def wait_until_stable(self, timeout: float = 20) -> None:
        """Until every node says cluster_state:ok, knows every other, and all agree on every slot's owner."""
        _poll(self._stable, timeout, "the cluster settling (cluster_state:ok, one slot map)", self.logs)

    # Changes

    def move_slot(
        self,
        slot: int,
        to_port: int,
        *,
        keys_batch: int = 10,
        between_batches: Callable[[], object] | None = None,
        migrate_timeout_ms: int = 5000,
    ) -> int:
        """Moves one slot to the master on `to_port` live, as `redis-cli --cluster reshard` does: the target
        IMPORTING, the source MIGRATING, its keys MIGRATEd `keys_batch` at a time, then the slot assigned to
        the target on every master. `between_batches()` is called while the slot is half migrated: once
        before the first batch and after every batch (so traffic meets ASK and TRYAGAIN replies). Returns
        the number of keys moved; waits until every node agrees on the new owner."""
        source = self.node_for_slot(slot)
        if source == to_port:
            return 0
        if to_port not in self.ports:
            raise ValueError(f"{to_port} is not a node of this cluster")
        moved = 0
        failed: list[Exception] = []

        def pause() -> None:
            # A callback that fails does not leave the slot half migrated: the move completes, then raises.
            if between_batches is not None and not failed:
                try:
                    between_batches()
                except Exception as error:
                    failed.append(error)

        with _connection(source, 10.0) as src, _connection(to_port, 10.0) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to_port))
            pause()
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_batch):
                src.execute_command(
                    "MIGRATE", HOST, to_port, "", 0, migrate_timeout_ms, "REPLACE", "KEYS", *keys
                )
                moved += len(keys)
                pause()
        # The target first (it bumps its epoch and stops importing), then the source, then the others.
        for port in [to_port, source, *(p for p in self.ports if p not in (to_port, source))]:
            with _connection(port, 10.0) as conn:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.node_id(to_port))
        _poll(
            lambda: all(self.slot_map(port).get(slot) == to_port for port in self.ports),
            20,
            f"every node seeing slot {slot} on {to_port}",
            self.logs,
        )
        self.wait_until_stable()
        if failed:
            raise failed[0]
        return moved

    def kill_master_of(self, slot: int) -> int:
        """SIGKILL the master owning `slot` (a replica of it takes over after the node timeout)."""
        port = self.node_for_slot(slot)
        next(process for process in self.processes if process.port == port).kill()
        return port

    def wait_for_promotion(self, slot: int, old_port: int, timeout: float = 15) -> int:
        """Until the nodes alive agree that a node other than `old_port` (a promoted replica) owns `slot`."""

        def promoted() -> int | None:
            alive = [process.port for process in self.processes if process.alive]
            owners = {self.slot_map(port).get(slot) for port in alive}
            owner = owners.pop() if len(owners) == 1 else None
            return owner if owner not in (None, old_port) else None

        return _poll(promoted, timeout, f"a replica promoted for slot {slot}", self.logs)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A redis-py cluster client (closed with the harness)."""
        startup = [redis.cluster.ClusterNode(HOST, port) for port in self.ports]
        client = redis.cluster.RedisCluster(startup_nodes=startup, **kwargs)
        self._clients.append(client)
        return client

    def flushall(self) -> None:
        for port in self.ports:
            with _connection(port, 10.0) as conn:
                conn.execute_command("FLUSHALL", "SYNC")

    def delete_all(self, match: str = "*") -> int:
        """Deletes the keys matching `match` on every node (one key per UNLINK: no CROSSSLOT)."""
        deleted = 0
        for port in self.ports:
            with _connection(port, 10.0) as conn:
                keys = list(conn.scan_iter(match=match, count=1000))
                pipe = conn.pipeline(transaction=False)
                for key in keys:
                    pipe.unlink(key)
                deleted += sum(pipe.execute()) if keys else 0
        return deleted


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0) -> Iterator[RedisCluster]:
    """A started, settled Redis Cluster (`replicas` per master); killed and its files removed after."""
    cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="bastion-redis-cluster-")), masters, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


# Redis Sentinel --------------------------------------------------------------------------------------


class RedisSentinel:
    """A primary, a replica (both AOF with fsync on every write) and three Sentinels watching them as the
    service `bastion` (quorum 2, down after 1 s). `primary_port`/`replica_port` are the roles at start;
    `current_primary()` is what the Sentinels say now."""

    service = "bastion"
    host = HOST

    def __init__(self, workdir: Path, sentinels: int = 3, quorum: int = 2) -> None:
        self.workdir = workdir
        self.quorum = quorum
        self.primary = RedisProcess("primary", workdir, self._server_args)
        self.replica = RedisProcess("replica", workdir, self._replica_args)
        self.sentinels = [
            RedisProcess(f"sentinel-{i}", workdir, self._sentinel_args) for i in range(sentinels)
        ]
        self._clients: list[Any] = []
        self._killed: int | None = None

    def _server_args(self, port: int) -> list[str]:
        data = self.workdir / str(port)
        data.mkdir(exist_ok=True)
        return [
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(data),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",  # the default waits 5 s for more replicas before a full sync
        ]  # fmt: skip

    def _replica_args(self, port: int) -> list[str]:
        return [*self._server_args(port), "--replicaof", HOST, str(self.primary.port)]

    def _sentinel_args(self, port: int) -> list[str]:
        data = self.workdir / f"sentinel-{port}"
        data.mkdir(exist_ok=True)
        config = self.workdir / f"sentinel-{port}.conf"  # Sentinel rewrites it: a file of its own, writable
        if config.exists():  # a restart: keep what the Sentinel wrote (its id, the current primary)
            return [str(config), "--sentinel"]
        config.write_text(
            f"port {port}\n"
            f"bind {HOST}\n"
            f'dir "{data}"\n'
            f"sentinel monitor {self.service} {HOST} {self.primary.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        return [str(config), "--sentinel"]

    @property
    def primary_port(self) -> int:
        return self.primary.port

    @property
    def replica_port(self) -> int:
        return self.replica.port

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"{HOST}:{p}" for p in self.sentinel_ports) + f"/{self.service}"

    @property
    def primary_url(self) -> str:
        return f"redis://{HOST}:{self.primary_port}"

    @property
    def replica_url(self) -> str:
        return f"redis://{HOST}:{self.replica_port}"

    def _servers(self) -> list[RedisProcess]:
        return [self.primary, self.replica]

    def logs(self) -> str:
        return "\n".join(process.log_tail() for process in [*self._servers(), *self.sentinels])

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        _poll(
            lambda: _info(self.replica_port, "replication").get("master_link_status") == "up",
            20,
            "the replica's link to the primary",
            self.logs,
        )
        # Started after the replica is in sync, so each Sentinel's first INFO of the primary lists it.
        for sentinel in self.sentinels:
            sentinel.start()
        _poll(
            self._sentinels_ready,
            20,
            "every Sentinel knowing the primary, the replica and the others",
            self.logs,
        )

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            with _connection(port) as conn:
                address = conn.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
                replicas = [_pairs(r) for r in conn.execute_command("SENTINEL", "replicas", self.service)]
                others = conn.execute_command("SENTINEL", "sentinels", self.service)
            if address is None or int(address[1]) != self.primary_port:
                return False
            if not any(
                int(r["port"]) == self.replica_port
                and r["flags"] == "slave"
                and r.get("master-link-status") == "ok"
                for r in replicas
            ):
                return False
            if len(others) != len(self.sentinels) - 1:
                return False
        return True

    def close(self) -> None:
        _close_all([*self.sentinels, *self._servers()], self.workdir, self._clients)

    def connection(self, port: int) -> redis.Redis:
        """A plain connection to one server or Sentinel (closed with the harness)."""
        conn = _connection(port, 5.0)
        self._clients.append(conn)
        return conn

    def client(self) -> redis.Redis:
        """A plain connection to the primary the Sentinels name now."""
        return self.connection(self.current_primary()[1])

    def current_primary(self) -> tuple[str, int]:
        """The primary's address, from the first Sentinel that answers."""
        errors = []
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            try:
                with _connection(sentinel.port) as conn:
                    host, port = conn.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
                return host, int(port)
            except (redis.RedisError, TypeError, ValueError) as error:
                errors.append(repr(error))
        raise EngineError(f"no Sentinel answered: {errors}")

    def process_on(self, port: int) -> RedisProcess:
        for process in [*self._servers(), *self.sentinels]:
            if process.port == port:
                return process
        raise KeyError(port)

    def kill_primary(self) -> int:
        """SIGKILLs the current primary's process; returns its port."""
        _host, port = self.current_primary()
        self.process_on(port).kill()
        self._killed = port
        return port

    def restart(self, port: int) -> None:
        """Starts a killed server again on its port, with its data (the Sentinels make a former primary a
        replica of the new one)."""
        self.process_on(port).start()

    def _failed_over(self, old: int) -> int | None:
        answers = set()
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with _connection(sentinel.port) as conn:
                address = conn.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
            if address is None:
                return None
            answers.add((address[0], int(address[1])))
        if len(answers) != 1:
            return None  # the Sentinels do not agree yet (the leader's hello not heard by all)
        ((_host, port),) = answers
        if port == old or _info(port, "replication").get("role") != "master":
            return None
        return port

    def wait_for_failover(self, timeout: float = 15, *, old_port: int | None = None) -> int:
        """Until every live Sentinel names one primary other than `old_port` (by default the one
        `kill_primary` killed, else the first primary) and that server answers with role:master; its port."""
        old = old_port if old_port is not None else self._killed or self.primary_port
        return _poll(lambda: self._failed_over(old), timeout, f"a failover away from {old}", self.logs)


@contextmanager
def redis_sentinel(sentinels: int = 3, quorum: int = 2) -> Iterator[RedisSentinel]:
    """A started primary, replica and Sentinels, all agreeing; killed, their files removed, on the way out."""
    service = RedisSentinel(Path(tempfile.mkdtemp(prefix="bastion-redis-sentinel-")), sentinels, quorum)
    try:
        service.start()
        yield service
    finally:
        service.close()


__all__ = [
    "EngineError",
    "RedisCluster",
    "RedisProcess",
    "RedisSentinel",
    "free_port",
    "redis_cli_binary",
    "redis_cluster",
    "redis_sentinel",
    "redis_server_binary",
]

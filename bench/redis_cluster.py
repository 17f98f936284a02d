"""A 3-master Redis Cluster on free ports, for the benchmark's Redis Cluster run (`--only cluster`).

`RedisCluster(directory).start()` starts the masters (`redis-server --cluster-enabled yes`, no
persistence, each in its own process group), joins them with `redis-cli --cluster create` and waits
until every node reports `cluster_state:ok` and knows the others; `stop()` kills them (the caller
removes the directory). Ports are picked below the kernel's ephemeral range with their cluster bus port
(+10000) free too; a node that still loses its port to a race is started again on another one. A
failure says which step and carries the tail of the nodes' logs. `python -m bench.redis_cluster` starts
one, prints its URL and stops it on Enter or Ctrl-C.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.procs import stop, tail

HOST = "127.0.0.1"
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000
SLOTS = 16_384
REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"


class ClusterError(RuntimeError):
    pass


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise ClusterError(f"{name} is not installed (apt-get install redis-server)")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_cluster_port(avoid: set[int]) -> int:
    """A port and its bus port (+10000) nothing listens on, below the ephemeral range (no outgoing
    connection takes one meanwhile) and below 55535 (the bus port must exist)."""
    top = min(_ephemeral_low(), 55_535 + BUS_OFFSET) - BUS_OFFSET
    if top - 10_000 < 1_000:
        top = 55_535
    for _ in range(1_000):
        port = random.randrange(10_000, top)
        if port in avoid or port + BUS_OFFSET in avoid:
            continue
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise ClusterError("no free port pair for a cluster node")


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def cluster_info(port: int) -> dict[str, str]:
    with _client(port) as client:
        answer = client.execute_command("CLUSTER INFO")
    if isinstance(answer, dict):
        return {str(k): str(v) for k, v in answer.items()}
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class RedisCluster:
    directory: Path
    masters: int = 3
    nodes: list[Node] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """What BASTION_REDIS_URL names it by (every master a seed)."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    @property
    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes]

    def start(self, timeout: float = 30) -> RedisCluster:
        """Start the masters, create the cluster, wait until it serves every slot (stop() on failure)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for _ in range(self.masters):
                self.nodes.append(self._start_node())
            self._create(timeout)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, attempts: int = 5) -> Node:
        server = binary(REDIS_SERVER)
        avoid = {p + offset for p in self.ports for offset in (0, BUS_OFFSET)}
        for _ in range(attempts):
            port = free_cluster_port(avoid)
            data = self.directory / str(port)
            data.mkdir(exist_ok=True)
            log = self.directory / f"redis-{port}.log"
            command = [
                server,
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                "--bind", HOST,
                "--dir", str(data),
            ]  # fmt: skip
            with log.open("ab") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
            node = Node(port, process, log)
            if self._answers(node, deadline=time.monotonic() + 10):
                return node
            stop(process, grace=2)  # lost its port to a race (or failed): try another one
            avoid |= {port, port + BUS_OFFSET}
        raise ClusterError(f"redis-server did not start on a free port in {attempts} tries:\n{tail(log)}")

    @staticmethod
    def _answers(node: Node, deadline: float) -> bool:
        while node.process.poll() is None:
            try:
                with _client(node.port, 0.5) as client:
                    if client.ping():
                        return True
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return False

    def _create(self, timeout: float) -> None:
        command = [
            binary(REDIS_CLI), "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            took = f"redis-cli --cluster create took over {timeout:.0f} s"
            raise ClusterError(f"{took}\n{self.logs()}") from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise ClusterError(f"redis-cli --cluster create failed ({done.returncode}):\n{output}")

    def _wait_ok(self, timeout: float) -> None:
        """Every node: cluster_state ok, all slots assigned and served, every master known."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            pending = []
            for port in self.ports:
                try:
                    info = cluster_info(port)
                except (redis.RedisError, OSError) as exc:
                    pending.append(port)
                    last = exc
                    continue
                last = info
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != str(SLOTS)
                    or int(info.get("cluster_known_nodes", 0)) < self.masters
                ):
                    pending.append(port)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"cluster not ok within {timeout:.0f} s on {pending} (last: {last!r})\n{self.logs()}"
                )
            time.sleep(0.1)

    def keys(self) -> int:
        """How many keys the masters hold (DBSIZE summed)."""
        total = 0
        for port in self.ports:
            with _client(port) as client:
                total += int(client.dbsize())
        return total

    def logs(self, lines: int = 10) -> str:
        return "\n".join(f"--- redis {node.port}:\n{tail(node.log, lines)}" for node in self.nodes)

    def stop(self) -> list[str]:
        """Kill every node (SIGTERM, then SIGKILL); the problems met, if any. The data goes with them
        (no persistence): the gateway's keys on the cluster included."""
        problems = []
        for node in self.nodes:
            try:
                stop(node.process, grace=5)
            except Exception as exc:
                problems.append(f"stopping redis {node.port}: {exc}")
        self.nodes.clear()
        return problems


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="bastion-bench-cluster-"))
    cluster = RedisCluster(directory)
    try:
        cluster.start()
        print(cluster.url, flush=True)
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

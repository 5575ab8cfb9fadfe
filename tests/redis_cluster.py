"""A real Redis Cluster for tests: three primaries and three replicas, ``redis-server`` processes.

Each node persists as the single test server does (append-only, fsync always) and has a short
node timeout (1 s), so a killed primary's replica takes over in a few seconds, as a managed
cluster does in its own (longer) time.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster

__all__ = ["RedisClusterServers"]

NODE_TIMEOUT_MS = 1000


def _free_port_pair() -> int:
    """A port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class RedisClusterServers:
    directory: Path
    ports: list[int] = field(default_factory=lambda: [_free_port_pair() for _ in range(6)])
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        for port in self.ports:
            self._start_node(binary, port)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok(replicated=True)

    def _start_node(self, binary: str, port: int) -> None:
        folder = self.directory / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", "0",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.node(port).ping():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start")
            time.sleep(0.02)

    def alive(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def wait_ok(self, timeout_s: float = 30.0, *, replicated: bool = False) -> None:
        """Until every live node says the cluster is ok and sees all 16,384 slots served;
        ``replicated``: and every primary has a replica in sync."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                infos = [self.node(p).cluster("info") for p in self.alive()]
                ok = all(
                    i["cluster_state"] == "ok" and int(i["cluster_slots_ok"]) == 16384
                    for i in infos
                )
                if ok and (not replicated or self._replicas_online()):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def _replicas_online(self) -> bool:
        for port in self.alive():
            info = self.node(port).info("replication")
            if info["role"] == "master" and not (
                info["connected_slaves"] >= 1 and info["slave0"]["state"] == "online"
            ):
                return False
        return True

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        slot = int(self.node(self.alive()[0]).cluster("keyslot", key))
        for entry in self.node(self.alive()[0]).cluster("slots"):
            start, end, primary = entry[0], entry[1], entry[2]
            if start <= slot <= end:
                return int(primary[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def wait_promoted(self, dead: int, key: str, timeout_s: float = 30.0) -> int:
        """Until a live node serves ``key``'s slot in place of the ``dead`` primary; its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                port = self.primary_of(key)
                if port != dead and port in self.alive():
                    self.wait_ok(max(deadline - time.monotonic(), 0.1))
                    return port
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("no replica took over")

    def kill(self, port: int) -> None:
        """SIGKILL a node: no shutdown, its clients cut mid-flight."""
        proc = self.processes[port]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
